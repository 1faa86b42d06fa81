-- Give back what a process's own in-flight list holds but none of its
-- consumers handed out (left over by a consumer that lost its
-- connection).  KEYS[1] in-flight list, KEYS[2] queue.  ARGV: the
-- elements still being worked on.
local busy = {}
for i = 1, #ARGV do
  busy[ARGV[i]] = (busy[ARGV[i]] or 0) + 1
end
local elements = redis.call("LRANGE", KEYS[1], 0, -1)
local moved = 0
for i = 1, #elements do
  local element = elements[i]
  if busy[element] and busy[element] > 0 then
    busy[element] = busy[element] - 1
  else
    redis.call("LREM", KEYS[1], 1, element)
    insert_sorted(KEYS[2], element, true)
    moved = moved + 1
  end
end
return moved
