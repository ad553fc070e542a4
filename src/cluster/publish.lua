-- Publish one message to a topic: number it, append it to the topic's history and relay it to
-- the nodes with local members. Four writes whatever the number of subscribers.
-- KEYS[1] = meta hash, KEYS[2] = history stream, KEYS[3] = relay channel,
-- KEYS[4] = this publish's id: a retried publish (its first answer was lost) is not published
--           twice; it gets the number it was given the first time.
-- ARGV: 1 now (ms), 2 history max length, 3 history TTL (ms), 4 meta TTL (ms), 5 node id,
--       6 audience, 7 JSON flag (0|1), 8 text, 9 PUBLISH or SPUBLISH
local done = redis.call('GET', KEYS[4])
if done then
  local space = string.find(done, ' ')
  return {tonumber(string.sub(done, 1, space - 1)), tonumber(string.sub(done, space + 1))}
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0',
  't', ARGV[1], 'n', ARGV[5], 'a', ARGV[6], 'j', ARGV[7], 'm', ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call(ARGV[9], KEYS[3],
  epoch .. ' ' .. seq .. ' ' .. ARGV[1] .. ' ' .. ARGV[5] .. '\n' .. ARGV[6] .. '\n' .. ARGV[7] .. ARGV[8])
redis.call('SET', KEYS[4], epoch .. ' ' .. seq, 'PX', 60000)
return {tonumber(epoch), seq}
