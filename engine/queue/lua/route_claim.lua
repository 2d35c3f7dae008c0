-- Shared MX routes: per domain, the answer some worker already published, or the
-- right to look it up (granted to one worker at a time; again to the one holding it), or "another worker is on it".
-- ARGV[1] namespace  ARGV[2] worker token  ARGV[3] claim ms  ARGV[4..] domains
-- Returns per domain: {answer, remaining ms} | 1 (look it up, then publish) | 0 (wait)
local ns, token, claim_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  local key = ns .. ':route:' .. ARGV[i]
  local answer = redis.call('GET', key)
  if answer then
    out[#out + 1] = {answer, redis.call('PTTL', key)}
  elseif redis.call('SET', key .. ':busy', token, 'NX', 'PX', claim_ms)
      or redis.call('GET', key .. ':busy') == token then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
