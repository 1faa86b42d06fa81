-- Move a message to the dead-letter set of its queue.
-- KEYS[1] in-flight list, KEYS[2] dead zset, KEYS[3] dead hash.
-- ARGV[1] element (as held in flight), ARGV[2] message id, ARGV[3] JSON
-- record, ARGV[4] time to keep dead letters in ms.
-- Returns 1, or 0 (and nothing done) when the element is no longer in
-- flight: its ack, a sweep or a release got there first.
if redis.call("LREM", KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
local now = now_ms()
-- Newest last, even for letters of the same millisecond (pages list the newest
-- first): a tie is scored a thousandth of a millisecond after the newest one.
local score = now
local newest = redis.call("ZREVRANGE", KEYS[2], 0, 0, "WITHSCORES")
if newest[2] and tonumber(newest[2]) >= score then
  score = tonumber(newest[2]) + 0.001
end
redis.call("ZADD", KEYS[2], string.format("%.3f", score), ARGV[2])
redis.call("HSET", KEYS[3], ARGV[2], ARGV[3])
drop_dead_before(KEYS[2], KEYS[3], now - tonumber(ARGV[4]))
return 1
