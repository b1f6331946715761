-- uses: events_lib, rq_lib
-- import.lua: write the outcomes of jobs that ran in the fallback into Redis (the hand-back), so
-- their status stays readable with the normal TTLs. A job id already in Redis is left alone, so
-- a hand-back repeated after a crash changes nothing.
--
-- Keys, named per entry by the caller (core/platform/keys.py):
--   rq:job:<id>                HASH  the ended job (RQ's fields plus ours), expiring with its TTL
--   rq:finished|failed|canceled:<q>  ZSET  score = expiry
--   fikiri:stats:<q>           HASH  "<task>:enqueued" and "<task>:<completed|failed|canceled|expired|retried>"
--   fikiri:user:<u>:jobs       LIST  the user's index (trimmed, expiring), fikiri:users SET
--   rq:queues                  SET   the job's queue key (its queue may have had no job in Redis yet)
--   rq:results:<id>            STREAM RQ's result record of a completed or failed job (rq_lib), expiring with it
--
--   fikiri:events              STREAM the outcome ("completed" | "failed" | "canceled" | "expired", detail "ran in the
--                                     fallback"; an expired job is stored as "canceled" plus fk_expired)
--
-- ARGV[1] JSON {"events": key, "maxlen": n, "users": key, "user_size": n, "user_ttl": s, "queues": rq:queues,
--               "entries": [{"key", "registry", "counters", "fields": [k, v, ...], "id", "ttl", "expiry", "event", "task",
--               "retries", "user_key", "user", "queue", "queue_key": rq:queue:<q>, "results": rq:results:<id>,
--               "rq_type": 1|2|null, "rv": return_value|null, "rx": exc_string|null, "detail": event detail|null}]}
-- Returns how many were written.
local req = cjson.decode(ARGV[1])
local written = 0
for _, e in ipairs(req.entries) do
  if redis.call('EXISTS', e.key) == 0 then
    redis.call('HSET', e.key, unpack(e.fields))
    redis.call('EXPIRE', e.key, e.ttl)
    redis.call('ZADD', e.registry, e.expiry, e.id)
    redis.call('SADD', req.queues, e.queue_key)
    if e.rq_type ~= nil and e.rq_type ~= cjson.null then rq_result(e.results, e.ttl, e.rq_type, '', e.rv, e.rx) end
    redis.call('HINCRBY', e.counters, e.task .. ':enqueued', 1)
    redis.call('HINCRBY', e.counters, e.task .. ':' .. e.event, 1)
    if e.retries > 0 then redis.call('HINCRBY', e.counters, e.task .. ':retried', e.retries) end
    if e.user_key ~= cjson.null and e.user_key ~= nil then
      redis.call('LPUSH', e.user_key, e.id)
      redis.call('LTRIM', e.user_key, 0, req.user_size - 1)
      redis.call('EXPIRE', e.user_key, req.user_ttl)
      redis.call('SADD', req.users, e.user)
    end
    written = written + 1
    local detail = 'ran in the fallback'
    if e.detail ~= nil and e.detail ~= cjson.null then detail = e.detail end  -- an expired job never ran
    emit(req.events, req.maxlen, e.id, e.event, e.queue, e.task, e.user, detail)
  end
end
return written
