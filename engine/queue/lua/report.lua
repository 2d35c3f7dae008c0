-- Record outcomes of leased chunks, compare-and-set on owner and state: a
-- worker that lost its lease (paused past it, say) cannot overwrite the
-- result of the worker that took over, and a replayed report changes nothing.
-- KEYS[1] owner  KEYS[2] lease  KEYS[3] claims  KEYS[4] retry
-- ARGV[1] namespace  ARGV[2] worker token  ARGV[3] now (ms)  ARGV[4] events on ('1'/'0')
-- ARGV[5] events maxlen  ARGV[6] msgpack payload: list of
--   {job id, chunk, done (0/1), outcomes, retry}
--   outcome = {index, new state byte, rcpt, status, code, enhanced, reply, mx, attempt, dup (0/1)}
--   retry   = {} or {records, packed indices, due (ms)}  (recipients deferred in this report)
-- Returns {outcomes applied, stale chunk keys...}
local ns, token, now = ARGV[1], ARGV[2], ARGV[3]
local events_on, maxlen = ARGV[4] == '1', ARGV[5]
local reports = cmsgpack.unpack(ARGV[6])
local applied = 0
local result = {0}

local function all_settled(st, packed)
  local settled = true
  each_index(packed, function(idx)
    local cur = redis.call('GETRANGE', st, idx, idx)
    if cur == 'f' or cur == 'F' then settled = false end
  end)
  return settled
end

for _, r in ipairs(reports) do
  local job_id, c, done, outcomes, retry = r[1], tostring(r[2]), r[3], r[4], r[5]
  local ckey = job_id .. ':' .. c
  if redis.call('HGET', KEYS[1], ckey) ~= token then
    result[#result + 1] = ckey
  else
    local jkey = ns .. ':job:' .. job_id
    local st = jkey .. ':st'
    local delta = {}
    local deferred = 0
    for _, o in ipairs(outcomes) do
      local idx, new = o[1], o[2]
      local cur = redis.call('GETRANGE', st, idx, idx)
      if cur == 'f' or cur == 'F' then
        redis.call('SETRANGE', st, idx, new)
        bump(delta, cur, -1)
        bump(delta, new, 1)
        applied = applied + 1
        if new == 'd' then deferred = deferred + 1 end
        if events_on then
          local ev = {'r', o[3], 's', o[4], 'c', o[5], 'e', o[6], 't', o[7], 'm', o[8], 'a', o[9], 'ts', now}
          if o[10] == 1 then ev[#ev + 1] = 'd'; ev[#ev + 1] = '1' end
          redis.call('XADD', jkey .. ':ev', 'MAXLEN', '~', maxlen, '*', unpack(ev))
        end
      end
    end
    apply_counts(jkey, delta)
    if deferred > 0 and retry[1] then
      local nc = redis.call('HINCRBY', jkey, 'nchunks', 1)
      redis.call('HSET', jkey .. ':ck', nc, retry[1], nc .. '#', retry[2])
      redis.call('ZADD', KEYS[4], retry[3], job_id .. ':' .. nc)
    end
    -- A chunk is dropped only when none of its recipients is still in flight:
    -- a worker bug cannot make a recipient vanish, the lease just runs out.
    if done == 1 and all_settled(st, redis.call('HGET', jkey .. ':ck', c .. '#')) then
      redis.call('HDEL', jkey .. ':ck', c, c .. '#')
      redis.call('ZREM', KEYS[2], ckey)
      redis.call('HDEL', KEYS[1], ckey)
      redis.call('HDEL', KEYS[3], ckey)
    end
  end
end
result[1] = applied
return result
