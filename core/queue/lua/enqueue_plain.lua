-- uses: events_lib
-- enqueue_plain.lua: one job run created on one queue, for an enqueue with no id of its own, no
-- unique window, no dependencies, no group and no batch (nearly every enqueue): what enqueue.lua
-- does for such a job, from flat arguments instead of a JSON request, without the workflow
-- libraries (Redis time per call 36 -> about 22 us, same run; issue 22 item 5, docs/BENCHMARKS.md).
-- core/queue/lifecycle.py chooses between the two; tests/test_queue_enqueue.py checks both write the same.
--
-- Keys it touches (all in KEYS):
--   KEYS[1] rq:job:<id>          HASH    created: "data" ARGV[2] and the field pairs ARGV[11..]
--   KEYS[2] where it waits: rq:queue:<q> | fikiri:prio:high:<q> | fikiri:prio:low:<q> LIST (RPUSH),
--           or rq:scheduled:<q> ZSET (ZADD, score ARGV[3]) when it is delayed
--   KEYS[3] fikiri:stats:<q>     HASH    "<task>:enqueued" + 1 (ARGV[4])
--   KEYS[4] fikiri:wake:<q>      LIST    a wake-up token when it was empty (not for a delayed job)
--   KEYS[5] rq:queues            SET     gets KEYS[6], rq:queue:<q> (RQ's list of queues)
--   KEYS[6] rq:queue:<q>                 (only a member of KEYS[5] here, unless KEYS[2] is it)
--   KEYS[7] fikiri:events        STREAM  "enqueued" or "delayed" (events_lib; maxlen ARGV[7], 0 writes nothing)
--   KEYS[8] fikiri:users         SET     gets the user (only with a user)
--   KEYS[9] fikiri:user:<u>:jobs LIST    LPUSH id, LTRIM to ARGV[9], EXPIRE ARGV[10] (only with a user)
-- ARGV[1] id, ARGV[2] data (binary-safe: it may be zlib'd), ARGV[3] run time (epoch s; '' = now),
-- ARGV[4] counter field, ARGV[5] queue (short), ARGV[6] task, ARGV[7] events maxlen,
-- ARGV[8] user ('' = none), ARGV[9] user index size, ARGV[10] user index TTL (s), ARGV[11..] the hash's fields
-- Returns {id}, as enqueue.lua does for one job.
local id = ARGV[1]
redis.call('HSET', KEYS[1], 'data', ARGV[2], unpack(ARGV, 11))
local user = ARGV[8]
if user == '' then user = nil end
local event = 'enqueued'
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  event = 'delayed'
else
  redis.call('RPUSH', KEYS[2], id)
end
emit(KEYS[7], ARGV[7], id, event, ARGV[5], ARGV[6], user, nil)
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('SADD', KEYS[5], KEYS[6])
if user then
  redis.call('LPUSH', KEYS[9], id)
  redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[9]) - 1)
  redis.call('EXPIRE', KEYS[9], ARGV[10])
  redis.call('SADD', KEYS[8], user)
end
if event == 'enqueued' and redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('LPUSH', KEYS[4], '1')
end
return {id}
