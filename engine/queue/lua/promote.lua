-- Move retry chunks whose time has come to their job's ready list; their
-- deferred recipients become queued (a cancelled job's ready list is never
-- claimed again, and cancel already turned its deferred recipients into 'c').
-- KEYS[1] retry
-- ARGV[1] namespace  ARGV[2] now (ms)  ARGV[3] max chunks
-- Returns {chunks promoted, next due time in ms or -1}.
local ns = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, ckey in ipairs(due) do
  local job_id, c = split_chunk_key(ckey)
  local jkey = ns .. ':job:' .. job_id
  local st = jkey .. ':st'
  local bucket = redis.call('HGET', jkey .. ':ck', c .. '@')
  if bucket then
    redis.call('ZREM', ns .. ':site:' .. bucket .. ':retry', ckey)
    redis.call('HDEL', jkey .. ':ck', c .. '@')
  end
  local delta = {}
  each_index(redis.call('HGET', jkey .. ':ck', c .. '#'), function(idx)
    if redis.call('GETRANGE', st, idx, idx) == 'd' then
      redis.call('SETRANGE', st, idx, 'q')
      bump(delta, 'd', -1)
      bump(delta, 'q', 1)
    end
  end)
  apply_counts(jkey, delta)
  redis.call('ZREM', KEYS[1], ckey)
  if redis.call('HEXISTS', jkey .. ':ck', c) == 1 and redis.call('HGET', jkey, 'state') ~= 'cancelled' then
    redis.call('RPUSH', jkey .. ':ready', c)
    ensure_in_lane(ns, job_id)
  end
end
if #due > 0 then wake(ns, math.min(#due, 8)) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, first[2] or -1}
