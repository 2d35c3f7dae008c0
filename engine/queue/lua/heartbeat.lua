-- Extend the leases a live worker holds; report the ones it no longer owns.
-- A renewal also refunds the chunk's claim strike, once per lease (see claim.lua).
-- KEYS[1] owner  KEYS[2] lease  KEYS[3] workers  KEYS[4] claims
-- ARGV[1] worker token  ARGV[2] now (ms)  ARGV[3] lease (ms)  ARGV[4..] chunk keys
-- Returns the chunk keys whose lease was lost.
local token, now, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == token then
    redis.call('ZADD', KEYS[2], 'XX', now + lease_ms, ARGV[i])
    if redis.call('HSETNX', KEYS[4], ARGV[i] .. '+', 1) == 1 then
      redis.call('HINCRBY', KEYS[4], ARGV[i], -1)
    end
  else
    lost[#lost + 1] = ARGV[i]
  end
end
redis.call('ZADD', KEYS[3], now, token)
return lost
