-- Move messages the old Celery deployment left in its priority side
-- lists into the queue lists, oldest first (kombu pushes on the left and
-- pops on the right).  KEYS: pairs (side list, queue list).  ARGV[1]:
-- most messages to move in this call (keeps one call short).
-- Returns how many moved.
local budget = tonumber(ARGV[1])
local moved = 0
for i = 1, #KEYS, 2 do
  while moved < budget do
    local element = redis.call("RPOP", KEYS[i])
    if not element then
      break
    end
    insert_sorted(KEYS[i + 1], element, false)
    moved = moved + 1
  end
end
return moved
