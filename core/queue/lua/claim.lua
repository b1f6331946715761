-- uses: events_lib, limits_lib
-- claim.lua: move up to N pending jobs from a worker's queues (in queue order, and on each queue
-- high, normal, then low priority) into each queue's in-flight registry, in one atomic step:
-- there is no instant, under SIGKILL or a Redis restart with AOF, when a claimed job is in
-- neither place. Paused queues are skipped. A job over one of its limits (its own fk_limits, or
-- the queue's) is parked instead (limits_lib): other jobs behind it are claimed in its place.
--
-- Keys (built from ARGV by the caller from core/platform/keys.py; one group per queue, in order):
--   fikiri:prio:high:<q>, rq:queue:<q>, fikiri:prio:low:<q>  LISTs popped from the head
--   rq:wip:<q>     ZSET  member "<id>:<claim>", score = lease expiry
--   fikiri:wake:<q> LIST with ARGV[6] = '1' (the worker just woke up), a token is left for the next
--                        idle worker when the batch came back full: a burst wakes workers one by one
--   fikiri:paused  SET   (ARGV[9]) queues no one claims from
--   rq:job:<id>    HASH  status -> started, started_at, worker_name, fk_claim
--   and the limiter keys of limits_lib, with a parked job's rq:scheduled:<q> entry
--   fikiri:events  STREAM "started" per job claimed, "parked" (detail: the reason) per job parked
--
-- ARGV[1] N (max jobs), ARGV[2] lease expiry (epoch s), ARGV[3] started_at (RQ time format),
-- ARGV[4] worker name, ARGV[5] claim id prefix, ARGV[6] chain wake-ups, ARGV[7] lease (s),
-- ARGV[8] layout JSON (decoded only when a limit applies), ARGV[9] paused set key, ARGV[10] job key prefix,
-- ARGV[11] events stream key, ARGV[12] its maxlen,
-- ARGV[13..] groups of 7: full queue name, high list, normal list, low list, wip key, wake key,
--            the queue's own rate limit (JSON, '' for none).
-- Returns {jobs, due}: jobs is a flat list, per job id, claim, queue index, then the 15 fields below
-- (data .. fk_deferrals) and fk_retry (false if unset); due is the seconds until a limiter touched here lets its next parked job run
-- (false if none), so the claiming worker runs release_limits right then.
local GROUP = 7
local n = tonumber(ARGV[1])
local lease = tonumber(ARGV[7])
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
                               'fk_trace', 'fk_limits', 'fk_deferrals', 'fk_released', 'fk_retry')
          -- a hash that is gone (deleted, expired) or no longer queued is not claimable: drop the id
          if f[2] and f[1] == 'queued' then
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
              out[#out + 1] = f[18]  -- fk_retry: the job's retry policy
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
return {out, due}
