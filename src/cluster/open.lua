-- Open a topic: make sure it has a numbering (an epoch) and say where it stands.
-- KEYS[1] = the topic's meta hash, KEYS[2] = its history stream
-- ARGV[1] = now (ms, the epoch of a new numbering), ARGV[2] = meta TTL (ms)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  -- A history without its numbering belongs to a forgotten epoch.
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
return {tonumber(epoch), tonumber(seq)}
