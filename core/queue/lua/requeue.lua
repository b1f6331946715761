-- uses: events_lib
-- requeue.lua: run a failed job once more (an operator's retry), keeping its id and history.
--
--   KEYS[1] rq:job:<id>        HASH  status -> queued, enqueued_at -> now, fk_manual + 1, no expiry while pending,
--                                    fk_expires dropped (an operator's retry runs, whatever the job's expires said)
--   KEYS[2] rq:failed:<q>      ZSET  removed from
--   KEYS[3] rq:queue:<q>       LIST  pushed at the tail
--   KEYS[4] fikiri:stats:<q>   HASH  "<task>:requeued" + 1
--   KEYS[5] fikiri:wake:<q>    LIST  wake-up token
--   KEYS[6] fikiri:prio:high:<q>, KEYS[7] fikiri:prio:low:<q>  LISTs, instead of KEYS[3] by the job's priority
--   KEYS[8] rq:queues          SET   KEYS[3] added (the job may have ended in the fallback, on a queue
--                                    with no job in Redis before)
--   rq:results:<id> is kept: RQ's requeue keeps a job's earlier results too
--
--   fikiri:events              STREAM "requeued" (ARGV[2] key, ARGV[3] maxlen, ARGV[4] queue short name)
--
-- ARGV[1] id, ARGV[5] now (RQ time format). Returns {1, 'failed'} when requeued, {0, current status or ''} when not failed.
local f = redis.call('HMGET', KEYS[1], 'status', 'fk_task', 'fk_prio', 'fk_user')
if f[1] ~= 'failed' then return {0, f[1] or ''} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', ARGV[5])
redis.call('HDEL', KEYS[1], 'ended_at', 'fk_expires')
redis.call('HINCRBY', KEYS[1], 'fk_manual', 1)
redis.call('PERSIST', KEYS[1])
local list = KEYS[3]
if f[3] == 'high' then list = KEYS[6] elseif f[3] == 'low' then list = KEYS[7] end
redis.call('RPUSH', list, ARGV[1])
redis.call('HINCRBY', KEYS[4], (f[2] or '?') .. ':requeued', 1)
emit(ARGV[2], ARGV[3], ARGV[1], 'requeued', ARGV[4], f[2], f[4], nil)
redis.call('SADD', KEYS[8], KEYS[3])
if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], '1') end
return {1, 'failed'}
