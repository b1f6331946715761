-- uses: events_lib, limits_lib, hooks_lib, waiting_lib, groups_lib
-- cancel.lua: cancel a job that has not started, atomically with respect to claim.lua: either
-- the job is still in its queue list / schedule and is removed from it here (the cancel wins and
-- the job never runs), or it was claimed first and the current status is returned (a conflict).
--
--   KEYS[1] rq:job:<id>        HASH  status -> canceled, ended_at, fk_error (reason)
--   KEYS[2..4] fikiri:prio:high:<q>, rq:queue:<q>, fikiri:prio:low:<q>  LIST  removed from (its priority's)
--   KEYS[5] rq:scheduled:<q>   ZSET  removed from (a delayed job, or one parked by a limiter)
--   KEYS[6] rq:canceled:<q>    ZSET  added, score = expiry
--   KEYS[7] fikiri:stats:<q>   HASH  "<task>:canceled" + 1
--   a grouped job's waiting list and rotation (groups_lib, from the layout ARGV[9] and its origin)
--
--   fikiri:events              STREAM "canceled" (ARGV[6] key, ARGV[7] maxlen, ARGV[8] queue short name)
--   a job with hooks: the keys of hooks_lib (its on_failure callback, dependents canceled, batch count);
--   ARGV[9] the layout JSON
--
-- ARGV[1] id, ARGV[2] now (RQ time format), ARGV[3] expiry (epoch s), ARGV[4] ttl (s), ARGV[5] reason
-- Returns {1, previous status} when canceled, {0, current status or ''} when not.
local f = redis.call('HMGET', KEYS[1], 'status', 'fk_task', 'fk_prio', 'fk_user', 'fk_hooks', 'fk_group', 'origin')
local status = f[1]
if not take_off_waiting(ARGV[1], status, f[3], KEYS[2], KEYS[3], KEYS[4], KEYS[5]) then
  return {0, status or ''}
end
if f[6] and f[7] and status == 'queued' then group_unwait(cjson.decode(ARGV[9]), f[3], f[7], f[6], ARGV[1]) end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2], 'fk_error', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[7], (f[2] or '?') .. ':canceled', 1)
emit(ARGV[6], ARGV[7], ARGV[1], 'canceled', ARGV[8], f[2], f[4], ARGV[5])
if f[5] then job_ended(cjson.decode(ARGV[9]), ARGV[1], 'canceled', ARGV[5], ARGV[2], tonumber(ARGV[3]) - tonumber(ARGV[4])) end
return {1, status}
