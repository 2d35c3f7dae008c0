-- Shared by every script (scripts.py prepends it). Recipient state bytes and
-- the job counter each one is counted under; see docs/ARCHITECTURE.md.
local COUNTER = {
  q = 'queued', Q = 'queued',        -- Q: queued again after a lost lease (maybe attempted)
  f = 'in_flight', F = 'in_flight',  -- F: in flight, maybe attempted before (possible duplicate)
  d = 'deferred',
  D = 'delivered', b = 'bounced', x = 'expired', c = 'cancelled', s = 'suppressed',
}

local function bump(delta, state, by)
  local name = COUNTER[state]
  delta[name] = (delta[name] or 0) + by
end

local function apply_counts(job_key, delta)
  for name, by in pairs(delta) do
    if by ~= 0 then redis.call('HINCRBY', job_key, name, by) end
  end
end

-- Chunk indices are packed as 4-byte big-endian unsigned integers.
local function each_index(packed, fn)
  if not packed then return end
  for pos = 1, #packed, 4 do
    fn((struct.unpack('>I4', packed, pos)))
  end
end

-- The state bytes of one chunk's recipients, read with one GETRANGE and written back with one
-- SETRANGE when its indices lie close together (a submitted chunk's are contiguous), instead of
-- two calls per recipient; scattered indices (a retry chunk) and indices outside the window use
-- one call each. Scripts are atomic: other recipients' bytes inside the window are written back
-- as they were read. flush() before anything else reads the states string.
local MAX_WINDOW = 4000  -- bytes: string.byte/unpack stay far below Lua's C stack limit
local function open_states(st, packed)
  local lo, hi, n = nil, nil, 0
  each_index(packed, function(idx)
    n = n + 1
    if lo == nil or idx < lo then lo = idx end
    if hi == nil or idx > hi then hi = idx end
  end)
  local bytes, dirty = nil, false
  if lo ~= nil and hi - lo < MAX_WINDOW and hi - lo < 4 * n + 64 then
    local raw = redis.call('GETRANGE', st, lo, hi)
    if #raw == hi - lo + 1 then bytes = {string.byte(raw, 1, -1)} end
  end
  local s = {}
  function s.get(idx)
    if bytes and idx >= lo and idx <= hi then return string.char(bytes[idx - lo + 1]) end
    return redis.call('GETRANGE', st, idx, idx)
  end
  function s.set(idx, ch)
    if bytes and idx >= lo and idx <= hi then
      bytes[idx - lo + 1] = string.byte(ch)
      dirty = true
    else
      redis.call('SETRANGE', st, idx, ch)
    end
  end
  function s.flush()
    if dirty then redis.call('SETRANGE', st, lo, string.char(unpack(bytes))) end
    dirty = false
  end
  return s
end

local function split_chunk_key(ckey)
  local sep = string.find(ckey, ':', 1, true)
  return string.sub(ckey, 1, sep - 1), string.sub(ckey, sep + 1)
end

local function lane_key(ns, priority)
  if priority == 'transactional' then return ns .. ':lane:tx' end
  return ns .. ':lane:bulk'
end

local function ensure_in_lane(ns, job_id)
  local jkey = ns .. ':job:' .. job_id
  local lane = lane_key(ns, redis.call('HGET', jkey, 'priority'))
  if not redis.call('LPOS', lane, job_id) then redis.call('RPUSH', lane, job_id) end
end

local function wake(ns, count, lane)
  local list = ns .. ':wake'
  if lane == 'transactional' then list = list .. ':tx' end  -- its own claimer blocks on it
  for _ = 1, count do redis.call('LPUSH', list, '1') end
  redis.call('LTRIM', list, 0, 63)
end

-- A leased chunk's in-flight recipients become queued (f -> fresh_state, F -> Q); returns how many.
local function unlease_chunk(ns, job_id, c, fresh_state)
  local jkey = ns .. ':job:' .. job_id
  local st = jkey .. ':st'
  local delta = {}
  local n = 0
  local packed = redis.call('HGET', jkey .. ':ck', c .. '#')
  local states = open_states(st, packed)
  each_index(packed, function(idx)
    local cur = states.get(idx)
    if cur == 'f' or cur == 'F' then
      local new = (cur == 'F') and 'Q' or fresh_state
      states.set(idx, new)
      bump(delta, cur, -1)
      bump(delta, new, 1)
      n = n + 1
    end
  end)
  states.flush()
  apply_counts(jkey, delta)
  return n
end

-- Put a leased chunk back at the head of its job's ready list, its recipients queued again.
local function requeue_chunk(ns, job_id, c, fresh_state)
  local n = unlease_chunk(ns, job_id, c, fresh_state)
  local jkey = ns .. ':job:' .. job_id
  if redis.call('HEXISTS', jkey .. ':ck', c) == 1 then
    redis.call('LPUSH', jkey .. ':ready', c)
    ensure_in_lane(ns, job_id)
  end
  return n
end
