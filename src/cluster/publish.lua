-- Publish a batch of messages, in order: number each in its topic, append it to the topic's
-- history and relay it to the nodes with local members. One call per batch, so Redis runs the
-- script once for many messages (on a Redis Cluster the batch is one message: its keys must
-- share a slot).
-- KEYS[1]  = this batch's id: a retried batch (its first answer was lost) is not published
--            twice; it gets the numbers it was given the first time.
-- KEYS[2 + 3i .. 4 + 3i] = message i's topic meta hash, history stream, relay channel.
-- ARGV: 1 now (ms), 2 history max length, 3 history TTL (ms), 4 meta TTL (ms), 5 node id,
--       6 PUBLISH or SPUBLISH, then per message i: 7 + 3i audience, 8 + 3i JSON flag (0|1),
--       9 + 3i text.
-- Returns epoch and seq of each message, flat: {epoch 1, seq 1, epoch 2, seq 2, ...}.
local done = redis.call('GET', KEYS[1])
if done then
  local numbers = {}
  for number in string.gmatch(done, '%d+') do
    numbers[#numbers + 1] = tonumber(number)
  end
  return numbers
end
local count = (#KEYS - 1) / 3
local numbers = {}
local written = {}
local epochs = {}
local touched = {}
for i = 0, count - 1 do
  local meta, history, channel = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local audience, json, text = ARGV[7 + 3 * i], ARGV[8 + 3 * i], ARGV[9 + 3 * i]
  local epoch = epochs[meta]
  if not epoch then
    epoch = redis.call('HGET', meta, 'epoch')
    if not epoch then
      epoch = ARGV[1]
      redis.call('DEL', history)
      redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
    end
    epochs[meta] = epoch
    touched[#touched + 1] = i
  end
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('XADD', history, 'MAXLEN', '~', ARGV[2], seq .. '-0',
    't', ARGV[1], 'n', ARGV[5], 'a', audience, 'j', json, 'm', text)
  redis.call(ARGV[6], channel,
    epoch .. ' ' .. seq .. ' ' .. ARGV[1] .. ' ' .. ARGV[5] .. '\n' .. audience .. '\n' .. json .. text)
  numbers[#numbers + 1] = tonumber(epoch)
  numbers[#numbers + 1] = seq
  written[#written + 1] = epoch .. ' ' .. seq
end
-- Each topic's keys live on for their TTLs after its last publish: refreshed once per batch.
for _, i in ipairs(touched) do
  redis.call('PEXPIRE', KEYS[2 + 3 * i], ARGV[4])
  redis.call('PEXPIRE', KEYS[3 + 3 * i], ARGV[3])
end
redis.call('SET', KEYS[1], table.concat(written, ' '), 'PX', 60000)
return numbers
