-- Delay a message.
-- KEYS[1] delayed zset, KEYS[2] wake list, KEYS[3] (optional) in-flight
-- list to take the element ARGV[3] out of, in the same step (a retry
-- scheduled as its attempt is acknowledged, or a foreign message with a
-- future eta).  ARGV[1] element, ARGV[2] delay in ms.  Returns the eta,
-- or -1 (and nothing done) when KEYS[3] is given but no longer holds the
-- element: its ack, a sweep or a release got there first, and scheduling
-- it anyway would run the message twice.
if KEYS[3] and redis.call("LREM", KEYS[3], -1, ARGV[3]) == 0 then
  return -1
end
local eta = now_ms() + tonumber(ARGV[2])
redis.call("ZADD", KEYS[1], eta, ARGV[1])
-- Wake one scheduler if this message is now the earliest of its queue.
local first = redis.call("ZRANGE", KEYS[1], 0, 0)
if first[1] == ARGV[1] then
  redis.call("LPUSH", KEYS[2], "1")
  redis.call("LTRIM", KEYS[2], 0, 0)
end
return eta
