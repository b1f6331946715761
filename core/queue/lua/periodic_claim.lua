-- periodic_claim.lua: claim a due periodic run by moving its entry to its next run time, only if
-- it is still due. Exactly one of several schedulers wins each run.
--
--   KEYS[1] rq:scheduler:scheduled_jobs   ZSET  rq-scheduler's periodic entries (score: next run)
--
-- ARGV[1] periodic id, ARGV[2] now (epoch s), ARGV[3] next run (epoch s), or '' for a one-off.
-- Returns 1 when this caller claimed the run, 0 when it was not due or already claimed.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1
