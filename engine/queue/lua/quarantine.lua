-- Quarantine a leased chunk nobody can work on (its records, or its job's template, cannot be
-- decoded), on its first claim instead of after max_claims crashes: the lease is dropped, its
-- in-flight recipients are queued again as they were (f -> q, F -> Q: no attempt was made) but
-- the chunk is not made ready, and the reason is kept in the quarantine hash, where
-- `bulkmail audit` reports it. The chunk's records stay in place for inspection.
-- KEYS[1] lease  KEYS[2] owner  KEYS[3] quarantine
-- ARGV[1] namespace  ARGV[2] lease owner (as claim.lua set it)  ARGV[3] chunk key (J:c)  ARGV[4] reason
-- Returns the number of recipients left queued, or -1 when the lease is not (any more) this one.
local ns, lease, ckey, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', KEYS[2], ckey) ~= lease then return -1 end
local job_id, c = split_chunk_key(ckey)
local n = unlease_chunk(ns, job_id, c, 'q')
redis.call('ZREM', KEYS[1], ckey)
redis.call('HDEL', KEYS[2], ckey)
redis.call('HSET', KEYS[3], ckey, reason)
return n
