-- Take a dead node's connections out of one topic's presence, atomically: whichever node
-- runs this first takes them, so each member that leaves is announced once.
-- KEYS[1..4] as in presence_set.lua, KEYS[5] = the dead node's hash (user -> count),
-- KEYS[6] = the topic's relay channel (a leave notice for each), ARGV[1] = PUBLISH or SPUBLISH,
-- ARGV[2] = '1' to send those notices ('' for the pseudo-topic of online users)
-- Returns the users who left the topic.
local held = redis.call('HGETALL', KEYS[5])
redis.call('DEL', KEYS[5])
local left = {}
for i = 1, #held, 2 do
  local user, count = held[i], tonumber(held[i + 1])
  if redis.call('INCRBY', KEYS[4], -count) <= 0 then
    redis.call('DEL', KEYS[4])
  end
  if user ~= '' then
    if redis.call('HINCRBY', KEYS[1], user, -count) <= 0 then
      redis.call('HDEL', KEYS[1], user)
      redis.call('HDEL', KEYS[2], user)
      redis.call('ZREM', KEYS[3], user)
      left[#left + 1] = user
      if ARGV[2] ~= '' then
        redis.call(ARGV[1], KEYS[6],
          '!{"nimbus":"presence","event":"leave","user":' .. cjson.encode(user) .. '}')
      end
    end
  end
end
return left
