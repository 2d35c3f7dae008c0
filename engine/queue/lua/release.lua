-- A draining worker hands back chunks it holds. Recipients it never started
-- are plain queued again; the release does not count as a failed claim.
-- KEYS[1] lease  KEYS[2] owner  KEYS[3] claims
-- ARGV[1] namespace  ARGV[2..] pairs: chunk key, lease owner (as claim.lua set it)
-- Returns the number of recipients queued again.
local ns = ARGV[1]
local n = 0
for i = 2, #ARGV, 2 do
  local ckey = ARGV[i]
  if redis.call('HGET', KEYS[2], ckey) == ARGV[i + 1] then
    local job_id, c = split_chunk_key(ckey)
    redis.call('ZREM', KEYS[1], ckey)
    redis.call('HDEL', KEYS[2], ckey)
    if redis.call('HDEL', KEYS[3], ckey .. '+') == 0 then redis.call('HINCRBY', KEYS[3], ckey, -1) end
    redis.call('HINCRBY', KEYS[3], ckey .. '@', -1)
    n = n + requeue_chunk(ns, job_id, c, 'q')
  end
end
if n > 0 then wake(ns, 8) end
return n
