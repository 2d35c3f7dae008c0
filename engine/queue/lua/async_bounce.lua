-- Record an asynchronous bounce or a complaint against one recipient, verified
-- through its VERP token or trace header (engine/queue/bounces.py).
--
-- The only state change is D (delivered) -> b (bounced), for a permanent
-- failure: a relay accepted the message and its DSN now says the mailbox
-- refused it. Any other state is left alone and the report is recorded as an
-- event only: q/Q/f/F/d belong to the delivery pipeline (leases and retry
-- chunks, compare-and-set in report.lua), so changing them here would race a
-- worker; b/x/c/s are final already. A complaint never changes the state (the
-- message was delivered); it suppresses the address and is counted.
--
-- KEYS[1] job hash  KEYS[2] states  KEYS[3] events  KEYS[4] suppression hash of the sender domain
-- KEYS[5] set of sender domains with a suppression list  KEYS[6] complaint counters of the sender domain
-- ARGV[1] index  ARGV[2] rcpt  ARGV[3] status (bounced | delayed | complained)  ARGV[4] code
-- ARGV[5] enhanced  ARGV[6] text  ARGV[7] remote MTA  ARGV[8] now (ms)  ARGV[9] category  ARGV[10] fault
-- ARGV[11] source (async | arf)  ARGV[12] events maxlen  ARGV[13] apply state change (1/0)
-- ARGV[14] suppress (1/0)  ARGV[15] suppression record (JSON)  ARGV[16] sender domain
-- ARGV[17] complaint counter field ('' for none)
-- Returns {applied (1/0), state byte before}
local idx = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
if idx < 0 or idx >= total then
  return {0, ''}
end
local cur = redis.call('GETRANGE', KEYS[2], idx, idx)
local applied = 0
if ARGV[13] == '1' and cur == 'D' then
  redis.call('SETRANGE', KEYS[2], idx, 'b')
  local delta = {}
  bump(delta, 'D', -1)
  bump(delta, 'b', 1)
  apply_counts(KEYS[1], delta)
  applied = 1
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[12], '*',
  'r', ARGV[2], 's', ARGV[3], 'c', ARGV[4], 'e', ARGV[5], 't', ARGV[6], 'm', ARGV[7], 'a', '0',
  'ts', ARGV[8], 'k', ARGV[9], 'f', ARGV[10], 'src', ARGV[11], 'v', '1', 'ap', tostring(applied))
if ARGV[14] == '1' then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[15])
  redis.call('SADD', KEYS[5], ARGV[16])
end
if ARGV[17] ~= '' then
  redis.call('HINCRBY', KEYS[6], ARGV[17], 1)
  redis.call('HINCRBY', KEYS[6], '*', 1)
end
return {applied, cur}
