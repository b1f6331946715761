-- events_lib.lua: every lifecycle transition is appended to one bounded stream, in the same
-- script (so atomically) as the transition itself (core/queue/lua_scripts.py puts this in front of each
-- script whose first line lists it in "-- uses:").
--
--   fikiri:events   STREAM  fields job, event, queue (short name), task, [user], [detail];
--                           XADD ... MAXLEN ~ <JOBS_EVENTS_MAXLEN>; a maxlen of 0 writes nothing
-- Read by core/events/stream.py (listen_events, the SSE routes) and the webhook dispatcher.

local function emit(key, maxlen, id, event, queue, task, user, detail)
  if not key or key == '' or tonumber(maxlen) == 0 then return end
  local a = {'job', id, 'event', event, 'queue', queue or '', 'task', task or ''}
  if user and user ~= cjson.null then a[#a + 1] = 'user'; a[#a + 1] = user end
  if detail and detail ~= cjson.null then a[#a + 1] = 'detail'; a[#a + 1] = detail end
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(a))
end

-- "fikiri:email" -> "email"
local function short_queue(origin)
  if not origin then return '' end
  return string.match(origin, '([^:]*)$')
end

-- the last line of an error, at most 300 characters (the stream carries a hint, not the traceback)
local function last_line(text)
  if not text or text == cjson.null then return nil end
  local last = nil
  for line in string.gmatch(text, '[^\n]+') do
    if string.match(line, '%S') then last = line end
  end
  if last then return string.sub(last, 1, 300) end
  return nil
end
