-- uses: events_lib, limits_lib, hooks_lib, rq_lib, groups_lib
-- abandon.lua: take back jobs whose worker is gone (lease expired) or is stopping at once.
-- Each one is an attempt that did not finish. With ARGV[4] = '1' it is a stall (DESIGN.md "Crashes
-- are stalls"): fk_stalls + 1, "<task>:abandoned" + 1, an "abandoned" event, and the job goes back to
-- waiting without using a retry; once fk_stalls passes fk_mstalls (the task's max_stalls, absent = 1)
-- the job fails as a repeat crash (its stalls are its "abandoned" events). A shutdown passes '0' (the
-- operator stopped it, the job did nothing wrong): back to the head of its queue, uncounted.
-- A job someone asked to stop (fk_stop) ends canceled instead. Concurrency permits the job held
-- are returned (limits_lib), so the next job waiting for one starts now.
--
--   KEYS[1] rq:wip:<q>        ZSET  expired entries (score < ARGV[1]) or the members in ARGV[9..]
--   KEYS[2] rq:failed:<q>     ZSET  a repeat crash (more stalls than max_stalls)
--   KEYS[3] fikiri:stats:<q>  HASH  "<task>:abandoned", "<task>:stalled" (back to waiting), "<task>:failed",
--                                   "<task>:canceled"
--   KEYS[4] fikiri:wake:<q>   LIST  one token when something was requeued
--   KEYS[5] rq:canceled:<q>   ZSET  a stopped job
--   rq:job:<id>               HASH  built from the layout: status, fk_stalls, fk_error, fk_lost (the member taken
--                             back: its stale holder's heartbeat learns it, lease.lua); fk_mstalls read, and
--                             fk_yield (a member its worker yielded at a shutdown deadline: requeued uncounted),
--                             fk_claimed '1' (claimed ahead, never begun: requeued uncounted, the flag set to '0')
--   fikiri:grun:<q>           HASH  a job with fk_group and fk_gconc: its group's running count - 1 (groups_lib)
--   rq:results:<id>           STREAM built from the layout (L.results): RQ's result record of a job this
--                             ends (rq_lib): failed with the reason, or stopped with the stop's reason
--   the job's priority list (LIST, requeued at the head) and the limiter keys of limits_lib
--   fikiri:events             STREAM "abandoned" (a stall), then "requeued" | "failed" | "canceled"
--                             (key and maxlen from the layout: L.events, L.maxlen)
--   a final end of a job with hooks: the keys of hooks_lib (callbacks, dependents, batch)
--
-- ARGV[1] now (epoch s), ARGV[2] now (RQ time format), ARGV[3] reason, ARGV[4] count the attempt,
-- ARGV[5] limit, ARGV[6] layout JSON, ARGV[7] lease (s), ARGV[8] queue full name,
-- ARGV[9] unused (was the reason's exc_string: a repeat crash's is built here, rq_lib rq_exc),
-- ARGV[10..] explicit members (none: take the expired ones)
-- Returns triples: id, task, outcome ("stalled": back to waiting after a stall | "failed" | "requeued" | "canceled").
local L = cjson.decode(ARGV[6])
local members
if #ARGV >= 10 then
  members = {}
  for i = 10, #ARGV do members[#members + 1] = ARGV[i] end
else
  members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
end
local out = {}
local requeued = false
for _, member in ipairs(members) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local id = string.match(member, '^(.*):[^:]*$') or member
    local key = L.job .. id
    local f = redis.call('HMGET', key, 'fk_task', 'fk_stalls', 'fk_mstalls', 'failure_ttl', 'status', 'fk_prio',
                         'fk_stop', 'fk_limits', 'fk_user', 'fk_hooks', 'fk_yield', 'fk_group', 'fk_gconc',
                         'fk_claimed')
    if f[12] and f[13] then group_release(L.grun .. ARGV[8], f[12]) end  -- its claim counted it running
    local q = short_queue(ARGV[8])
    if f[5] == 'started' then
      redis.call('HSET', key, 'fk_lost', member)  -- this attempt's heartbeat learns it was taken back (lease.lua)
      local task = f[1] or '?'
      local stalls = tonumber(f[2] or '0')
      local max_stalls = tonumber(f[3] or '1')
      local ttl = tonumber(f[4] or '604800')
      -- a worker that exited past its shutdown deadline yielded this attempt (lifecycle.yield_leases): not a stall
      -- nor is a job claimed ahead that never began (fk_claimed): no attempt of it was lost
      local counted = ARGV[4] == '1' and f[11] ~= member and f[14] ~= '1'
      if f[14] == '1' then redis.call('HSET', key, 'fk_claimed', '0') end
      if counted then
        redis.call('HINCRBY', KEYS[3], task .. ':abandoned', 1)
        stalls = stalls + 1
        redis.call('HSET', key, 'fk_stalls', stalls)
        emit(L.events, L.maxlen, id, 'abandoned', q, task, f[9], 'stall ' .. stalls .. ' of ' .. max_stalls .. ' allowed: ' .. ARGV[3])
      end
      -- the attempt ends the job: canceled (someone stopped it) or failed (a repeat crash)
      local function end_job(outcome, status, registry, error, kind, exc)
        redis.call('HSET', key, 'status', status, 'fk_error', error, 'ended_at', ARGV[2])
        redis.call('EXPIRE', key, ttl)
        rq_result(L.results .. id, ttl, kind, '', nil, exc)
        redis.call('ZADD', registry, tonumber(ARGV[1]) + ttl, id)
        redis.call('HINCRBY', KEYS[3], task .. ':' .. outcome, 1)
        out[#out + 1] = id; out[#out + 1] = task; out[#out + 1] = outcome
        emit(L.events, L.maxlen, id, outcome, q, task, f[9], error)
        if f[10] then job_ended(L, id, outcome, error, ARGV[2], tonumber(ARGV[1])) end
      end
      if f[7] then
        end_job('canceled', 'canceled', KEYS[5], f[7], 3, rq_exc(f[7]))
      elseif not counted or stalls <= max_stalls then
        redis.call('HSET', key, 'status', 'queued', 'fk_error', ARGV[3])
        redis.call('LPUSH', prio_list(L, f[6], ARGV[8]), id)
        if counted then redis.call('HINCRBY', KEYS[3], task .. ':stalled', 1) end
        requeued = true
        out[#out + 1] = id; out[#out + 1] = task
        out[#out + 1] = counted and 'stalled' or 'requeued'
        emit(L.events, L.maxlen, id, 'requeued', q, task, f[9], ARGV[3])
      else
        local error = 'repeat crash: its attempt was lost ' .. stalls .. ' times (max_stalls=' .. max_stalls ..
                      '; each stall is an "abandoned" event in its history); last: ' .. ARGV[3]
        end_job('failed', 'failed', KEYS[2], error, 2, rq_exc(error))
      end
      if f[8] then
        local held = {}
        for _, lim in ipairs(cjson.decode(f[8])) do
          if lim.c and not lim.p then held[#held + 1] = lim.n end
        end
        return_permits(L, held, member, tonumber(ARGV[7]))
      end
    end
  end
end
if requeued and redis.call('LLEN', KEYS[4]) == 0 then redis.call('LPUSH', KEYS[4], '1') end
return out
