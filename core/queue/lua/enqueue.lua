-- uses: events_lib, limits_lib, hooks_lib, groups_lib
-- enqueue.lua: create one or more job runs on one queue in one atomic step.
--
-- Keys it owns (fixed, passed in KEYS):
--   KEYS[1] rq:queue:<q>        LIST  pending ids of normal priority (KEYS[9] high, KEYS[10] low)
--   KEYS[2] rq:scheduled:<q>    ZSET  delayed ids, score = run time
--   KEYS[3] fikiri:stats:<q>    HASH  lifetime counters, field "<task>:enqueued"
--   KEYS[4] fikiri:wake:<q>     LIST  at most one wake-up token for idle workers
--   KEYS[5] rq:finished:<q>, KEYS[6] rq:failed:<q>, KEYS[7] rq:canceled:<q>
--                               ZSETs a replaced (ended) run is removed from
--   KEYS[8] fikiri:users        SET   users that have an index
--   KEYS[9] fikiri:prio:high:<q>, KEYS[10] fikiri:prio:low:<q>  LISTs  pending ids of that priority
--   KEYS[11] rq:queues          SET   every queue key (RQ's list of queues): KEYS[1] is added with the
--                               queue's first job, so `rq info` and RQ's tools list it from then on
-- Keys built from ARGV (named in the job entries by the caller, from core/platform/keys.py):
--   a grouped job (entry "group"): fikiri:gwait:<prio>:<q>:<group> LIST ("glist", instead of the priority
--   list) and fikiri:grot:<prio>:<q> ZSET ("grot", the rotation it joins when its list was empty; groups_lib)
--   rq:job:<id> HASH, rq:results:<id> STREAM, fikiri:user:<u>:jobs LIST, fikiri:unique:... STRING
--
-- fikiri:events STREAM (events_lib): "enqueued" or "delayed" per job created
-- Workflows (core/workflows/chains.py), with req.layout: a job with "deps" waits (status scheduled, score
-- 1e308 in rq:scheduled: never due, and apart from the +inf of jobs parked by a limit, so the
-- stats count those alone; fk_wait_on "deps") until its dependencies end; each unended dependency gets
-- it in fikiri:dependents:<dep> and fk_hooks; a dependency already failed, canceled or gone cancels it
-- (hooks_lib) unless "policy" is "run"; with "pass", a completed dependency's result is put in its
-- payload under that name. req.batch {"key", "fields"}: the batch hash, created with its members,
-- whose ids go to the list <key>:jobs.
--
-- ARGV[1] JSON {"counter": "<task>:enqueued", "task", "queue" (short), "events", "maxlen", "jobs": [{"id", "key", "results", "fields": [k, v, ...],
--              "run_at": epoch|null, "prio": high|normal|low, "check": bool, "absent": bool, "unique": key|null,
--              "unique_ttl": s, "user_key": key|null, "deps": [ids]|null, "policy": cancel|run, "pass": name|null}],
--              "user_size": n, "user_ttl": s, "user": id|null, "layout": {...}|null, "batch": {...}|null,
--              "now": RQ time, "now_s": epoch s}; a key whose value is null or false may be left out
--              (core/queue/lifecycle.py leaves them out: a plain enqueue's request is about 40% smaller)
-- ARGV[2..] each entry's job data (binary-safe: it may be zlib'd), in the order of "jobs"
-- Returns the id each entry resolved to: its own, or the live job / unique holder it deferred to.
local req = cjson.decode(ARGV[1])
local L = req.layout
if req.batch ~= nil and req.batch ~= cjson.null and redis.call('EXISTS', req.batch.key) == 0 then
  redis.call('HSET', req.batch.key, unpack(req.batch.fields))
end
local out = {}
local created = 0
local pushed = false
local user_ids = {}
for i, job in ipairs(req.jobs) do
  local id = job.id
  local skip = false
  if job.unique ~= cjson.null and job.unique ~= nil then
    if not redis.call('SET', job.unique, id, 'NX', 'EX', job.unique_ttl) then
      out[i] = redis.call('GET', job.unique)
      skip = true
    end
  end
  if not skip and job.absent and redis.call('EXISTS', job.key) == 1 then
    -- a hand-back from the fallback spool: this id is already in Redis, never run it twice
    out[i] = id
    skip = true
  end
  if not skip and job.check then
    -- a live run of ours holds the id; a hash without fk_task (an rq-scheduler template, a raw RQ
    -- job) or an ended run is replaced
    local f = redis.call('HMGET', job.key, 'status', 'fk_task')
    local status = f[1]
    if f[2] and (status == 'queued' or status == 'scheduled' or status == 'started' or status == 'deferred') then
      out[i] = id
      skip = true
    elseif status then
      -- the previous run ended: this id starts a new run, replacing the old outcome
      redis.call('DEL', job.key, job.results)
      redis.call('ZREM', KEYS[5], id)
      redis.call('ZREM', KEYS[6], id)
      redis.call('ZREM', KEYS[7], id)
    end
  end
  if not skip then
    local data = ARGV[i + 1]
    local left, bad = 0, nil
    local deps = job.deps
    if deps ~= nil and deps ~= cjson.null then
      for _, dep in ipairs(deps) do
        local dkey = L.job .. dep
        local d = redis.call('HMGET', dkey, 'status', 'fk_result', 'fk_error')
        if d[1] == 'finished' then
          if job.pass ~= nil and job.pass ~= cjson.null then data = with_kwarg(data, job.pass, d[2] or 'null') end
        elseif d[1] == 'failed' or d[1] == 'canceled' or not d[1] then
          if job.policy ~= 'run' and not bad then
            bad = 'dependency ' .. dep .. ' ' .. (d[1] or 'does not exist (it expired or never was)')
            local why = last_line(d[3] or nil)
            if why then bad = bad .. ': ' .. why end
          end
        else
          redis.call('SADD', L.dependents .. dep, id)
          redis.call('HSET', dkey, 'fk_hooks', '1')
          left = left + 1
        end
      end
    end
    local fields = job.fields
    fields[#fields + 1] = 'data'
    fields[#fields + 1] = data
    redis.call('HSET', job.key, unpack(fields))
    if bad then
      local ttl = tonumber(req.failure_ttl)
      redis.call('HSET', job.key, 'status', 'canceled', 'ended_at', req.now, 'fk_error', string.sub(bad, 1, 500))
      redis.call('EXPIRE', job.key, ttl)
      redis.call('ZADD', KEYS[7], req.now_s + ttl, id)
      redis.call('HINCRBY', KEYS[3], req.task .. ':canceled', 1)
      emit(req.events, req.maxlen, id, 'canceled', req.queue, req.task, req.user, bad)
      job_ended(L, id, 'canceled', bad, req.now, req.now_s)
    elseif left > 0 then
      redis.call('HSET', job.key, 'status', 'scheduled', 'fk_wait_on', 'deps', 'fk_deps_left', left,
                 'fk_reason', 'waiting for ' .. left .. ' job(s) to end: ' .. string.sub(table.concat(deps, ', '), 1, 300))
      redis.call('ZADD', KEYS[2], '1e308', id)
    elseif job.run_at ~= cjson.null and job.run_at ~= nil then
      redis.call('ZADD', KEYS[2], job.run_at, id)
    else
      if job.group ~= nil and job.group ~= cjson.null then
        group_push(job.glist, job.grot, job.group, id, false)
      else
        local list = KEYS[1]
        if job.prio == 'high' then list = KEYS[9] elseif job.prio == 'low' then list = KEYS[10] end
        redis.call('RPUSH', list, id)
      end
      pushed = true
    end
    created = created + 1
    user_ids[#user_ids + 1] = id
    if req.batch ~= nil and req.batch ~= cjson.null then redis.call('RPUSH', req.batch.key .. ':jobs', id) end
    local delayed = left > 0 or (job.run_at ~= cjson.null and job.run_at ~= nil)
    if not bad then
      emit(req.events, req.maxlen, id, delayed and 'delayed' or 'enqueued', req.queue, req.task, req.user, nil)
    end
    out[i] = id
  end
end
if created > 0 then
  redis.call('HINCRBY', KEYS[3], req.counter, created)
  redis.call('SADD', KEYS[11], KEYS[1])
  if req.user ~= cjson.null and req.user ~= nil then
    local user_key = req.jobs[1].user_key
    redis.call('LPUSH', user_key, unpack(user_ids))
    redis.call('LTRIM', user_key, 0, req.user_size - 1)
    redis.call('EXPIRE', user_key, req.user_ttl)
    redis.call('SADD', KEYS[8], req.user)
  end
end
if pushed and redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('LPUSH', KEYS[4], '1')
end
return out
