-- groups_lib.lua: job groups (fair shares per tenant), shared by enqueue, claim, finish, abandon,
-- cancel, fail and delete (core/queue/lua_scripts.py puts it in front of each script whose first
-- line lists it in "-- uses:"). Design (core/queue/groups.py says why):
--   * an ungrouped job waits exactly as before, in its priority list (rq:queue:<q> for normal);
--   * a grouped job (fk_group) waits in its group's list; enqueue pushes it there. Any other script
--     that puts a job back to waiting (a retry promoted, an abandoned or released job, an operator's
--     requeue) pushes it to the priority list as before, and claim sorts it into its group when it
--     meets it there: those scripts need not know about groups;
--   * per queue and priority, a rotation ZSET holds the groups with jobs waiting, plus the member
--     UNGROUPED ("\0") for the priority list itself. A claim serves the lowest score and adds
--     1/weight to it (stride scheduling: round-robin, weighted);
--   * a group's running count (of its jobs carrying group_concurrency, fk_gconc: the limit needs it)
--     is kept exact by claim (+1), finish and abandon (-1) in the same script that moves the job in
--     or out of rq:wip:<q>. Jobs without a limit are not counted there (it would cost every grouped
--     job 2-3 commands); core/queue/groups.py reads their running jobs from rq:wip:<q> instead.
--   * a group whose list empties stays in the rotation until a claim finds the list empty (one LPOP),
--     which saves a second read of the list per job taken.
--
-- Keys, built from the layout L (core/platform/keys.py lua_layout()):
--   fikiri:gwait:<prio>:<q>:<group>  LIST  a group's waiting ids, oldest first (gone when empty)
--   fikiri:grot:<prio>:<q>           ZSET  the rotation: group -> virtual time (a group leaves when
--                                          its list empties)
--   fikiri:grun:<q>                  HASH  group -> its running jobs with fk_gconc (field deleted at 0)
--   fikiri:gweight:<q>               HASH  group -> weight (an operator's setting; read only)
--   fikiri:gpaused:<q>               SET   paused groups (an operator's setting; read only)

local UNGROUPED = '\0'

local function gwait_key(L, prio, origin, group)
  return L.gwait .. prio .. ':' .. origin .. ':' .. group
end

local function grot_key(L, prio, origin)
  return L.grot .. prio .. ':' .. origin
end

-- Put `group` in rotation `rot` if it is not there, at the rotation's current virtual time (its
-- lowest score): a group that starts waiting gets its turn soon, without credit for the time it was idle.
local function group_join(rot, group)
  if redis.call('ZSCORE', rot, group) then return end
  local first = redis.call('ZRANGE', rot, 0, 0, 'WITHSCORES')
  local v = '0'
  if #first > 0 then v = first[2] end
  redis.call('ZADD', rot, v, group)
end

-- A job starts waiting in its group: at the tail (or the head, a job taken back), joining the rotation
-- when the group's list was empty (a non-empty group list is always in its rotation).
local function group_push(list, rot, group, id, head)
  local len
  if head then len = redis.call('LPUSH', list, id) else len = redis.call('RPUSH', list, id) end
  if len == 1 then group_join(rot, group) end
end

-- A claimed job of `group` ended or was taken back: its running count drops (never below 0).
local function group_release(grun, group)
  if redis.call('HINCRBY', grun, group, -1) <= 0 then redis.call('HDEL', grun, group) end
end

-- A waiting job of `group` leaves its group list (cancel, fail, delete); an emptied group leaves
-- the rotation. Returns true if the id was in the list.
local function group_unwait(L, prio, origin, group, id)
  local p = prio or 'normal'
  if p ~= 'high' and p ~= 'low' then p = 'normal' end
  local list = gwait_key(L, p, origin, group)
  local removed = redis.call('LREM', list, 1, id)
  if removed > 0 and redis.call('LLEN', list) == 0 then redis.call('ZREM', grot_key(L, p, origin), group) end
  return removed > 0
end
