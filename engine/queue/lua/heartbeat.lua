-- Extend the leases a live worker holds; report the ones it no longer owns.
-- A renewal also refunds the chunk's claim strike, once per lease (see claim.lua).
-- KEYS[1] owner  KEYS[2] lease  KEYS[3] workers  KEYS[4] claims
-- ARGV[1] worker token  ARGV[2] now (ms)  ARGV[3] lease (ms)
-- ARGV[4..] pairs: chunk key, lease owner (as claim.lua set it)
-- Returns the chunk keys whose lease was lost.
local token, now, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local ckey = ARGV[i]
  if redis.call('HGET', KEYS[1], ckey) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[2], 'XX', now + lease_ms, ckey)
    if redis.call('HSETNX', KEYS[4], ckey .. '+', 1) == 1 then
      redis.call('HINCRBY', KEYS[4], ckey, -1)
    end
  else
    lost[#lost + 1] = ckey
  end
end
redis.call('ZADD', KEYS[3], now, token)
return lost
