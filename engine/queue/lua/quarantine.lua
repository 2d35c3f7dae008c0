-- Quarantine a leased chunk nobody can work on (its records, or its job's template, cannot be
-- decoded), on its first claim instead of after max_claims crashes: the lease is dropped, its
-- in-flight recipients are queued again as they were (f -> q, F -> Q: no attempt was made) but
-- the chunk is not made ready, and the reason is kept in the quarantine hash, where
-- `bulkmail audit` reports it. The chunk's records stay in place for inspection.
-- KEYS[1] lease  KEYS[2] owner  KEYS[3] quarantine
-- ARGV[1] namespace  ARGV[2] worker token  ARGV[3] chunk key (J:c)  ARGV[4] reason
-- Returns the number of recipients left queued, or -1 when the lease is not this worker's.
local ns, token, ckey, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', KEYS[2], ckey) ~= token then return -1 end
local job_id, c = split_chunk_key(ckey)
local jkey = ns .. ':job:' .. job_id
local st = jkey .. ':st'
local delta = {}
local n = 0
each_index(redis.call('HGET', jkey .. ':ck', c .. '#'), function(idx)
  local cur = redis.call('GETRANGE', st, idx, idx)
  if cur == 'f' or cur == 'F' then
    local new = (cur == 'F') and 'Q' or 'q'
    redis.call('SETRANGE', st, idx, new)
    bump(delta, cur, -1)
    bump(delta, new, 1)
    n = n + 1
  end
end)
apply_counts(jkey, delta)
redis.call('ZREM', KEYS[1], ckey)
redis.call('HDEL', KEYS[2], ckey)
redis.call('HSET', KEYS[3], ckey, reason)
return n
