-- Take up to ARGV[2] message tokens from a bucket's rate limits (token buckets
-- for per second / minute / hour), scaled by its adaptive rate factor.
-- KEYS[1] site hash
-- ARGV[1] now (ms)  ARGV[2] tokens wanted  ARGV[3..] per window: refill per second, capacity
-- Returns {tokens granted, wait (ms) before the next token when none}.
local now, want = tonumber(ARGV[1]), tonumber(ARGV[2])
local factor = tonumber(redis.call('HGET', KEYS[1], 'rate_factor') or '1')
local levels, grant, wait = {}, want, 0
for i = 3, #ARGV, 2 do
  local w = (i - 1) / 2
  local refill, cap = tonumber(ARGV[i]) * factor, math.max(tonumber(ARGV[i + 1]) * factor, 1)
  local tokens = tonumber(redis.call('HGET', KEYS[1], 'tk' .. w) or cap)
  local since = tonumber(redis.call('HGET', KEYS[1], 'ts' .. w) or now)
  tokens = math.min(cap, tokens + math.max(now - since, 0) / 1000 * refill)
  levels[w] = tokens
  grant = math.min(grant, math.floor(tokens))
  if tokens < 1 then wait = math.max(wait, math.ceil((1 - tokens) / refill * 1000)) end
end
if grant < 0 then grant = 0 end
for w, tokens in pairs(levels) do
  redis.call('HSET', KEYS[1], 'tk' .. w, tostring(tokens - grant), 'ts' .. w, now)
end
return {grant, wait}
