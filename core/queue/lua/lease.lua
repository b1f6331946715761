-- lease.lua: a worker's heartbeat extends the leases of the attempts it holds, fenced by their
-- claims (issue 21): a member "<id>:<claim>" that is no longer in the registry is never put back.
-- When the sweep took it back (abandon.lua marked the job's fk_lost with that very member; the job
-- may run elsewhere now) it is named in the reply, so the worker logs it and stops that stale run.
-- A member its own finish removed a moment ago is not named.
--
--   KEYS[1] rq:wip:<q>   ZSET  members rescored to ARGV[1] when present (ZADD XX)
--   rq:job:<id>          HASH  fk_lost read (key: ARGV[2] .. id)
--
-- ARGV[1] new lease expiry (epoch s), ARGV[2] job key prefix, ARGV[3..] the members this worker holds
-- on this queue. Returns the members taken back (stale attempts).
local stale = {}
for i = 3, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    local id = string.match(ARGV[i], '^(.*):[^:]*$') or ARGV[i]
    if redis.call('HGET', ARGV[2] .. id, 'fk_lost') == ARGV[i] then stale[#stale + 1] = ARGV[i] end
  else
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  end
end
return stale
