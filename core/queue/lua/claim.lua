-- uses: events_lib, limits_lib, hooks_lib
-- claim.lua: move up to N pending jobs from a worker's queues (in queue order, and on each queue
-- high, normal, then low priority) into each queue's in-flight registry, in one atomic step:
-- there is no instant, under SIGKILL or a Redis restart with AOF, when a claimed job is in
-- neither place. Paused queues are skipped. A job over one of its limits (its own fk_limits, or
-- the queue's) is parked instead (limits_lib): other jobs behind it are claimed in its place.
-- A job whose fk_expires (epoch s) has passed by the claiming worker's clock (ARGV[2] - ARGV[7]) is
-- never started: it ends here as expired (RQ's status "canceled" plus fk_expired, so RQ's tools
-- read it), before any limit is asked, so it takes no slot. This holds for pending jobs, delayed
-- ones once promoted, retries, and jobs a limiter parked (when released).
--
-- Keys (built from ARGV by the caller from core/platform/keys.py; one group per queue, in order):
--   fikiri:prio:high:<q>, rq:queue:<q>, fikiri:prio:low:<q>  LISTs popped from the head
--   rq:wip:<q>     ZSET  member "<id>:<claim>", score = lease expiry
--   fikiri:wake:<q> LIST with ARGV[6] = '1' (the worker just woke up), a token is left for the next
--                        idle worker when the batch came back full: a burst wakes workers one by one
--   fikiri:paused  SET   (ARGV[9]) queues no one claims from
--   rq:job:<id>    HASH  status -> started, started_at, worker_name, fk_claim
--   and the limiter keys of limits_lib, with a parked job's rq:scheduled:<q> entry
--   fikiri:events  STREAM "started" per job claimed, "parked" (detail: the reason) per job parked,
--                        "expired" (detail: the reason) per job ended expired
--   an expired job (keys built from the layout ARGV[8]): rq:job:<id> HASH status -> canceled, ended_at,
--   fk_error (the reason), fk_expired, EXPIRE failure_ttl; rq:canceled:<q> ZSET (score = expiry);
--   fikiri:stats:<q> HASH "<task>:expired" + 1; its hooks (hooks_lib: callbacks, dependents, batch, as
--   a cancel); released by a limiter: fikiri:limits:due ZSET, its limiters with a backlog made due now
--
-- ARGV[1] N (max jobs), ARGV[2] lease expiry (epoch s), ARGV[3] started_at (RQ time format),
-- ARGV[4] worker name, ARGV[5] claim id prefix, ARGV[6] chain wake-ups, ARGV[7] lease (s),
-- ARGV[8] layout JSON (decoded only when a limit applies), ARGV[9] paused set key, ARGV[10] job key prefix,
-- ARGV[11] events stream key, ARGV[12] its maxlen,
-- ARGV[13..] groups of 7: full queue name, high list, normal list, low list, wip key, wake key,
--            the queue's own rate limit (JSON, '' for none).
-- Returns {jobs, due, expired}: jobs is a flat list, per job id, claim, queue index, then the 15 fields below
-- (data .. fk_deferrals) and fk_retry (false if unset); due is the seconds until a limiter touched here lets its next parked job run
-- (false if none), so the claiming worker runs release_limits right then; expired is a flat list,
-- per job ended expired, id, task, queue index.
local GROUP = 7
local n = tonumber(ARGV[1])
local lease = tonumber(ARGV[7])
local clock = tonumber(ARGV[2]) - lease  -- the worker's time (epoch s): fk_expires is compared with it
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
for qi = 1, #names do
  if n <= 0 or budget <= 0 then break end
  local q = 13 + (qi - 1) * GROUP
  if paused[qi] == 0 then
    local origin = ARGV[q]
    local qlim = nil
    if ARGV[q + 6] ~= '' then qlim = cjson.decode(ARGV[q + 6]) end
    local leases = {}
    for list = q + 1, q + 3 do
      while n > 0 and budget > 0 do
        local want = n
        local ids = redis.call('LPOP', ARGV[list], want)
        if not ids then break end
        budget = budget - #ids
        last_wake = ARGV[q + 5]
        for _, id in ipairs(ids) do
          local key = ARGV[10] .. id
          local f = redis.call('HMGET', key, 'status', 'data', 'timeout', 'fk_task', 'fk_max', 'fk_retries',
                               'fk_manual', 'fk_user', 'result_ttl', 'failure_ttl', 'fk_prio', 'created_at', 'fk_wait',
                               'fk_trace', 'fk_limits', 'fk_deferrals', 'fk_released', 'fk_expires',
                               'fk_hooks', 'fk_retry')
          -- a hash that is gone (deleted, expired) or no longer queued is not claimable: drop the id
          if f[1] == 'queued' and f[18] and tonumber(f[18]) <= clock then
            L = L or cjson.decode(ARGV[8])
            local ttl = tonumber(f[10] or '604800')
            local reason = 'expired: not started by ' .. iso_utc(tonumber(f[18])) .. ' (its expires); it never ran'
            redis.call('HSET', key, 'status', 'canceled', 'ended_at', ARGV[3], 'fk_error', reason, 'fk_expired', '1')
            redis.call('EXPIRE', key, ttl)
            redis.call('ZADD', L.canceled .. origin, clock + ttl, id)
            redis.call('HINCRBY', L.stats .. short_queue(origin), (f[4] or '?') .. ':expired', 1)
            emit(ARGV[11], ARGV[12], id, 'expired', short_queue(origin), f[4], f[8], reason)
            if f[19] then job_ended(L, id, 'canceled', reason, ARGV[3], clock) end
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
              redis.call('HSET', key, 'status', 'started', 'started_at', ARGV[3], 'worker_name', ARGV[4],
                         'fk_claim', claim)
              if f[17] then redis.call('HDEL', key, 'fk_released') end
              emit(ARGV[11], ARGV[12], id, 'started', short_queue(origin), f[4], f[8], nil)
              leases[#leases + 1] = ARGV[2]
              leases[#leases + 1] = id .. ':' .. claim
              out[#out + 1] = id
              out[#out + 1] = claim
              out[#out + 1] = qi - 1
              for j = 2, 16 do out[#out + 1] = f[j] end
              out[#out + 1] = f[20]  -- fk_retry: the job's retry policy
            end
          end
        end
        if #ids < want then break end  -- the list is empty now
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
