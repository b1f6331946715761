-- uses: events_lib
-- progress.lua: a running attempt reports progress, fenced by its claim (DESIGN.md "Crashes are
-- stalls"; issue 21): only while its in-flight member "<id>:<claim>" is still in the queue's
-- registry. An attempt the sweep already took back (its worker was judged dead, the job may run
-- elsewhere) writes nothing: its value would overwrite the new run's.
--
--   KEYS[1] rq:wip:<q>     ZSET   the attempt's member, read (ZSCORE)
--   KEYS[2] rq:job:<id>    HASH   fk_progress
--   KEYS[3] fikiri:events  STREAM "progress" (detail: the value, at most 1000 characters; events_lib)
--
-- ARGV[1] member "<id>:<claim>", ARGV[2] the value (JSON), ARGV[3] events maxlen, ARGV[4] job id,
-- ARGV[5] queue (short), ARGV[6] task, ARGV[7] user ('' for none)
-- Returns 1 when written, 0 when the attempt is stale (nothing written).
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'fk_progress', ARGV[2])
local user = nil
if ARGV[7] ~= '' then user = ARGV[7] end
emit(KEYS[3], ARGV[3], ARGV[4], 'progress', ARGV[5], ARGV[6], user, string.sub(ARGV[2], 1, 1000))
return 1
