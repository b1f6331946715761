-- promote.lua: move delayed jobs and retries whose time has come onto their queue.
--
--   KEYS[1] rq:scheduled:<q>   ZSET  due entries (score <= ARGV[1]) removed
--   KEYS[2] rq:queue:<q>       LIST  pushed (head for high priority)
--   KEYS[3] fikiri:wake:<q>    LIST  one wake-up token
--   rq:job:<id>                HASH  status -> queued (built from ARGV[3] .. id)
--
-- ARGV[1] now (epoch s), ARGV[2] limit, ARGV[3] job key prefix. Returns how many moved.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local f = redis.call('HMGET', key, 'status', 'fk_prio')
  if f[1] == 'scheduled' then
    redis.call('HSET', key, 'status', 'queued')
    if f[2] == 'high' then redis.call('LPUSH', KEYS[2], id) else redis.call('RPUSH', KEYS[2], id) end
    moved = moved + 1
  end
end
if moved > 0 and redis.call('LLEN', KEYS[3]) == 0 then redis.call('LPUSH', KEYS[3], '1') end
return moved
