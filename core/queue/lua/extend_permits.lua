-- uses: events_lib, limits_lib
-- extend_permits.lua: a worker's heartbeat keeps the concurrency permits of its running jobs
-- alive (their leases are extended beside them), in Redis time like every limiter.
--
--   fikiri:limit:conc:<k>   ZSET  permit member "<id>:<claim>" rescored (XX: a returned permit stays gone)
--
-- ARGV[1] lease (s), ARGV[2..] pairs: limiter key, member. Returns how many were extended.
local expiry = fmt(redis_now() + tonumber(ARGV[1]))
local n = 0
for i = 2, #ARGV, 2 do
  n = n + redis.call('ZADD', ARGV[i], 'XX', 'CH', expiry, ARGV[i + 1])
end
return n
