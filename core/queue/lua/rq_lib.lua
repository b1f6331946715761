-- rq_lib.lua: RQ's result record (rq.results.Result, pinned in core/queue/rq_compat.py), written in the
-- same script as the job's end so RQ's Job API, rq-dashboard and other RQ tools read our result
-- and error: Job.fetch(id).return_value(), .latest_result().exc_string.
--
--   rq:results:<id>   STREAM  one entry per ended execution: type (1 successful, 2 failed,
--                             3 stopped), worker_name, return_value (base64 of the result's JSON)
--                             or exc_string (base64 of the zlib'd text); XADD MAXLEN ~ 10, then
--                             EXPIRE with the job's own TTL (Result.save). The key is named by
--                             the caller, or built from the layout (L.results .. id).
-- The caller encodes the values it knows (core/queue/rq_compat.py: result_return_value,
-- result_exc_string); rq_exc() here encodes a short text only the script reads (a stop reason).

local function rq_result(key, ttl, kind, worker, value, exc)
  local a = {'type', kind, 'worker_name', worker or ''}
  if value and value ~= cjson.null then a[#a + 1] = 'return_value'; a[#a + 1] = value end
  if exc and exc ~= cjson.null then a[#a + 1] = 'exc_string'; a[#a + 1] = exc end
  redis.call('XADD', key, 'MAXLEN', '~', 10, '*', unpack(a))
  redis.call('EXPIRE', key, ttl)
end

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d = {math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64}
    out[#out + 1] = string.sub(B64, d[1] + 1, d[1] + 1) .. string.sub(B64, d[2] + 1, d[2] + 1) ..
                    (b and string.sub(B64, d[3] + 1, d[3] + 1) or '=') .. (c and string.sub(B64, d[4] + 1, d[4] + 1) or '=')
  end
  return table.concat(out)
end

-- base64 of `text` in the zlib format (RFC 1950) with stored deflate blocks: what Python's
-- zlib.decompress reads, without compressing (only for short texts: Lua has no zlib).
local function rq_exc(text)
  local n = #text
  local a, b = 1, 0
  for i = 1, n do
    a = (a + string.byte(text, i)) % 65521
    b = (b + a) % 65521
  end
  local parts = {'\120\1'}
  local pos = 1
  repeat
    local len = math.min(65535, n - pos + 1)
    local final = 0
    if pos + len > n then final = 1 end
    local nlen = 65535 - len
    parts[#parts + 1] = string.char(final, len % 256, math.floor(len / 256), nlen % 256, math.floor(nlen / 256))
    parts[#parts + 1] = string.sub(text, pos, pos + len - 1)
    pos = pos + len
  until pos > n
  parts[#parts + 1] = string.char(math.floor(b / 256), b % 256, math.floor(a / 256), a % 256)
  return b64(table.concat(parts))
end
