-- Give messages a consumer holds back to their queue, in front of the
-- messages of their priority.  KEYS[1] in-flight list, KEYS[2] queue.
-- ARGV: elements, oldest first.  An element no longer in flight (acked,
-- or recovered by another worker) is skipped, so nothing is duplicated.
local moved = 0
for i = #ARGV, 1, -1 do
  if redis.call("LREM", KEYS[1], -1, ARGV[i]) > 0 then
    insert_sorted(KEYS[2], ARGV[i], true)
    moved = moved + 1
  end
end
return moved
