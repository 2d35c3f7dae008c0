-- Ask for a connection slot in a shaping bucket, shared by every worker: the
-- bucket's current (adaptive) connection limit, its new-connections-per-minute
-- limit, an operator pause and a "whole site down" mark all hold here.
-- KEYS[1] site hash  KEYS[2] conns zset  KEYS[3] new-connections zset  KEYS[4] sites set
-- ARGV[1] bucket  ARGV[2] now (ms)  ARGV[3] slot ttl (ms)  ARGV[4] connection id
-- ARGV[5] configured max connections  ARGV[6] initial connections  ARGV[7] max new per minute (0: no limit)
-- ARGV[8] reserve: slots beyond the limit this caller may take (transactional workers)
-- A refusal at the connection limit records who wanted a slot and when (fields wanted, wanted_by).
-- Returns {1, 0, ''} when granted, else {0, retry after (ms), reason}.
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local max_conns, initial, per_minute = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HSETNX', KEYS[1], 'climit', math.min(initial, max_conns))
redis.call('HSET', KEYS[1], 'max', max_conns)
if redis.call('HGET', KEYS[1], 'paused') == '1' then return {0, 1000, 'paused'} end
local down = tonumber(redis.call('HGET', KEYS[1], 'down_until') or '0')
if down > now then return {0, down - now, 'down'} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local limit = math.min(tonumber(redis.call('HGET', KEYS[1], 'climit')), max_conns) + tonumber(ARGV[8] or '0')
if redis.call('ZCARD', KEYS[2]) >= limit then
  -- remembered so that workers holding idle connections here give their slots back
  redis.call('HSET', KEYS[1], 'wanted', now, 'wanted_by', string.match(ARGV[4], '^(.*)#') or ARGV[4])
  return {0, 250, 'connection limit ' .. limit}
end
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[3]) >= per_minute then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {0, math.max(tonumber(oldest[2]) + 60000 - now, 50), 'new connections per minute'}
  end
  redis.call('ZADD', KEYS[3], now, ARGV[4])
end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
return {1, 0, ''}
