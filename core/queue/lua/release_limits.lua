-- uses: events_lib, limits_lib
-- release_limits.lua: release the next parked job of every limiter whose time has come.
-- Workers run it with the promote step; the reply tells them when to run it next, so a parked
-- job starts within milliseconds of its slot (no polling, no spinning).
--
-- Keys: those of limits_lib (fikiri:limits:due, fikiri:parked:<name>, the job hash, its queue
-- list, rq:scheduled:<origin>, fikiri:wake:<origin>).
-- ARGV[1] layout JSON, ARGV[2] lease (s, the fallback of concurrency limiters), ARGV[3] limit.
-- Returns {released, seconds until the next limiter is due (-1: none)} (the second as a string).
local L = cjson.decode(ARGV[1])
local lease = tonumber(ARGV[2])
local now = redis_now()
local names = redis.call('ZRANGEBYSCORE', L.due, '-inf', fmt(now), 'LIMIT', 0, tonumber(ARGV[3]))
local released = 0
for _, name in ipairs(names) do
  local fallback = 1.0
  if string.sub(name, 1, 5) == 'conc:' then fallback = lease end
  if release_one(L, name, now, fallback) then released = released + 1 end
end
local nxt = redis.call('ZRANGE', L.due, 0, 0, 'WITHSCORES')
if #nxt == 0 then return {released, '-1'} end
return {released, fmt(math.max(0, tonumber(nxt[2]) - now))}
