-- uses: events_lib, limits_lib, hooks_lib, rq_lib, groups_lib
-- finish.lua: record the end of one or more attempts (success, final failure, a retry, a
-- Retry-After deferral, or a stop) in one step: a worker finishing several jobs at once commits
-- them together (group commit).
-- Each job's lease is its fence: if its in-flight entry is gone (the sweep judged the worker dead
-- and already took the job back), nothing is written for it and its slot in the reply is 0.
-- A job someone asked to stop (fk_stop) that did not complete ends canceled, never retried.
--
-- Keys, named per entry by the caller (core/platform/keys.py):
--   rq:job:<id>          HASH  status, ended_at, fk_result / fk_error, fk_retries, fk_deferrals, fk_reason
--   rq:wip:<q>           ZSET  in-flight entry removed
--   fikiri:grun:<q>      HASH  a job counted in its group ("group", key "grun"; claim counts jobs with fk_gconc): - 1
--   target: rq:finished:<q> | rq:failed:<q> | rq:canceled:<q> (ZSET, score = expiry)
--         | rq:scheduled:<q> (ZSET, score = run time) | the job's priority list (LIST, requeue)
--   fikiri:stats:<q>     HASH  "<task>:<event>" counters, one HINCRBY per distinct field
--   fikiri:wake:<q>      LIST  token when a retry goes straight back to the queue
--   with "held" permits: the limiter keys of limits_lib (permit returned, next parked job released)
--   rq:results:<id>      STREAM RQ's result record of a final end (rq_lib): successful with the result,
--                        failed with the error, stopped with the reason; expires with the job
--   fikiri:events        STREAM completed | failed | retrying | deferred | canceled (events_lib)
--   a final end of a job with hooks: the keys of hooks_lib (callbacks, dependents, batch)
--
-- ARGV[1] JSON {"now": RQ time, "now_s": epoch s, "layout": {...} (when permits are held), "lease": s,
--   "events": stream key, "maxlen": n, "layout_json": the layout (decoded when permits or hooks need it),
--   "worker": worker name (RQ's result record),
--   "entries": [{"job", "wip", "target", "canceled", "counters", "wake", "results", "member", "id", "task",
--   "mode": done|fail|retry|requeue|defer|stop, "score", "ttl", "fttl", "counter", "value",
--   "reason" (defer: the Retry-After's; retry: the wait the job's retry policy chose, e.g. "retry 1 of 3 in 1.2s ..."),
--   "retries", "deferrals", "held": [limiter names],
--   "rv": the result record's return_value (done), "rx": its exc_string (fail, stop)}]}
-- "starts" (optional): [{"job", "wip", "member", "id", "q", "task", "user", "at"}] jobs claimed ahead (claim.lua
--   fk_claimed '1') that began since: started_at, fk_claimed '0', a "started" event; skipped if the lease is gone
--   or the start is written already (fk_claimed '0': a prefork worker writes the start of its child's long job).
--   An entry's "began" (RQ time) does the same for a job claimed ahead whose start and end come in one call.
-- "releases" (optional): [{"job", "wip", "member", "id", "list", "wake", "group", "grun", "held"}] jobs claimed
--   ahead that a stopping worker hands back: out of rq:wip, status queued, at the head of "list", a wake token.
-- Returns, per entry, the mode written (a failure of a job being stopped becomes 'stop') or 0 (lease lost).
local EVENTS = {done = 'completed', fail = 'failed', retry = 'retrying', requeue = 'retrying', defer = 'deferred',
                stop = 'canceled'}
local FINAL = {done = 'completed', fail = 'failed', stop = 'canceled'}
local req = cjson.decode(ARGV[1])
local L = nil
local out = {}
local zadds = {}
local zorder = {}
local counts = {}
local corder = {}
local wakes = {}
-- jobs claimed ahead that a slot took since the last call: their start, fenced by their lease
-- (written once: a prefork worker writes the start of a long job its child runs, core/worker/direct.py,
-- and the child sends it again with its end)
for _, st in ipairs(req.starts or {}) do
  if redis.call('ZSCORE', st.wip, st.member) and redis.call('HGET', st.job, 'fk_claimed') == '1' then
    redis.call('HSET', st.job, 'started_at', st.at, 'fk_claimed', '0')
    emit(req.events, req.maxlen, st.id, 'started', st.q, st.task, st.user, nil)
  end
end
-- the end's HSET, with the start of a job claimed ahead whose start and end come in this call
local function hset_end(e, ...)
  if e.began ~= nil and e.began ~= cjson.null and e.began_now then
    redis.call('HSET', e.job, 'started_at', e.began, 'fk_claimed', '0', ...)
  else
    redis.call('HSET', e.job, ...)
  end
end
for i, e in ipairs(req.entries) do
  if redis.call('ZREM', e.wip, e.member) == 0 then
    out[i] = 0
  else
    if e.began ~= nil and e.began ~= cjson.null and redis.call('HGET', e.job, 'fk_claimed') == '1' then
      e.began_now = true
      -- claimed ahead, begun and ended since the last call: its start rides on this end (the lease is the
      -- fence; started_at goes into the end's HSET, hset_end)
      emit(req.events, req.maxlen, e.id, 'started', e.q, e.task, e.user, nil)
    end
    if e.group ~= nil and e.group ~= cjson.null then group_release(e.grun, e.group) end
    local mode, target, score, counter, value = e.mode, e.target, e.score, e.counter, e.value
    if mode ~= 'done' and mode ~= 'stop' then
      local stop = redis.call('HGET', e.job, 'fk_stop')
      if stop then mode, value = 'stop', stop end
    end
    out[i] = mode
    if mode == 'stop' then
      target, score, counter = e.canceled, req.now_s + e.fttl, e.task .. ':canceled'
      hset_end(e, 'status', 'canceled', 'ended_at', req.now, 'fk_error', value)
      redis.call('EXPIRE', e.job, e.fttl)
      local exc = e.rx
      if e.mode ~= 'stop' then exc = rq_exc(value) end  -- stopped meanwhile: a reason only this script read
      rq_result(e.results, e.fttl, 3, req.worker, nil, exc)
    elseif mode == 'done' then
      hset_end(e, 'status', 'finished', 'ended_at', req.now, 'fk_result', value)
      redis.call('EXPIRE', e.job, e.ttl)
      rq_result(e.results, e.ttl, 1, req.worker, e.rv, nil)
    elseif mode == 'fail' then
      hset_end(e, 'status', 'failed', 'ended_at', req.now, 'fk_error', value)
      redis.call('EXPIRE', e.job, e.ttl)
      rq_result(e.results, e.ttl, 2, req.worker, nil, e.rx)
    elseif mode == 'retry' then
      if e.reason ~= nil and e.reason ~= cjson.null then  -- the wait its retry policy chose (dropped by promote)
        hset_end(e, 'status', 'scheduled', 'fk_error', value, 'fk_retries', e.retries, 'fk_reason', e.reason)
      else
        hset_end(e, 'status', 'scheduled', 'fk_error', value, 'fk_retries', e.retries)
      end
    elseif mode == 'defer' then
      hset_end(e, 'status', 'scheduled', 'fk_reason', e.reason, 'fk_deferrals', e.deferrals)
    else
      hset_end(e, 'status', 'queued', 'fk_error', value, 'fk_retries', e.retries)
      redis.call('RPUSH', target, e.id)
      wakes[e.wake] = true
    end
    if mode ~= 'requeue' then
      if not zadds[target] then zadds[target] = {}; zorder[#zorder + 1] = target end
      local z = zadds[target]
      z[#z + 1] = score
      z[#z + 1] = e.id
    end
    local ck = e.counters .. '\0' .. counter
    if not counts[ck] then counts[ck] = {e.counters, counter, 0}; corder[#corder + 1] = ck end
    counts[ck][3] = counts[ck][3] + 1
    if e.held ~= nil and e.held ~= cjson.null then
      L = L or cjson.decode(req.layout_json)
      return_permits(L, e.held, e.member, req.lease)
    end
    if FINAL[mode] and redis.call('HGET', e.job, 'fk_hooks') then  -- callbacks, dependents, batch (hooks_lib)
      L = L or cjson.decode(req.layout_json)
      job_ended(L, e.id, FINAL[mode], value, req.now, req.now_s)
    end
    local event = EVENTS[mode]
    local detail = nil
    if mode == 'defer' then detail = e.reason elseif mode ~= 'done' then detail = last_line(value) end
    emit(req.events, req.maxlen, e.id, event, e.q, e.task, e.user, detail)
  end
end
for _, target in ipairs(zorder) do redis.call('ZADD', target, unpack(zadds[target])) end
for _, ck in ipairs(corder) do
  local c = counts[ck]
  redis.call('HINCRBY', c[1], c[2], c[3])
end
-- a stopping worker hands back the jobs it claimed ahead and never started: to the head of their
-- priority list (claim sorts a grouped one into its group), neither a retry nor a stall
local releases = req.releases or {}
for i = #releases, 1, -1 do
  local r = releases[i]
  if redis.call('ZREM', r.wip, r.member) == 1 then
    redis.call('HSET', r.job, 'status', 'queued', 'fk_claimed', '0')
    redis.call('LPUSH', r.list, r.id)
    if r.group ~= nil and r.group ~= cjson.null then group_release(r.grun, r.group) end
    if r.held ~= nil and r.held ~= cjson.null then
      L = L or cjson.decode(req.layout_json)
      return_permits(L, r.held, r.member, req.lease)
    end
    wakes[r.wake] = true
  end
end
for wake, _ in pairs(wakes) do
  if redis.call('LLEN', wake) == 0 then redis.call('LPUSH', wake, '1') end
end
return out
