-- Forget a dead-lettered message.  KEYS[1] dead zset, KEYS[2] dead hash.
-- ARGV[1] message id.  Returns 1, or 0 when it was not dead-lettered.
local removed = redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("HDEL", KEYS[2], ARGV[1])
return removed
