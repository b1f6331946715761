-- limits_lib.lua: rate and concurrency limiters, shared by claim, finish, abandon and
-- release_limits (core/queue/lua_scripts.py puts it in front of each script whose first line says
-- "-- uses: limits_lib"). Limiter time is Redis's own clock (TIME), the same for every host.
--
-- Keys, built from the layout L (core/platform/keys.py lua_layout()):
--   fikiri:limit:rate:<k>   STRING GCRA theoretical arrival time (epoch s), expires when idle
--   fikiri:limit:conc:<k>   ZSET   permits: member "<id>:<claim>", score = lease expiry (Redis time)
--   fikiri:parked:<name>    LIST   ids waiting for limiter <name>, oldest first
--   fikiri:limits:due       ZSET   limiter names with parked jobs, score = when the next may run
--   rq:job:<id>             HASH   status, fk_wait_on, fk_reason, fk_released
--   rq:scheduled:<origin>   ZSET   a parked job is listed here with score +inf (shown as delayed)
--   rq:queue:<origin> / fikiri:prio:high|low:<origin>  LIST  a released job goes to the head
--   fikiri:wake:<origin>    LIST   one wake-up token
--   fikiri:events           STREAM "released" when a parked job goes back to its queue (events_lib,
--                           which must come first in "-- uses:"; key and maxlen in L.events, L.maxlen)
-- A limit entry: {n = name, c = count, p = period s (rate), b = burst (rate), l = label}.

local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x) return string.format('%.6f', x) end

local function prio_list(L, prio, origin)
  if prio == 'high' or prio == 'low' then return L[prio] .. origin end
  return L.normal .. origin
end

-- When a job under `lim` may start (<= now: it may start now).
local function allowed_at(L, lim, now)
  local key = L.limit .. lim.n
  if lim.p then
    local tat = tonumber(redis.call('GET', key) or '0')
    local tau = (lim.p / lim.c) * ((lim.b or 1) - 1)
    return tat - tau
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))  -- permits of dead holders ran out
  if redis.call('ZCARD', key) < lim.c then return now end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(first[2])
end

local function acquire(L, lim, now, member, lease)
  local key = L.limit .. lim.n
  if lim.p then
    local T = lim.p / lim.c
    local tat = math.max(tonumber(redis.call('GET', key) or '0'), now) + T
    redis.call('SET', key, fmt(tat), 'PX', math.ceil((tat - now + lim.p) * 1000))
    if redis.call('LLEN', L.parked .. lim.n) > 0 then
      redis.call('ZADD', L.due, fmt(tat - T * ((lim.b or 1) - 1)), lim.n)
    end
  else
    redis.call('ZADD', key, fmt(now + lease), member)
  end
end

-- All limits allow the job: take them all and return nil. Else the first that blocks, and when.
local function try_limits(L, lims, now, member, lease)
  for _, lim in ipairs(lims) do
    local at = allowed_at(L, lim, now)
    if at > now + 0.0005 then return lim, at end
  end
  for _, lim in ipairs(lims) do acquire(L, lim, now, member, lease) end
  return nil
end

local function park(L, key, id, origin, lim, at, front)
  redis.call('HSET', key, 'status', 'scheduled', 'fk_wait_on', lim.n, 'fk_reason', lim.l)
  redis.call('ZADD', L.scheduled .. origin, '+inf', id)
  if front then redis.call('LPUSH', L.parked .. lim.n, id) else redis.call('RPUSH', L.parked .. lim.n, id) end
  redis.call('ZADD', L.due, fmt(at), lim.n)
end

-- Put the oldest job parked on limiter `name` back at the head of its queue (stale ids, of jobs
-- canceled or deleted meanwhile, are dropped). `fallback`: if more wait, look again this much
-- later in case the released job never claims (the claim sets the exact time when it does).
local function release_one(L, name, now, fallback)
  local parked = L.parked .. name
  while true do
    local id = redis.call('LPOP', parked)
    if not id then
      redis.call('ZREM', L.due, name)
      return false
    end
    local key = L.job .. id
    local f = redis.call('HMGET', key, 'status', 'fk_wait_on', 'origin', 'fk_prio', 'fk_task', 'fk_user')
    if f[1] == 'scheduled' and f[2] == name and f[3] then
      emit(L.events, L.maxlen, id, 'released', short_queue(f[3]), f[5], f[6], nil)
      redis.call('HSET', key, 'status', 'queued', 'fk_released', '1')
      redis.call('HDEL', key, 'fk_wait_on', 'fk_reason')
      redis.call('ZREM', L.scheduled .. f[3], id)
      redis.call('LPUSH', prio_list(L, f[4], f[3]), id)
      local wake = L.wake .. f[3]
      if redis.call('LLEN', wake) == 0 then redis.call('LPUSH', wake, '1') end
      if redis.call('LLEN', parked) > 0 then
        redis.call('ZADD', L.due, fmt(now + fallback), name)
      else
        redis.call('ZREM', L.due, name)
      end
      return true
    end
  end
end

-- A finished or abandoned job gives its permits back; the next parked job may take one.
local function return_permits(L, names, member, lease)
  local now = nil
  for _, name in ipairs(names) do
    if redis.call('ZREM', L.limit .. name, member) == 1 then
      now = now or redis_now()
      release_one(L, name, now, lease)
    end
  end
end
