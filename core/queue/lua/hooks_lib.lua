-- hooks_lib.lua: what happens when a job with hooks ends (its first final end: completed, failed
-- or canceled), in the same script as that end, so a SIGKILL or a race between two workers can
-- neither lose nor repeat it. Shared by finish, abandon, cancel, fail and delete; needs events_lib
-- and limits_lib first in "-- uses:".
--
-- A job has hooks when fk_hooks is set (one HGET per final end of any job tells). Its hooks:
--   callbacks    fk_on_success / fk_on_failure: JSON of a job to create (core/workflows/chains.py), its
--                payload finished here with the parent's result or error
--   dependents   fikiri:dependents:<id> SET: jobs waiting for this one (status scheduled, score
--                1e308, fk_wait_on "deps", fk_deps_left); released (enqueued_at -> now) when all their
--                dependencies completed, canceled with the reason when one did not (unless fk_dep_policy "run")
--   batch        fk_batch: the member's batch hash fikiri:batch:<b> (and its member list <b>:jobs,
--                expiring with it) counts completed / failed /
--                canceled; the member that completes the count creates the batch's callback job
-- Hooks run once: fk_hooks is deleted when they have run (a failed job retried by hand later does
-- not run them again).
--
-- Keys (from the layout L): rq:job:<id> HASH, fikiri:dependents:<id> SET, fikiri:batch:<b> HASH,
--   rq:scheduled:<q> / rq:canceled:<q> ZSETs, the priority lists, fikiri:wake:<q>, fikiri:stats:<q>,
--   fikiri:events STREAM; a created callback's rq:job:<id> and its queue's list, which is added to
--   rq:queues (L.queues: the callback's queue may have had no job yet).

-- Create the job described by `spec` (core/workflows/chains.py CallbackSpec) with its payload's JSON
-- completed by `tail`; nothing if that id already exists.
local function create_job(L, spec, tail, now_rq)
  if redis.call('EXISTS', spec.key) == 1 then return end
  local fields = spec.fields
  fields[#fields + 1] = 'data'
  fields[#fields + 1] = spec.prefix .. tail
  fields[#fields + 1] = 'created_at'
  fields[#fields + 1] = now_rq
  fields[#fields + 1] = 'enqueued_at'
  fields[#fields + 1] = now_rq
  redis.call('HSET', spec.key, unpack(fields))
  redis.call('RPUSH', spec.list, spec.id)
  redis.call('SADD', L.queues, spec.list)
  redis.call('HINCRBY', spec.counters, spec.task .. ':enqueued', 1)
  if redis.call('LLEN', spec.wake) == 0 then redis.call('LPUSH', spec.wake, '1') end
  emit(L.events, L.maxlen, spec.id, 'enqueued', spec.queue, spec.task, spec.user, spec.why)
end

-- The JSON data '["task",null,[],{...}]' of a job with `name` set to the JSON text `value`.
local function with_kwarg(data, name, value)
  if string.sub(data, -3) == '{}]' then
    return string.sub(data, 1, -4) .. '{' .. cjson.encode(name) .. ':' .. value .. '}]'
  end
  return string.sub(data, 1, -3) .. ',' .. cjson.encode(name) .. ':' .. value .. '}]'
end

local function release_dependent(L, kkey, kid, f, now_rq)
  redis.call('HSET', kkey, 'status', 'queued', 'enqueued_at', now_rq)  -- ready now: latency counts from here
  redis.call('HDEL', kkey, 'fk_wait_on', 'fk_reason', 'fk_deps_left')
  redis.call('ZREM', L.scheduled .. f.origin, kid)
  redis.call('RPUSH', prio_list(L, f.prio, f.origin), kid)
  local wake = L.wake .. f.origin
  if redis.call('LLEN', wake) == 0 then redis.call('LPUSH', wake, '1') end
  emit(L.events, L.maxlen, kid, 'pending', short_queue(f.origin), f.task, f.user, nil)
end

local function cancel_dependent(L, kkey, kid, f, reason, now_rq, now_s)
  local ttl = tonumber(f.ttl or '604800')
  redis.call('HSET', kkey, 'status', 'canceled', 'ended_at', now_rq, 'fk_error', reason)
  redis.call('HDEL', kkey, 'fk_wait_on', 'fk_reason', 'fk_deps_left')
  redis.call('EXPIRE', kkey, ttl)
  redis.call('ZREM', L.scheduled .. f.origin, kid)
  redis.call('ZADD', L.canceled .. f.origin, now_s + ttl, kid)
  redis.call('HINCRBY', L.stats .. short_queue(f.origin), (f.task or '?') .. ':canceled', 1)
  emit(L.events, L.maxlen, kid, 'canceled', short_queue(f.origin), f.task, f.user, reason)
end

local function batch_member_ended(L, batch, outcome, now_rq)
  local bkey = L.batch .. batch
  if redis.call('EXISTS', bkey) == 0 then return end
  redis.call('HINCRBY', bkey, outcome, 1)
  local b = redis.call('HMGET', bkey, 'total', 'completed', 'failed', 'canceled', 'on_complete', 'callback_id', 'ttl')
  local ok, bad, gone = tonumber(b[2] or '0'), tonumber(b[3] or '0'), tonumber(b[4] or '0')
  if ok + bad + gone < tonumber(b[1]) or b[6] then return end
  local callback = ''
  if b[5] then
    local spec = cjson.decode(b[5])
    -- DESIGN.md's words: batch_id, total, completed (= succeeded), failed; canceled = total - both
    create_job(L, spec, ',"total":' .. b[1] .. ',"completed":' .. ok .. ',"failed":' .. bad .. '}]', now_rq)
    callback = spec.id
  end
  redis.call('HSET', bkey, 'callback_id', callback, 'ended_at', now_rq)
  redis.call('EXPIRE', bkey, tonumber(b[7] or '86400'))
  redis.call('EXPIRE', bkey .. ':jobs', tonumber(b[7] or '86400'))
end

-- Job `id` ended (`outcome` completed | failed | canceled; `value` its result JSON or error text).
local function job_ended(L, id, outcome, value, now_rq, now_s)
  local stack = {{id, outcome, value}}
  local guard = 0
  while #stack > 0 and guard < 10000 do
    guard = guard + 1
    local top = table.remove(stack)
    local jid, out, val = top[1], top[2], top[3]
    local key = L.job .. jid
    local h = redis.call('HMGET', key, 'fk_hooks', 'fk_on_success', 'fk_on_failure', 'fk_batch')
    if h[1] then
      redis.call('HDEL', key, 'fk_hooks')
      if out == 'completed' and h[2] then
        create_job(L, cjson.decode(h[2]), ',"result":' .. val .. '}]', now_rq)
      elseif out ~= 'completed' and h[3] then
        local why = last_line(val) or out
        create_job(L, cjson.decode(h[3]), ',"outcome":' .. cjson.encode(out) .. ',"error":' .. cjson.encode(why) .. '}]',
                   now_rq)
      end
      if h[4] then batch_member_ended(L, h[4], out, now_rq) end
      local dkey = L.dependents .. jid
      local kids = redis.call('SMEMBERS', dkey)
      redis.call('DEL', dkey)
      for _, kid in ipairs(kids) do
        local kkey = L.job .. kid
        local g = redis.call('HMGET', kkey, 'status', 'fk_wait_on', 'fk_dep_policy', 'origin', 'fk_prio', 'fk_task',
                             'fk_user', 'fk_pass', 'failure_ttl', 'data')
        local f = {origin = g[4], prio = g[5], task = g[6], user = g[7], ttl = g[9]}
        if g[1] == 'scheduled' and g[2] == 'deps' and g[4] then
          if out == 'completed' or g[3] == 'run' then
            if g[8] and out == 'completed' and g[10] then
              redis.call('HSET', kkey, 'data', with_kwarg(g[10], g[8], val))
            end
            local left = redis.call('HINCRBY', kkey, 'fk_deps_left', -1)
            if left <= 0 then
              release_dependent(L, kkey, kid, f, now_rq)
            else
              redis.call('HSET', kkey, 'fk_reason', 'waiting for ' .. left .. ' more job(s) to end')
            end
          else
            local reason = 'dependency ' .. jid .. ' ' .. out
            local why = last_line(val)
            if why and why ~= out then reason = reason .. ': ' .. why end
            cancel_dependent(L, kkey, kid, f, string.sub(reason, 1, 500), now_rq, now_s)
            stack[#stack + 1] = {kid, 'canceled', reason}
          end
        end
      end
    end
  end
end
