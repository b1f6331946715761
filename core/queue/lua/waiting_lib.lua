-- waiting_lib.lua: take a job that has not started off the list or schedule it waits in, shared
-- by cancel and fail (core/queue/lua_scripts.py puts it in front of each script whose first line
-- says "-- uses: waiting_lib"). The keys come from the caller's KEYS:
--   the queue's three priority lists (fikiri:prio:high:<q>, rq:queue:<q>, fikiri:prio:low:<q>)
--   rq:scheduled:<q>   a delayed job, a retry waiting for its back-off, or one parked by a limiter
--
-- Returns true when the job was waiting there and is removed (the caller's change wins over a
-- claim), false when it was claimed or has ended (the caller answers a conflict).
local function take_off_waiting(id, status, priority, high, normal, low, scheduled)
  if status == 'queued' then
    local list = normal
    if priority == 'high' then list = high elseif priority == 'low' then list = low end
    redis.call('LREM', list, 1, id)
    return true
  elseif status == 'scheduled' then
    redis.call('ZREM', scheduled, id)
    return true
  end
  return false
end
