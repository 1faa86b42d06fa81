-- Put a dead-lettered message back in its queue, in one step.
-- KEYS[1] dead zset, KEYS[2] dead hash, KEYS[3] queue list.
-- ARGV[1] message id, ARGV[2] element to enqueue (retries reset).
-- Returns 1, or 0 (nothing done) when the id is no longer dead-lettered
-- (retried or deleted meanwhile, or expired).
-- The element is inserted before the dead letter is removed: a script that
-- fails midway (out of memory at LINSERT) leaves the dead letter, never
-- loses the message.
if redis.call("ZSCORE", KEYS[1], ARGV[1]) == false then
  return 0
end
insert_sorted(KEYS[3], ARGV[2], false)
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("HDEL", KEYS[2], ARGV[1])
return 1
