-- finish.lua: record the end of one attempt (success, final failure, or a retry) in one step.
-- The lease is the fence: if the job's in-flight entry is gone (the sweep judged its worker dead
-- and already requeued it), nothing is written and 0 is returned.
--
--   KEYS[1] rq:job:<id>          HASH  status, ended_at, fk_result / fk_error, fk_retries
--   KEYS[2] rq:wip:<q>           ZSET  in-flight entry removed
--   KEYS[3] target: rq:finished:<q> | rq:failed:<q> (ZSET, score = expiry)
--                 | rq:scheduled:<q> (ZSET, score = run time) | rq:queue:<q> (LIST)
--   KEYS[4] fikiri:stats:<q>     HASH  "<task>:<event>" counters
--   KEYS[5] fikiri:wake:<q>      LIST  token when a retry goes straight back to the queue
--   KEYS[6] fikiri:done:<id>     LIST  a token for wait_for() callers, when one was waiting ('' if none)
--
-- ARGV[1] in-flight member, ARGV[2] id, ARGV[3] mode: done | fail | retry | requeue,
-- ARGV[4] now (RQ time format), ARGV[5] score (expiry or run time), ARGV[6] ttl (s),
-- ARGV[7] counter field, ARGV[8] result (done) or error (otherwise), ARGV[9] retries so far,
-- ARGV[10] '1' to push at the head (requeue)
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local mode = ARGV[3]
if mode == 'done' then
  redis.call('HSET', KEYS[1], 'status', 'finished', 'ended_at', ARGV[4], 'fk_result', ARGV[8])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
elseif mode == 'fail' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', ARGV[4], 'fk_error', ARGV[8])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
elseif mode == 'retry' then
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'fk_error', ARGV[8], 'fk_retries', ARGV[9])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
else -- requeue: straight back to the queue
  redis.call('HSET', KEYS[1], 'status', 'queued', 'fk_error', ARGV[8], 'fk_retries', ARGV[9])
  if ARGV[10] == '1' then redis.call('LPUSH', KEYS[3], ARGV[2]) else redis.call('RPUSH', KEYS[3], ARGV[2]) end
  if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], '1') end
end
redis.call('HINCRBY', KEYS[4], ARGV[7], 1)
if KEYS[6] ~= '' and (mode == 'done' or mode == 'fail') then
  redis.call('LPUSH', KEYS[6], mode)
  redis.call('EXPIRE', KEYS[6], 60)
end
return 1
