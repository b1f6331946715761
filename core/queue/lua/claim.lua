-- uses: events_lib, limits_lib, hooks_lib, groups_lib
-- claim.lua: move up to N pending jobs from a worker's queues (in queue order, and on each queue
-- high, normal, then low priority) into each queue's in-flight registry, in one atomic step:
-- there is no instant, under SIGKILL or a Redis restart with AOF, when a claimed job is in
-- neither place. Paused queues are skipped. A job over one of its limits (its own fk_limits, or
-- the queue's) is parked instead (limits_lib): other jobs behind it are claimed in its place.
-- A job whose fk_expires (epoch s) has passed by the claiming worker's clock (ARGV[2] - ARGV[7]) is
-- never started: it ends here as expired (RQ's status "canceled" plus fk_expired, so RQ's tools
-- read it), before any limit is asked, so it takes no slot. This holds for pending jobs, delayed
-- ones once promoted, retries, and jobs a limiter parked (when released).
-- Job groups (groups_lib): on each priority, while no group has jobs waiting (its rotation key does
-- not exist) the list is popped in batches exactly as before; a grouped id met there (a retry, an
-- abandoned or released job) is moved to its group's list. Once a rotation exists, each job is taken
-- from the rotation's lowest-score member (a group's list, or UNGROUPED: the priority list), which
-- then gets 1/weight added: round-robin across groups, weighted. A paused group, and a group whose
-- running count is at the head job's fk_gconc (group_concurrency), is skipped, not parked. A skipped
-- member is raised to the next score served, so a group held for a while gets no burst of turns after;
-- when more than 64 are skipped in a row (or nothing else could be served) they are moved one turn
-- behind the end of the rotation, so any number of held groups never hide the ones behind them. Only jobs
-- with fk_gconc are counted in fikiri:grun:<q> (the limit needs the count; others cost nothing more).
--
-- Keys (built from ARGV by the caller from core/platform/keys.py; one group per queue, in order):
--   fikiri:prio:high:<q>, rq:queue:<q>, fikiri:prio:low:<q>  LISTs popped from the head
--   rq:wip:<q>     ZSET  member "<id>:<claim>", score = lease expiry
--   fikiri:wake:<q> LIST with ARGV[6] = '1' (the worker just woke up), a token is left for the next
--                        idle worker when the batch came back full: a burst wakes workers one by one
--   fikiri:paused  SET   (ARGV[9]) queues no one claims from
--   rq:job:<id>    HASH  status -> started, started_at, worker_name, fk_claim (fk_claimed: claimed ahead)
--   the group keys of groups_lib (built from the layout ARGV[8]): a group's waiting list, the rotation
--   (ARGV), the running count (+1 per grouped job claimed), weights and paused groups (read)
--   and the limiter keys of limits_lib, with a parked job's rq:scheduled:<q> entry
--   fikiri:events  STREAM "started" per job claimed, "parked" (detail: the reason) per job parked,
--                        "expired" (detail: the reason) per job ended expired
--   an expired job (keys built from the layout ARGV[8]): rq:job:<id> HASH status -> canceled, ended_at,
--   fk_error (the reason), fk_expired, EXPIRE failure_ttl; rq:canceled:<q> ZSET (score = expiry);
--   fikiri:stats:<q> HASH "<task>:expired" + 1; its hooks (hooks_lib: callbacks, dependents, batch, as
--   a cancel); released by a limiter: fikiri:limits:due ZSET, its limiters with a backlog made due now
--
-- ARGV[1] N (max jobs) or "N/S": the first S claimed start now (status started, started_at, a "started"
--         event), the rest are claimed ahead for the worker's prefetch (status started for RQ's tools, plus
--         fk_claimed '1': our API shows them pending; finish.lua's "starts" write their start, and '0', when they
--         begin),
-- ARGV[2] lease expiry (epoch s; '' = Redis' clock + the lease), ARGV[3] started_at (RQ time format; '' with ARGV[2]),
-- ARGV[4] worker name, ARGV[5] claim id prefix, ARGV[6] chain wake-ups, ARGV[7] lease (s),
-- ARGV[8] layout JSON (decoded only when a limit applies), ARGV[9] paused set key, ARGV[10] job key prefix,
-- ARGV[11] events stream key, ARGV[12] its maxlen,
-- ARGV[13..] groups of 10: full queue name, high list, normal list, low list, wip key, wake key,
--            the queue's own rate limit (JSON, '' for none), the high, normal and low rotation keys.
-- Returns {jobs, due, expired}: jobs is a flat list, per job id, claim, queue index, then the 15 fields below
-- (data .. fk_deferrals), fk_retry and fk_group (false unless the job carries fk_gconc); due is the seconds until a limiter touched here lets its next parked job run
-- (false if none), so the claiming worker runs release_limits right then; expired is a flat list,
-- per job ended expired, id, task, queue index.
local GROUP = 10
local PRIO = {'high', 'normal', 'low'}
local MAX_SKIP = 64
local n = tonumber(string.match(ARGV[1], '^%d+'))
local nstart = tonumber(string.match(ARGV[1], '/(%d+)$') or n)  -- the first nstart claimed start now
local lease = tonumber(ARGV[7])
local expiry, started_at = ARGV[2], ARGV[3]
local expired = {}

-- "2026-12-07T04:30:00Z" of epoch seconds (days to civil date: H. Hinnant's algorithm)
local function iso_utc(t)
  local s = math.floor(t)
  local z = math.floor(s / 86400) + 719468
  local rem = s % 86400
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', y, m, d, math.floor(rem / 3600), math.floor(rem % 3600 / 60),
                       rem % 60)
end
if expiry == '' then
  -- a claim sent behind a blocking pop (the idle worker's pipeline): the lease and started_at come
  -- from Redis' clock when it runs, not from when the worker sent it
  local t = redis.call('TIME')
  local secs = tonumber(t[1]) + tonumber(t[2]) / 1000000
  expiry = string.format('%.6f', secs + lease)
  started_at = string.sub(iso_utc(secs), 1, 19) .. string.format('.%06dZ', tonumber(t[2]))
end
local clock = tonumber(expiry) - lease  -- the worker's time (epoch s): fk_expires is compared with it
local L = nil
local out = {}
local count = 0
local last_wake = nil
local budget = 1000  -- ids popped at most per call: parking many limited jobs stays bounded
local names = {}
for q = 13, #ARGV, GROUP do names[#names + 1] = ARGV[q] end
local paused = redis.call('SMISMEMBER', ARGV[9], unpack(names))
local now = nil
local due = nil
local FIELDS = {'status', 'data', 'timeout', 'fk_task', 'fk_max', 'fk_retries', 'fk_manual', 'fk_user', 'result_ttl',
                'failure_ttl', 'fk_prio', 'created_at', 'fk_claimed', 'fk_trace', 'fk_limits', 'fk_deferrals',
                'fk_released', 'fk_expires', 'fk_hooks', 'fk_retry', 'fk_group', 'fk_gconc'}

-- One queued job popped from a list: end it expired, park it (a limit), claim it, or drop a stale id.
-- Returns true when it was claimed.
local function consider(id, f, qi, origin, qlim, leases)
  local key = ARGV[10] .. id
  -- a hash that is gone (deleted, expired) or no longer queued is not claimable: drop the id
  if f[1] == 'queued' and f[18] and tonumber(f[18]) <= clock then
    L = L or cjson.decode(ARGV[8])
    local ttl = tonumber(f[10] or '604800')
    local reason = 'expired: not started by ' .. iso_utc(tonumber(f[18])) .. ' (its expires); it never ran'
    redis.call('HSET', key, 'status', 'canceled', 'ended_at', started_at, 'fk_error', reason, 'fk_expired', '1')
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', L.canceled .. origin, clock + ttl, id)
    redis.call('HINCRBY', L.stats .. short_queue(origin), (f[4] or '?') .. ':expired', 1)
    emit(ARGV[11], ARGV[12], id, 'expired', short_queue(origin), f[4], f[8], reason)
    if f[19] then job_ended(L, id, 'canceled', reason, started_at, clock) end
    if f[17] then
      -- a limiter released it to run: it took no slot, so that limiter's next parked job may go now
      redis.call('HDEL', key, 'fk_released')
      now = now or redis_now()
      local lims = {}
      if f[15] then lims = cjson.decode(f[15]) end
      if qlim then lims[#lims + 1] = qlim end
      for _, lim in ipairs(lims) do
        if redis.call('LLEN', L.parked .. lim.n) > 0 then redis.call('ZADD', L.due, fmt(now), lim.n) end
      end
    end
    expired[#expired + 1] = id
    expired[#expired + 1] = f[4]
    expired[#expired + 1] = qi - 1
  elseif f[2] and f[1] == 'queued' then
    local claim = ARGV[5] .. (count + 1)
    local blocked, at = nil, nil
    if f[15] or qlim then
      L = L or cjson.decode(ARGV[8])
      now = now or redis_now()
      local lims = {}
      if f[15] then lims = cjson.decode(f[15]) end
      if qlim then lims[#lims + 1] = qlim end
      blocked, at = try_limits(L, lims, now, id .. ':' .. claim, lease)
    end
    if blocked then
      park(L, key, id, origin, blocked, at, f[17] ~= false)
      emit(ARGV[11], ARGV[12], id, 'parked', short_queue(origin), f[4], f[8], blocked.l)
      if not due or at < due then due = at end
    else
      count = count + 1
      n = n - 1
      if count <= nstart then
        if f[13] == '1' then
          redis.call('HSET', key, 'status', 'started', 'started_at', started_at, 'worker_name', ARGV[4],
                     'fk_claim', claim, 'fk_claimed', '0')
        else
          redis.call('HSET', key, 'status', 'started', 'started_at', started_at, 'worker_name', ARGV[4],
                     'fk_claim', claim)
        end
        emit(ARGV[11], ARGV[12], id, 'started', short_queue(origin), f[4], f[8], nil)
      else
        -- claimed ahead (prefetch): in rq:wip under this lease, so RQ's tools count it started and no
        -- other worker takes it, but fk_claimed says it has not begun; the worker writes started_at
        -- and the "started" event when it hands the job to a slot (finish.lua "starts")
        redis.call('HSET', key, 'status', 'started', 'worker_name', ARGV[4], 'fk_claim', claim, 'fk_claimed', '1')
      end
      if f[17] then redis.call('HDEL', key, 'fk_released') end
      leases[#leases + 1] = expiry
      leases[#leases + 1] = id .. ':' .. claim
      out[#out + 1] = id
      out[#out + 1] = claim
      out[#out + 1] = qi - 1
      for j = 2, 16 do out[#out + 1] = f[j] end
      out[#out + 1] = f[20]  -- fk_retry: the job's retry policy
      out[#out + 1] = f[22] and f[21]  -- fk_group when counted in its group's running jobs (fk_gconc)
      return true
    end
  end
  return false
end

-- A grouped job met in a priority list (a retry, an abandoned or released job) goes to the tail of its
-- group's list: ids sorted from one batch keep their order.
local function sort_into_group(id, f, prio, origin, rot)
  L = L or cjson.decode(ARGV[8])
  group_push(gwait_key(L, prio, origin, f[21]), rot, f[21], id, false)
end

-- Round-robin over the rotation `rot` of one queue and priority (see the header). Each sweep reads the
-- lowest members at once and serves them in score order, one job each, while a member's score is
-- below the lowest score a member served in this sweep moved to (so weights hold within a sweep);
-- the served members' new scores are written in one ZADD. A group list found empty leaves the
-- rotation then (a group's last job is taken without a second read of its list).
local function serve_rotation(list, prio, rot, wake, qi, origin, qlim, leases)
  L = L or cjson.decode(ARGV[8])
  local grun = L.grun .. origin
  local wkey = L.gweight .. origin
  local pkey = L.gpaused .. origin
  local weighted = redis.call('EXISTS', wkey) == 1
  local any_paused = redis.call('EXISTS', pkey) == 1
  if redis.call('LLEN', list) > 0 then group_join(rot, UNGROUPED) end
  local skipped = {}
  local nskip = 0

  -- one turn of member g: 'served', 'skip' (paused or at its group_concurrency), 'empty', or 'again'
  -- (an id that was not claimed: sorted into its group, parked, expired or stale)
  local function turn(g)
    if g == UNGROUPED then
      local id = redis.call('LPOP', list)
      if not id then return 'empty' end
      last_wake = wake
      local f = redis.call('HMGET', ARGV[10] .. id, unpack(FIELDS))
      if f[21] and f[1] == 'queued' then
        sort_into_group(id, f, prio, origin, rot)
        return 'again'
      end
      return consider(id, f, qi, origin, qlim, leases) and 'served' or 'again'
    end
    if any_paused and redis.call('SISMEMBER', pkey, g) == 1 then return 'skip' end
    local glist = gwait_key(L, prio, origin, g)
    local id = redis.call('LPOP', glist)
    if not id then return 'empty' end
    last_wake = wake
    local f = redis.call('HMGET', ARGV[10] .. id, unpack(FIELDS))
    local limited = f[1] == 'queued' and f[22]
    if limited and tonumber(redis.call('HGET', grun, g) or '0') >= tonumber(f[22]) then
      redis.call('LPUSH', glist, id)  -- at its group_concurrency: the group waits, the rotation goes on
      return 'skip'
    end
    if consider(id, f, qi, origin, qlim, leases) then
      if limited then redis.call('HINCRBY', grun, g, 1) end  -- counted: finish or abandon gives it back
      return 'served'
    end
    return 'again'
  end

  local recent = {}  -- members skipped since they were last moved to the back of the rotation
  while n > 0 and budget > 0 do
    local cand = redis.call('ZRANGE', rot, 0, nskip + n - 1, 'WITHSCORES')
    local bumps = {}
    local min_after = nil
    local progressed = false
    for i = 1, #cand, 2 do
      if n <= 0 or budget <= 0 then break end
      local g, score = cand[i], tonumber(cand[i + 1])
      if not skipped[g] then
        if min_after and score >= min_after then break end  -- a member served already comes first again
        budget = budget - 1
        local outcome = turn(g)
        if outcome == 'served' then
          local w = 1
          if weighted and g ~= UNGROUPED then w = tonumber(redis.call('HGET', wkey, g) or '1') end
          local after = score + 1 / w
          bumps[#bumps + 1] = after
          bumps[#bumps + 1] = g
          if not min_after or after < min_after then min_after = after end
          progressed = true
        elseif outcome == 'skip' then
          skipped[g] = true
          recent[g] = true
          nskip = nskip + 1
        elseif outcome == 'empty' then
          redis.call('ZREM', rot, g)
          progressed = true
        else
          progressed = true
        end
      end
    end
    if #bumps > 0 then
      redis.call('ZADD', rot, 'XX', unpack(bumps))
      for g, _ in pairs(skipped) do  -- held members lose their turns: no burst of credit when let go
        redis.call('ZADD', rot, 'XX', 'GT', min_after, g)
      end
    end
    if nskip > MAX_SKIP or not progressed then
      -- held members in front of the line: move them one turn behind its end, so the groups behind
      -- them are reached in this call and the next claim does not meet them first again
      if nskip == 0 then break end
      local last = redis.call('ZRANGE', rot, -1, -1, 'WITHSCORES')
      local back = tonumber(last[2]) + 1
      for g, _ in pairs(recent) do redis.call('ZADD', rot, 'XX', 'GT', back, g) end
      recent = {}
      nskip = 0
    end
  end
end

for qi = 1, #names do
  if n <= 0 or budget <= 0 then break end
  local q = 13 + (qi - 1) * GROUP
  if paused[qi] == 0 then
    local origin = ARGV[q]
    local qlim = nil
    if ARGV[q + 6] ~= '' then qlim = cjson.decode(ARGV[q + 6]) end
    local leases = {}
    for k = 1, 3 do
      local list, rot = ARGV[q + k], ARGV[q + 6 + k]
      -- no group waits at this priority: today's batch pop (grouped ids met are sorted into their groups)
      while n > 0 and budget > 0 and redis.call('EXISTS', rot) == 0 do
        local want = n
        local ids = redis.call('LPOP', list, want)
        if not ids then break end
        budget = budget - #ids
        last_wake = ARGV[q + 5]
        for _, id in ipairs(ids) do
          local f = redis.call('HMGET', ARGV[10] .. id, unpack(FIELDS))
          if f[21] and f[1] == 'queued' then
            sort_into_group(id, f, PRIO[k], origin, rot)
          else
            consider(id, f, qi, origin, qlim, leases)
          end
        end
        if #ids < want then break end  -- the list is empty now
      end
      if n > 0 and budget > 0 and redis.call('EXISTS', rot) == 1 then
        serve_rotation(list, PRIO[k], rot, ARGV[q + 5], qi, origin, qlim, leases)
      end
    end
    if #leases > 0 then redis.call('ZADD', ARGV[q + 4], unpack(leases)) end
  end
end
if ARGV[6] == '1' and n <= 0 and last_wake and redis.call('LLEN', last_wake) == 0 then
  redis.call('LPUSH', last_wake, '1')
end
if now and L then
  -- a claim under a limit with a backlog moved that limiter's due time (limits_lib acquire)
  local first = redis.call('ZRANGE', L.due, 0, 0, 'WITHSCORES')
  if #first > 0 and (not due or tonumber(first[2]) < due) then due = tonumber(first[2]) end
end
if due then due = fmt(math.max(0, due - now)) else due = false end
return {out, due, expired}
