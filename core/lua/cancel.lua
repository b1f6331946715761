-- cancel.lua: cancel a job that has not started, atomically with respect to claim.lua: either
-- the job is still in its queue list / schedule and is removed from it here (the cancel wins and
-- the job never runs), or it was claimed first and the current status is returned (a conflict).
--
--   KEYS[1] rq:job:<id>        HASH  status -> canceled, ended_at, fk_error (reason)
--   KEYS[2] rq:queue:<q>       LIST  removed from
--   KEYS[3] rq:scheduled:<q>   ZSET  removed from
--   KEYS[4] rq:canceled:<q>    ZSET  added, score = expiry
--   KEYS[5] fikiri:stats:<q>   HASH  "<task>:canceled" + 1
--
-- ARGV[1] id, ARGV[2] now (RQ time format), ARGV[3] expiry (epoch s), ARGV[4] ttl (s), ARGV[5] reason
-- Returns {1, previous status} when canceled, {0, current status or ''} when not.
local f = redis.call('HMGET', KEYS[1], 'status', 'fk_task')
local status = f[1]
if status == 'queued' then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
elseif status == 'scheduled' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  return {0, status or ''}
end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2], 'fk_error', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[5], (f[2] or '?') .. ':canceled', 1)
return {1, status}
