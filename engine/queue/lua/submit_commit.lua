-- Make a loaded job visible to workers: this is the moment it is accepted.
-- KEYS[1] job hash  KEYS[2] ready  KEYS[3] jobs index
-- ARGV[1] namespace  ARGV[2] loader token  ARGV[3] job id  ARGV[4] wake markers
-- ARGV[5] (optional) the total the submitter stored: a commit pipelined behind its chunks
--         must not accept a job whose chunks were refused
-- Returns the number of chunks made ready.
if redis.call('HGET', KEYS[1], 'loader') ~= ARGV[2] then
  return redis.error_reply('SUPERSEDED job is being loaded by another submitter')
end
if ARGV[5] and redis.call('HGET', KEYS[1], 'total') ~= ARGV[5] then
  return redis.error_reply('INCOMPLETE job has ' .. redis.call('HGET', KEYS[1], 'total') ..
    ' recipients stored, ' .. ARGV[5] .. ' expected')
end
local n = tonumber(redis.call('HGET', KEYS[1], 'nchunks'))
-- Keys outside the job first, the job's own flip to 'active' last: a write refused half-way
-- (an ACL without the lane or index keys) then leaves the job 'loading' under this loader,
-- so the submitter's clean-up removes it, instead of an 'active' job on no lane that a retry
-- of the same id would call accepted. (A lane entry of a job that is not active is harmless:
-- claim drops it.)
if n > 0 then
  ensure_in_lane(ARGV[1], ARGV[3])
  wake(ARGV[1], math.min(n, tonumber(ARGV[4])), redis.call('HGET', KEYS[1], 'priority'))
end
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'created'), ARGV[3])
local batch = {}
for c = 1, n do
  batch[#batch + 1] = c
  if #batch == 1000 then redis.call('RPUSH', KEYS[2], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('RPUSH', KEYS[2], unpack(batch)) end
redis.call('HSET', KEYS[1], 'state', 'active')
redis.call('HDEL', KEYS[1], 'loader')
return n
