-- Move a message to the dead-letter set of its queue.
-- KEYS[1] in-flight list, KEYS[2] dead zset, KEYS[3] dead hash.
-- ARGV[1] element (as held in flight), ARGV[2] message id, ARGV[3] JSON
-- record, ARGV[4] time to keep dead letters in ms.
redis.call("LREM", KEYS[1], -1, ARGV[1])
local now = now_ms()
redis.call("ZADD", KEYS[2], now, ARGV[2])
redis.call("HSET", KEYS[3], ARGV[2], ARGV[3])
local expired = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now - tonumber(ARGV[4]))
for i = 1, #expired do
  redis.call("HDEL", KEYS[3], expired[i])
end
if #expired > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now - tonumber(ARGV[4]))
end
return 1
