-- uses: events_lib
-- promote.lua: move delayed jobs and retries whose time has come onto their queue.
-- (Jobs parked by a limiter sit in rq:scheduled with score +inf and are left to release_limits.)
--
--   KEYS[1] rq:scheduled:<q>   ZSET  due entries (score <= ARGV[1]) removed
--   KEYS[2] fikiri:prio:high:<q>, KEYS[3] rq:queue:<q>, KEYS[4] fikiri:prio:low:<q>
--                              LISTs pushed at the tail of the job's priority
--   KEYS[5] fikiri:wake:<q>    LIST  one wake-up token
--   KEYS[6] rq:queues          SET   KEYS[3] added when something moved (a queue whose delayed jobs
--                                    predate enqueue.lua listing it)
--   rq:job:<id>                HASH  status -> queued, enqueued_at -> now, fk_reason dropped (built from ARGV[3] .. id)
--
--   fikiri:events              STREAM "pending" per job moved (ARGV[4] key, ARGV[5] maxlen, ARGV[6] queue short name)
--
-- ARGV[1] now (epoch s), ARGV[2] limit, ARGV[3] job key prefix, ARGV[7] now (RQ time format: enqueued_at,
-- as RQ's scheduler sets it when a job becomes due). Returns how many moved.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local f = redis.call('HMGET', key, 'status', 'fk_prio', 'fk_reason', 'fk_task', 'fk_user')
  if f[1] == 'scheduled' then
    redis.call('HSET', key, 'status', 'queued', 'enqueued_at', ARGV[7])
    if f[3] then redis.call('HDEL', key, 'fk_reason') end  -- a Retry-After deferral's reason
    if f[2] == 'high' then
      redis.call('RPUSH', KEYS[2], id)
    elseif f[2] == 'low' then
      redis.call('RPUSH', KEYS[4], id)
    else
      redis.call('RPUSH', KEYS[3], id)
    end
    moved = moved + 1
    emit(ARGV[4], ARGV[5], id, 'pending', ARGV[6], f[4], f[5], nil)
  end
end
if moved > 0 then
  redis.call('SADD', KEYS[6], KEYS[3])
  if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], '1') end
end
return moved
