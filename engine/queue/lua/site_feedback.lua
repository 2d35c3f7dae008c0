-- Adaptive throttling of a bucket, shared by all workers: additive increase
-- after a run of successes, multiplicative decrease on a "slow down" signal
-- (at most once per cooldown, so one burst of 421s counts once). Every change
-- is logged with its cause. Also records this worker's backlog for the bucket.
-- KEYS[1] site hash  KEYS[2] log stream  KEYS[3] sites set
-- ARGV[1] bucket  ARGV[2] now (ms)  ARGV[3] successes since last call  ARGV[4] signal reason ('' = none)
-- ARGV[5] max connections  ARGV[6] initial connections  ARGV[7] decrease factor  ARGV[8] increase every
-- ARGV[9] rate step  ARGV[10] min rate factor  ARGV[11] cooldown (ms)  ARGV[12] min connections
-- ARGV[13] worker token  ARGV[14] this worker's backlog for the bucket
-- Returns {connection limit, rate factor x 1000, paused (0/1), down until (ms),
--          when another worker was last refused a slot at the limit (ms; 0: never)}.
local now, ok, reason = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local max_conns, initial = tonumber(ARGV[5]), tonumber(ARGV[6])
local factor, every, step = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local min_rf, cooldown, min_conns = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSETNX', KEYS[1], 'climit', math.min(initial, max_conns))
redis.call('HSET', KEYS[1], 'max', max_conns, 'backlog:' .. ARGV[13], ARGV[14], 'seen:' .. ARGV[13], now)
local climit = math.min(tonumber(redis.call('HGET', KEYS[1], 'climit')), max_conns)
local rf = tonumber(redis.call('HGET', KEYS[1], 'rate_factor') or '1')

local function log(change, why)
  redis.call('HSET', KEYS[1], 'climit', climit, 'rate_factor', tostring(rf), 'last_change', now,
    'last_change_reason', why)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'ts', now, 'change', change,
    'connections', climit, 'rate_factor', string.format('%.3f', rf), 'reason', why)
end

if reason ~= '' then
  redis.call('HSET', KEYS[1], 'last_reason', reason, 'last_reason_ts', now, 'ok_count', 0)
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_decrease') or '0')
  if now - last >= cooldown then
    climit = math.max(min_conns, math.floor(climit * factor))
    rf = math.max(min_rf, rf * factor)
    redis.call('HSET', KEYS[1], 'last_decrease', now)
    log('decrease', reason)
  end
elseif ok > 0 then
  local count = redis.call('HINCRBY', KEYS[1], 'ok_count', ok)
  if count >= climit * every and (climit < max_conns or rf < 1) then
    climit = math.min(max_conns, climit + 1)
    rf = math.min(1, rf + step)
    redis.call('HSET', KEYS[1], 'ok_count', 0)
    log('increase', count .. ' deliveries without a slow-down signal')
  end
end
local paused = redis.call('HGET', KEYS[1], 'paused') == '1' and 1 or 0
local down = tonumber(redis.call('HGET', KEYS[1], 'down_until') or '0')
local wanted = 0
if redis.call('HGET', KEYS[1], 'wanted_by') ~= ARGV[13] then
  wanted = tonumber(redis.call('HGET', KEYS[1], 'wanted') or '0')
end
return {climit, math.floor(rf * 1000), paused, down, wanted}
