-- uses: events_lib, limits_lib, hooks_lib, rq_lib, waiting_lib, groups_lib
-- fail.lua: an operator fails a job that has not started (fail_job), with or without a retry.
--
--   KEYS[1] rq:job:<id>        HASH  status, fk_error, fk_retries, ended_at, fk_reason (a retry's wait)
--   KEYS[2] rq:queue:<q>       LIST  removed from
--   KEYS[3] rq:scheduled:<q>   ZSET  removed from; the retry is added back with its run time
--   KEYS[4] rq:failed:<q>      ZSET  added when it ends failed (score = expiry)
--   KEYS[5] fikiri:stats:<q>   HASH  "<task>:retried" or "<task>:failed" + 1
--   KEYS[6] fikiri:prio:high:<q>, KEYS[7] fikiri:prio:low:<q>  LISTs, like KEYS[2], by the job's priority
--   KEYS[8] rq:results:<id>    STREAM RQ's result record when it ends failed (rq_lib), expiring with the job
--   a grouped job's waiting list and rotation (groups_lib, from the layout ARGV[10] and its origin)
--
-- ARGV[1] id, ARGV[2] error, ARGV[3] '1' to retry if attempts are left, ARGV[4] now (epoch s),
-- ARGV[5] now (RQ time format), ARGV[6] retry run time for each retry number as a JSON list
-- ARGV[7] events stream key, ARGV[8] its maxlen, ARGV[9] queue short name ("retrying" or "failed"),
-- ARGV[10] the layout JSON (a final failure of a job with hooks: hooks_lib),
-- ARGV[11] the error as the result record's exc_string (core/queue/rq_compat.py result_exc_string),
-- ARGV[12] the reason shown while each retry waits, as a JSON list like ARGV[6] (the job's retry policy)
-- Returns {1, 'retrying' | 'failed'} or {0, current status or ''}.
local f = redis.call('HMGET', KEYS[1], 'status', 'fk_task', 'fk_max', 'fk_retries', 'failure_ttl', 'fk_prio', 'fk_user',
                      'fk_hooks', 'fk_group', 'origin')
local status = f[1]
if not take_off_waiting(ARGV[1], status, f[6], KEYS[6], KEYS[2], KEYS[7], KEYS[3]) then
  return {0, status or ''}
end
if f[9] and f[10] and status == 'queued' then group_unwait(cjson.decode(ARGV[10]), f[6], f[10], f[9], ARGV[1]) end
local task = f[2] or '?'
local retries = tonumber(f[4] or '0')
local max = tonumber(f[3] or '0')
if ARGV[3] == '1' and retries < max then
  local delays = cjson.decode(ARGV[6])
  local reasons = cjson.decode(ARGV[12])
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'fk_error', ARGV[2], 'fk_retries', retries + 1,
             'fk_reason', reasons[retries + 1])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + delays[retries + 1], ARGV[1])
  redis.call('HINCRBY', KEYS[5], task .. ':retried', 1)
  emit(ARGV[7], ARGV[8], ARGV[1], 'retrying', ARGV[9], task, f[7], last_line(ARGV[2]))
  return {1, 'retrying'}
end
local ttl = tonumber(f[5] or '604800')
redis.call('HSET', KEYS[1], 'status', 'failed', 'fk_error', ARGV[2], 'ended_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[4], tonumber(ARGV[4]) + ttl, ARGV[1])
rq_result(KEYS[8], ttl, 2, '', nil, ARGV[11])
redis.call('HINCRBY', KEYS[5], task .. ':failed', 1)
emit(ARGV[7], ARGV[8], ARGV[1], 'failed', ARGV[9], task, f[7], last_line(ARGV[2]))
if f[8] then job_ended(cjson.decode(ARGV[10]), ARGV[1], 'failed', ARGV[2], ARGV[5], tonumber(ARGV[4])) end
return {1, 'failed'}
