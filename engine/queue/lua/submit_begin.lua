-- Start loading a job. A job already loaded (any state but 'loading') makes
-- this a no-op: submitting the same id twice changes nothing. A job left in
-- 'loading' by a submitter that died was never acknowledged; it is wiped.
-- KEYS[1] job hash  KEYS[2] states  KEYS[3] chunks  KEYS[4] ready  KEYS[5] events
-- ARGV[1] loader token  ARGV[2] now (ms)  ARGV[3..] meta field/value pairs
-- Returns 1 when loading started, 0 when the job exists.
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'loading' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'state', 'loading', 'loader', ARGV[1], 'created', ARGV[2],
  'nchunks', 0, 'total', 0, 'queued', 0, 'in_flight', 0, 'deferred', 0, 'delivered', 0,
  'bounced', 0, 'expired', 0, 'cancelled', 0, 'suppressed', 0)
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
