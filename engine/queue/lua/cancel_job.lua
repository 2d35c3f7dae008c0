-- Cancel a job: its queued and deferred recipients become cancelled at once
-- (in flight ones become cancelled if their attempt ends deferred, see report).
-- KEYS[1] job hash  KEYS[2] states  KEYS[3] ready  KEYS[4] lane:tx  KEYS[5] lane:bulk
-- ARGV[1] job id
-- Returns the number of recipients cancelled now, -1 for no such job, -2 while loading.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'loading' then return -2 end
if state == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
local st = redis.call('GET', KEYS[2]) or ''
local queued = select(2, string.gsub(st, '[qQ]', ''))
local deferred = select(2, string.gsub(st, 'd', ''))
if queued + deferred > 0 then
  redis.call('SET', KEYS[2], (string.gsub(st, '[qQd]', 'c')))
  redis.call('HINCRBY', KEYS[1], 'queued', -queued)
  redis.call('HINCRBY', KEYS[1], 'deferred', -deferred)
  redis.call('HINCRBY', KEYS[1], 'cancelled', queued + deferred)
end
redis.call('DEL', KEYS[3])
redis.call('LREM', KEYS[4], 0, ARGV[1])
redis.call('LREM', KEYS[5], 0, ARGV[1])
return queued + deferred
