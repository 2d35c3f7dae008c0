-- Append chunks of recipients to a loading job. Indices of submitted chunks
-- are contiguous and follow 'total', so their states are one SETRANGE each.
-- KEYS[1] job hash  KEYS[2] states  KEYS[3] chunks
-- ARGV[1] loader token, then per chunk: records, packed indices, first index, count
-- Returns the new total, or an error when another submitter took over.
if redis.call('HGET', KEYS[1], 'loader') ~= ARGV[1] then
  return redis.error_reply('SUPERSEDED job is being loaded by another submitter')
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
for i = 2, #ARGV, 4 do
  local first, count = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  if first ~= total then
    return redis.error_reply('BADINDEX chunk starts at ' .. first .. ', expected ' .. total)
  end
  local c = redis.call('HINCRBY', KEYS[1], 'nchunks', 1)
  redis.call('HSET', KEYS[3], c, ARGV[i], c .. '#', ARGV[i + 1])
  redis.call('SETRANGE', KEYS[2], first, string.rep('q', count))
  total = total + count
end
redis.call('HSET', KEYS[1], 'total', total, 'queued', total)
return total
