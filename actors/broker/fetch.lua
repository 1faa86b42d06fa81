-- Acknowledge, then take up to ARGV[1] messages from the tail of queue
-- KEYS[1] into the in-flight list KEYS[2], atomically.  The acks: element
-- ARGV[i] leaves the in-flight list KEYS[i + 1] (i >= 2), so that a
-- busy consumer sends the acks of its process's finished tasks with its
-- next fetch.  Returns the elements taken.
for i = 2, #ARGV do
  redis.call("LREM", KEYS[i + 1], -1, ARGV[i])
end
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
  local element = redis.call("LMOVE", KEYS[1], KEYS[2], "RIGHT", "LEFT")
  if not element then
    break
  end
  taken[#taken + 1] = element
end
return taken
