-- claim.lua: move up to N pending jobs from a worker's queues (in priority order) into each
-- queue's in-flight registry, in one atomic step: there is no instant, under SIGKILL or a Redis
-- restart with AOF, when a claimed job is in neither place.
--
-- Keys (built from ARGV by the caller from core/keys.py; one entry per queue, in order):
--   rq:queue:<q>   LIST  popped from the head
--   rq:wip:<q>     ZSET  member "<id>:<claim>", score = lease expiry
--   fikiri:wake:<q> LIST with ARGV[7] = '1' (the worker just woke up), a token is left for the next
--                        idle worker when the batch came back full: a burst wakes workers one by one
--   rq:job:<id>    HASH  status -> started, started_at, worker_name, fk_claim
--
-- ARGV[1] N (max jobs), ARGV[2] lease expiry (epoch s), ARGV[3] started_at (RQ time format),
-- ARGV[4] worker name, ARGV[5] claim id prefix, ARGV[6] job key prefix, ARGV[7] chain wake-ups,
-- ARGV[8..] triples: queue list key, wip key, wake key.
-- Returns a flat list: per job, id, claim, queue index, then the fields below (false if unset).
local n = tonumber(ARGV[1])
local out = {}
local count = 0
local last_wake = nil
for q = 8, #ARGV, 3 do
  if n <= 0 then break end
  local ids = redis.call('LPOP', ARGV[q], n)
  if ids then
    last_wake = ARGV[q + 2]
    local leases = {}
    for _, id in ipairs(ids) do
      local key = ARGV[6] .. id
      local f = redis.call('HMGET', key, 'status', 'data', 'timeout', 'fk_task', 'fk_max', 'fk_retries',
                           'fk_manual', 'fk_user', 'result_ttl', 'failure_ttl', 'fk_prio', 'created_at', 'fk_wait', 'fk_trace')
      -- a hash that is gone (deleted, expired) or no longer queued is not claimable: drop the id
      if f[2] and f[1] == 'queued' then
        count = count + 1
        local claim = ARGV[5] .. count
        redis.call('HSET', key, 'status', 'started', 'started_at', ARGV[3], 'worker_name', ARGV[4],
                   'fk_claim', claim)
        leases[#leases + 1] = ARGV[2]
        leases[#leases + 1] = id .. ':' .. claim
        out[#out + 1] = id
        out[#out + 1] = claim
        out[#out + 1] = (q - 8) / 3
        for j = 2, 14 do out[#out + 1] = f[j] end
      end
    end
    if #leases > 0 then redis.call('ZADD', ARGV[q + 1], unpack(leases)) end
    n = n - #ids
  end
end
if ARGV[7] == '1' and n <= 0 and last_wake and redis.call('LLEN', last_wake) == 0 then
  redis.call('LPUSH', last_wake, '1')
end
return out
