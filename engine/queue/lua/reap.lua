-- Take back chunks whose lease ran out (their worker died or stalled). Their
-- in-flight recipients are queued again as 'Q': an attempt may have happened,
-- so the next attempt's event says possible_duplicate.
-- KEYS[1] lease  KEYS[2] owner
-- ARGV[1] namespace  ARGV[2] now (ms)  ARGV[3] max chunks
-- Returns the number of chunks taken back.
local ns = ARGV[1]
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, ckey in ipairs(expired) do
  local job_id, c = split_chunk_key(ckey)
  redis.call('ZREM', KEYS[1], ckey)
  redis.call('HDEL', KEYS[2], ckey)
  requeue_chunk(ns, job_id, c, 'Q')
end
if #expired > 0 then wake(ns, math.min(#expired, 8)) end
return #expired
