-- Lease up to ARGV[5] chunks: the transactional lane first, then bulk jobs in
-- round robin (one chunk per job per turn, so a large job cannot starve a
-- small one). Queued recipients of a claimed chunk become in flight; final
-- ones are skipped (a chunk can come back after a lost lease half done).
-- KEYS[1] lane:tx  KEYS[2] lane:bulk  KEYS[3] lease  KEYS[4] owner  KEYS[5] claims
-- KEYS[6] quarantine
-- ARGV[1] namespace  ARGV[2] lease owner: worker token/claim number, new for every claim, so
-- a lease that ran out is not renewed or reported on by its worker once it claimed the chunk
-- again (its outcomes would overwrite the new lease's possible-duplicate ones)
-- ARGV[3] now (ms)  ARGV[4] lease (ms)  ARGV[5] max chunks  ARGV[6] max claims before quarantine
-- Returns a flat list: job id, chunk, records, flags (per recipient '0' skip,
-- '1' send, '2' send and flag a possible duplicate), repeated.
local ns, lease = ARGV[1], ARGV[2]
local now, lease_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local want, max_claims = tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
local got = 0

local function claim_chunk(job_id, c)
  local jkey = ns .. ':job:' .. job_id
  local ckey = job_id .. ':' .. c
  local records = redis.call('HGET', jkey .. ':ck', c)
  if not records then return end
  local packed = redis.call('HGET', jkey .. ':ck', c .. '#')
  if not packed or #packed % 4 ~= 0 then
    -- checked before any change: a Lua error here would strand the chunks leased before it
    redis.call('HSET', KEYS[6], ckey, 'corrupt chunk index: ' .. (packed and #packed or 0) .. ' bytes')
    return
  end
  -- Poison detection: 'ckey' counts strikes, leases lost before their first heartbeat (the
  -- worker died with the chunk in hand); heartbeat.lua refunds the strike once the worker lives on
  -- (marker 'ckey+'), so random deaths of busy workers do not quarantine healthy chunks.
  -- 'ckey@' counts every lease, a backstop for a chunk that kills its worker later on.
  local claims = redis.call('HINCRBY', KEYS[5], ckey, 1)
  local leases = redis.call('HINCRBY', KEYS[5], ckey .. '@', 1)
  redis.call('HDEL', KEYS[5], ckey .. '+')
  if claims > max_claims or leases > 4 * max_claims then
    local why = (claims > max_claims) and ('leased ' .. (claims - 1) .. ' times without finishing, each lost before its first heartbeat')
      or ('leased ' .. (leases - 1) .. ' times without finishing')
    redis.call('HSET', KEYS[6], ckey, why)
    return
  end
  local st = jkey .. ':st'
  local flags = {}
  local delta = {}
  local states = open_states(st, packed)
  each_index(packed, function(idx)
    local cur = states.get(idx)
    if cur == 'q' or cur == 'Q' then
      local new = (cur == 'Q') and 'F' or 'f'
      states.set(idx, new)
      bump(delta, cur, -1)
      bump(delta, new, 1)
      flags[#flags + 1] = (cur == 'Q') and '2' or '1'
    else
      flags[#flags + 1] = '0'
    end
  end)
  states.flush()
  apply_counts(jkey, delta)
  redis.call('ZADD', KEYS[3], now + lease_ms, ckey)
  redis.call('HSET', KEYS[4], ckey, lease)
  out[#out + 1] = job_id
  out[#out + 1] = c
  out[#out + 1] = records
  out[#out + 1] = table.concat(flags)
  got = got + 1
end

for _, lane in ipairs({KEYS[1], KEYS[2]}) do
  local turns = 0
  while got < want and turns < 4 * want + 64 do
    turns = turns + 1
    local job_id = redis.call('LMOVE', lane, lane, 'LEFT', 'RIGHT')
    if not job_id then break end
    local jkey = ns .. ':job:' .. job_id
    local c = false
    if redis.call('HGET', jkey, 'state') == 'active' then
      c = redis.call('LPOP', jkey .. ':ready')
    end
    if c then
      claim_chunk(job_id, c)
    else
      -- paused, cancelled, gone or drained: off the lane until something re-adds it
      redis.call('LREM', lane, 0, job_id)
    end
  end
end
return out
