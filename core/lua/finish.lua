-- finish.lua: record the end of one or more attempts (success, final failure, or a retry) in one
-- step: a worker finishing several jobs at once commits them together (group commit).
-- Each job's lease is its fence: if its in-flight entry is gone (the sweep judged the worker dead
-- and already took the job back), nothing is written for it and its slot in the reply is 0.
--
-- Keys, named per entry by the caller (core/keys.py):
--   rq:job:<id>          HASH  status, ended_at, fk_result / fk_error, fk_retries
--   rq:wip:<q>           ZSET  in-flight entry removed
--   target: rq:finished:<q> | rq:failed:<q> (ZSET, score = expiry)
--         | rq:scheduled:<q> (ZSET, score = run time) | rq:queue:<q> (LIST, requeue)
--   fikiri:stats:<q>     HASH  "<task>:<event>" counters, one HINCRBY per distinct field
--   fikiri:wake:<q>      LIST  token when a retry goes straight back to the queue
--   fikiri:done:<id>     LIST  token for a wait_for() caller, when one was waiting
--
-- ARGV[1] JSON {"now": RQ time, "entries": [{"job", "wip", "target", "counters", "wake", "done",
--               "member", "id", "mode": done|fail|retry|requeue, "score", "ttl", "counter",
--               "value", "retries", "front"}]}
-- Returns a list with 1 (written) or 0 (lease lost) per entry.
local req = cjson.decode(ARGV[1])
local out = {}
local zadds = {}
local zorder = {}
local counts = {}
local corder = {}
local wakes = {}
for i, e in ipairs(req.entries) do
  if redis.call('ZREM', e.wip, e.member) == 0 then
    out[i] = 0
  else
    out[i] = 1
    local mode = e.mode
    if mode == 'done' then
      redis.call('HSET', e.job, 'status', 'finished', 'ended_at', req.now, 'fk_result', e.value)
      redis.call('EXPIRE', e.job, e.ttl)
    elseif mode == 'fail' then
      redis.call('HSET', e.job, 'status', 'failed', 'ended_at', req.now, 'fk_error', e.value)
      redis.call('EXPIRE', e.job, e.ttl)
    elseif mode == 'retry' then
      redis.call('HSET', e.job, 'status', 'scheduled', 'fk_error', e.value, 'fk_retries', e.retries)
    else
      redis.call('HSET', e.job, 'status', 'queued', 'fk_error', e.value, 'fk_retries', e.retries)
      if e.front then redis.call('LPUSH', e.target, e.id) else redis.call('RPUSH', e.target, e.id) end
      wakes[e.wake] = true
    end
    if mode ~= 'requeue' then
      if not zadds[e.target] then zadds[e.target] = {}; zorder[#zorder + 1] = e.target end
      local z = zadds[e.target]
      z[#z + 1] = e.score
      z[#z + 1] = e.id
    end
    local ck = e.counters .. '\0' .. e.counter
    if not counts[ck] then counts[ck] = {e.counters, e.counter, 0}; corder[#corder + 1] = ck end
    counts[ck][3] = counts[ck][3] + 1
    if e.done ~= cjson.null and e.done ~= nil and (mode == 'done' or mode == 'fail') then
      redis.call('LPUSH', e.done, mode)
      redis.call('EXPIRE', e.done, 60)
    end
  end
end
for _, target in ipairs(zorder) do redis.call('ZADD', target, unpack(zadds[target])) end
for _, ck in ipairs(corder) do
  local c = counts[ck]
  redis.call('HINCRBY', c[1], c[2], c[3])
end
for wake, _ in pairs(wakes) do
  if redis.call('LLEN', wake) == 0 then redis.call('LPUSH', wake, '1') end
end
return out
