-- Set how many connections one node holds for one user (or, user empty, its anonymous
-- clients) in one topic, applying the difference to the topic's cluster-wide presence.
-- KEYS[1] = users (hash user -> connections in the cluster), KEYS[2] = info (hash user -> JSON),
-- KEYS[3] = member list (sorted set of user ids, all score 0, read by lexical range),
-- KEYS[4] = clients (the topic's connection count), KEYS[5] = this node's hash (user -> count),
-- KEYS[6] = the topic's relay channel, where a join or leave notice goes ('!' + JSON)
-- ARGV[1] = user ('' = anonymous), ARGV[2] = connections on this node, ARGV[3] = info JSON or '',
-- ARGV[4] = the join notice, ARGV[5] = the leave notice ('' for none), ARGV[6] = PUBLISH or SPUBLISH
-- Returns {change, node hash left}: change 1 the user became a member, -1 it left, 0 neither.
local user, count = ARGV[1], tonumber(ARGV[2])
local old = tonumber(redis.call('HGET', KEYS[5], user) or '0')
if count == 0 then
  redis.call('HDEL', KEYS[5], user)
else
  redis.call('HSET', KEYS[5], user, count)
end
local node_left = redis.call('HLEN', KEYS[5])
local delta = count - old
if delta == 0 then
  return {0, node_left}
end
if redis.call('INCRBY', KEYS[4], delta) <= 0 then
  redis.call('DEL', KEYS[4])
end
if user == '' then
  return {0, node_left}
end
local total = redis.call('HINCRBY', KEYS[1], user, delta)
if total <= 0 then
  redis.call('HDEL', KEYS[1], user)
  redis.call('HDEL', KEYS[2], user)
  redis.call('ZREM', KEYS[3], user)
  if ARGV[5] ~= '' then
    redis.call(ARGV[6], KEYS[6], '!' .. ARGV[5])
  end
  return {-1, node_left}
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], user, ARGV[3])
end
if total == delta then
  redis.call('ZADD', KEYS[3], 0, user)
  if ARGV[4] ~= '' then
    redis.call(ARGV[6], KEYS[6], '!' .. ARGV[4])
  end
  return {1, node_left}
end
return {0, node_left}
