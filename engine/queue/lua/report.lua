-- Record outcomes of leased chunks, compare-and-set on the lease and the state:
-- a worker that lost its lease (paused past it, Redis down past it) cannot
-- overwrite the result of the lease that took over, even when that lease is its
-- own (it claimed the chunk again: the owner value names the lease, not the
-- worker), and a replayed report changes nothing.
-- KEYS[1] owner  KEYS[2] lease  KEYS[3] claims  KEYS[4] retry
-- ARGV[1] namespace  ARGV[2] now (ms)  ARGV[3] events on ('1'/'0')
-- ARGV[4] events maxlen  ARGV[5] msgpack payload: list of
--   {job id, chunk, done (0/1), outcomes, retry, lease owner (as claim.lua set it)}
--   outcome = {index, new state byte, rcpt, status, code, enhanced, reply, mx, attempt, dup (0/1),
--              category, fault}
--   retry   = list of {records, packed indices, due (ms), bucket, kind}: recipients deferred in this
--             report, one retry chunk per shaping bucket (so retry-now can find them); kind 'q'
--             is a hand-back instead: recipients queued again unattempted ('q', no event),
--             their chunk straight on the job's ready list
-- A job cancelled meanwhile gets 'c' instead of 'd' (and no retry chunk).
-- Returns {outcomes applied, stale chunk keys...}
local ns, now = ARGV[1], ARGV[2]
local events_on, maxlen = ARGV[3] == '1', ARGV[4]
local reports = cmsgpack.unpack(ARGV[5])
local applied = 0
local result = {0}

local function all_settled(states, packed)
  local settled = true
  each_index(packed, function(idx)
    local cur = states.get(idx)
    if cur == 'f' or cur == 'F' then settled = false end
  end)
  return settled
end

for _, r in ipairs(reports) do
  local job_id, c, done, outcomes, retry, lease = r[1], tostring(r[2]), r[3], r[4], r[5], r[6]
  local ckey = job_id .. ':' .. c
  if redis.call('HGET', KEYS[1], ckey) ~= lease then
    result[#result + 1] = ckey
  else
    local jkey = ns .. ':job:' .. job_id
    local st = jkey .. ':st'
    local cancelled = redis.call('HGET', jkey, 'state') == 'cancelled'
    local packed = redis.call('HGET', jkey .. ':ck', c .. '#')
    local states = open_states(st, packed)
    local delta = {}
    local moved = {}  -- indices this call changed: a replayed report must not make a second retry chunk
    for _, o in ipairs(outcomes) do
      local idx, new, status = o[1], o[2], o[4]
      local cur = states.get(idx)
      if cur == 'f' or cur == 'F' then
        if new == 'd' and cancelled then new, status = 'c', 'cancelled' end
        states.set(idx, new)
        moved[idx] = true
        bump(delta, cur, -1)
        bump(delta, new, 1)
        applied = applied + 1
        if events_on and new ~= 'q' then
          -- one field for all but the recipient (see event_dict in store.py): 9 field names and
          -- their framing were a third of the AOF per message; the reply text goes last as it may hold '|'
          local x = table.concat({status, o[5], o[6], o[8], o[9], now, o[10], o[11], o[12], o[7]}, '|')
          redis.call('XADD', jkey .. ':ev', 'MAXLEN', '~', maxlen, '*', 'r', o[3], 'x', x)
        end
      end
    end
    apply_counts(jkey, delta)
    for _, group in ipairs(retry) do
      local requeue = group[5] == 'q'
      local want = requeue and 'q' or 'd'
      local waiting = false
      each_index(group[2], function(idx)
        if moved[idx] and states.get(idx) == want then waiting = true end
      end)
      if waiting then
        local nc = redis.call('HINCRBY', jkey, 'nchunks', 1)
        local rkey = job_id .. ':' .. nc
        redis.call('HSET', jkey .. ':ck', nc, group[1], nc .. '#', group[2])
        if requeue then
          redis.call('RPUSH', jkey .. ':ready', nc)
          ensure_in_lane(ns, job_id)
        else
          redis.call('HSET', jkey .. ':ck', nc .. '@', group[4])
          redis.call('ZADD', KEYS[4], group[3], rkey)
          redis.call('ZADD', ns .. ':site:' .. group[4] .. ':retry', group[3], rkey)
        end
      end
    end
    -- A chunk is dropped only when none of its recipients is still in flight:
    -- a worker bug cannot make a recipient vanish, the lease just runs out.
    states.flush()
    if done == 1 and all_settled(states, packed) then
      redis.call('HDEL', jkey .. ':ck', c, c .. '#')
      redis.call('ZREM', KEYS[2], ckey)
      redis.call('HDEL', KEYS[1], ckey)
      redis.call('HDEL', KEYS[3], ckey, ckey .. '@', ckey .. '+')
    end
  end
end
result[1] = applied
return result
