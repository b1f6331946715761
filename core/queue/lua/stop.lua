-- uses: events_lib
-- stop.lua: ask the worker running a job to stop it. The job is marked (fk_stop, the reason: it
-- then ends canceled whatever way its attempt ends, in finish.lua or abandon.lua, and is never
-- retried) and its id is pushed on its worker's stop list, which the worker's heartbeat reads.
--
--   KEYS[1] rq:job:<id>   HASH  fk_stop
--   fikiri:stop:<worker>  LIST  built from ARGV[3] .. the job's worker_name; expires in 1 h
--
--   fikiri:events         STREAM "stopping" (ARGV[4] key, ARGV[5] maxlen)
--
-- ARGV[1] id, ARGV[2] reason ("stopped by <who>"), ARGV[3] stop-list key prefix.
-- Returns {1, 'started', worker} when marked, {0, current status or ''} when the job is not running.
local f = redis.call('HMGET', KEYS[1], 'status', 'worker_name', 'origin', 'fk_task', 'fk_user')
if f[1] ~= 'started' then return {0, f[1] or ''} end
redis.call('HSET', KEYS[1], 'fk_stop', ARGV[2])
if f[2] then
  local list = ARGV[3] .. f[2]
  redis.call('RPUSH', list, ARGV[1])
  redis.call('EXPIRE', list, 3600)
end
emit(ARGV[4], ARGV[5], ARGV[1], 'stopping', short_queue(f[3]), f[4], f[5], ARGV[2])
return {1, 'started', f[2] or ''}
