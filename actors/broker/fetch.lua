-- Take up to ARGV[1] messages from the tail of queue KEYS[1] into the
-- in-flight list KEYS[2], atomically.  Returns the elements taken.
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
  local element = redis.call("LMOVE", KEYS[1], KEYS[2], "RIGHT", "LEFT")
  if not element then
    break
  end
  taken[#taken + 1] = element
end
return taken
