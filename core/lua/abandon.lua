-- abandon.lua: take back jobs whose worker is gone (lease expired) or is stopping at once.
-- Each one is an attempt that did not finish: with ARGV[4] = '1' it counts (retry_count + 1,
-- "<task>:abandoned" + 1, against max_retries); a cold shutdown passes '0' (the operator
-- stopped it, the job did nothing wrong) and it goes back to the head of its queue uncounted.
--
--   KEYS[1] rq:wip:<q>        ZSET  expired entries (score < ARGV[1]) or the members in ARGV[7..]
--   KEYS[2] rq:queue:<q>      LIST  requeued at the head
--   KEYS[3] rq:failed:<q>     ZSET  when no attempts are left
--   KEYS[4] fikiri:stats:<q>  HASH  "<task>:abandoned", "<task>:retried", "<task>:failed"
--   KEYS[5] fikiri:wake:<q>   LIST  one token when something was requeued
--   rq:job:<id>               HASH  built from ARGV[6] .. id
--
-- ARGV[1] now (epoch s), ARGV[2] now (RQ time format), ARGV[3] reason, ARGV[4] count the attempt,
-- ARGV[5] limit, ARGV[6] job key prefix, ARGV[7..] explicit members (none: take the expired ones)
-- Returns triples: id, task, outcome ("retrying" | "failed" | "requeued").
local members
if #ARGV >= 7 then
  members = {}
  for i = 7, #ARGV do members[#members + 1] = ARGV[i] end
else
  members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
end
local out = {}
local requeued = false
for _, member in ipairs(members) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local id = string.match(member, '^(.*):[^:]*$') or member
    local key = ARGV[6] .. id
    local f = redis.call('HMGET', key, 'fk_task', 'fk_max', 'fk_retries', 'failure_ttl', 'status')
    if f[5] == 'started' then
      local task = f[1] or '?'
      local retries = tonumber(f[3] or '0')
      local max = tonumber(f[2] or '0')
      local counted = ARGV[4] == '1'
      if counted then
        redis.call('HINCRBY', KEYS[4], task .. ':abandoned', 1)
        retries = retries + 1
      end
      if not counted or retries <= max then
        redis.call('HSET', key, 'status', 'queued', 'fk_retries', retries, 'fk_error', ARGV[3])
        redis.call('LPUSH', KEYS[2], id)
        if counted then redis.call('HINCRBY', KEYS[4], task .. ':retried', 1) end
        requeued = true
        out[#out + 1] = id; out[#out + 1] = task
        out[#out + 1] = counted and 'retrying' or 'requeued'
      else
        local ttl = tonumber(f[4] or '604800')
        redis.call('HSET', key, 'status', 'failed', 'fk_retries', retries - 1, 'fk_error', ARGV[3], 'ended_at', ARGV[2])
        redis.call('EXPIRE', key, ttl)
        redis.call('ZADD', KEYS[3], tonumber(ARGV[1]) + ttl, id)
        redis.call('HINCRBY', KEYS[4], task .. ':failed', 1)
        out[#out + 1] = id; out[#out + 1] = task; out[#out + 1] = 'failed'
      end
    end
  end
end
if requeued and redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], '1') end
return out
