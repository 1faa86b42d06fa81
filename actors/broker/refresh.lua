-- Refresh the heartbeat of worker processes another process knows to be
-- alive (a prefork supervisor for its children: a child whose task holds
-- the GIL cannot beat from its own upkeep thread).  Only processes that
-- have a heartbeat are refreshed (XX): one released or swept stays gone.
-- KEYS[1] heartbeats zset.  ARGV: broker ids.  Returns how many were refreshed.
local now = now_ms()
local refreshed = 0
for i = 1, #ARGV do
  refreshed = refreshed + redis.call("ZADD", KEYS[1], "XX", "CH", now, ARGV[i])
end
return refreshed
