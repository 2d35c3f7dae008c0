-- Pause or resume a job. Paused: no chunk of it is claimed (chunks already
-- leased finish). Resumed: back in its lane, workers woken.
-- KEYS[1] job hash  KEYS[2] ready
-- ARGV[1] namespace  ARGV[2] job id  ARGV[3] 'pause' or 'resume'
-- Returns 1 when the state changed, 0 when it was already so, -1 for no such job or a
-- job that cannot change (loading, cancelled).
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'active' and state ~= 'paused' then return -1 end
if ARGV[3] == 'pause' then
  if state == 'paused' then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'paused')
  return 1
end
if state == 'active' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'active')
if redis.call('LLEN', KEYS[2]) > 0 then
  ensure_in_lane(ARGV[1], ARGV[2])
  wake(ARGV[1], 8, redis.call('HGET', KEYS[1], 'priority'))
end
return 1
