-- Move a pushing client's cursor forward (never back) and keep its session record alive.
-- Written in batches, so a note may arrive after a newer record: it must not undo it.
-- KEYS[1] = the session's record
-- ARGV[1] = topic epoch, ARGV[2] = cursor, ARGV[3] = record TTL (ms), ARGV[4] = topic,
-- ARGV[5] = node
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('HSET', KEYS[1], 'topic', ARGV[4], 'epoch', ARGV[1], 'cursor', ARGV[2],
    'polling', '0', 'node', ARGV[5])
elseif tonumber(ARGV[1]) > tonumber(epoch) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'cursor', ARGV[2])
elseif ARGV[1] == epoch then
  local cursor = tonumber(redis.call('HGET', KEYS[1], 'cursor') or '0')
  if tonumber(ARGV[2]) > cursor then
    redis.call('HSET', KEYS[1], 'cursor', ARGV[2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
