-- Make a loaded job visible to workers: this is the moment it is accepted.
-- KEYS[1] job hash  KEYS[2] ready  KEYS[3] jobs index
-- ARGV[1] namespace  ARGV[2] loader token  ARGV[3] job id  ARGV[4] wake markers
-- Returns the number of chunks made ready.
if redis.call('HGET', KEYS[1], 'loader') ~= ARGV[2] then
  return redis.error_reply('SUPERSEDED job is being loaded by another submitter')
end
local n = tonumber(redis.call('HGET', KEYS[1], 'nchunks'))
local batch = {}
for c = 1, n do
  batch[#batch + 1] = c
  if #batch == 1000 then redis.call('RPUSH', KEYS[2], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('RPUSH', KEYS[2], unpack(batch)) end
redis.call('HSET', KEYS[1], 'state', 'active')
redis.call('HDEL', KEYS[1], 'loader')
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'created'), ARGV[3])
if n > 0 then
  ensure_in_lane(ARGV[1], ARGV[3])
  wake(ARGV[1], math.min(n, tonumber(ARGV[4])), redis.call('HGET', KEYS[1], 'priority'))
end
return n
