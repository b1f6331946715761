-- uses: events_lib, limits_lib, hooks_lib, groups_lib
-- delete.lua: delete a job that is not running, from wherever it is.
--
--   KEYS[1] rq:job:<id>   KEYS[2] rq:results:<id>   KEYS[3] rq:queue:<q>   KEYS[4] rq:scheduled:<q>
--   KEYS[5] rq:finished:<q>   KEYS[6] rq:failed:<q>   KEYS[7] rq:canceled:<q>
--   KEYS[8] fikiri:stats:<q>  HASH "<task>:deleted" + 1
--   KEYS[9] fikiri:prio:high:<q>   KEYS[10] fikiri:prio:low:<q>   (LISTs, like KEYS[3])
--   a grouped job's waiting list and rotation (groups_lib, from the layout ARGV[5] and its origin)
--
-- fikiri:events STREAM "deleted" (ARGV[2] key, ARGV[3] maxlen, ARGV[4] queue short name)
-- a job that had not ended and has hooks ends "canceled" first (hooks_lib: dependents canceled,
-- on_failure, batch count); ARGV[5] the layout JSON, ARGV[6] now (RQ time), ARGV[7] now (epoch s)
-- ARGV[1] id; ARGV[8] (optional) the only status to delete from: a job in another one is left
-- alone (bulk deletes of failed jobs skip one retried meanwhile). Returns {1, previous status}
-- when deleted, {0, 'started'} for a running job, {0, status} for a job not in ARGV[8]'s status,
-- {0, ''} when there is no such job.
local f = redis.call('HMGET', KEYS[1], 'status', 'fk_task', 'fk_user', 'fk_hooks', 'fk_group', 'origin', 'fk_prio')
if not f[1] then return {0, ''} end
if ARGV[8] and ARGV[8] ~= '' and f[1] ~= ARGV[8] then return {0, f[1]} end
if f[1] == 'started' then return {0, 'started'} end
if f[4] and (f[1] == 'queued' or f[1] == 'scheduled' or f[1] == 'deferred') then
  job_ended(cjson.decode(ARGV[5]), ARGV[1], 'canceled', 'deleted', ARGV[6], tonumber(ARGV[7]))
end
if f[5] and f[6] and f[1] == 'queued' then group_unwait(cjson.decode(ARGV[5]), f[7], f[6], f[5], ARGV[1]) end
redis.call('LREM', KEYS[3], 0, ARGV[1])
redis.call('LREM', KEYS[9], 0, ARGV[1])
redis.call('LREM', KEYS[10], 0, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HINCRBY', KEYS[8], (f[2] or '?') .. ':deleted', 1)
emit(ARGV[2], ARGV[3], ARGV[1], 'deleted', ARGV[4], f[2], f[3], nil)
return {1, f[1]}
