-- Move messages the old Celery deployment left in its priority side
-- lists into the queue lists, oldest first (kombu pushes on the left and
-- pops on the right).  KEYS: pairs (side list, queue list).  ARGV[1]:
-- most messages to move in this call (keeps one call short).
-- Returns how many moved.
-- A side list that is not a list is left alone: an error here would
-- fail the whole upkeep round (and with it the sweep of dead workers).
local budget = tonumber(ARGV[1])
local moved = 0
for i = 1, #KEYS, 2 do
  while moved < budget and redis.call("TYPE", KEYS[i]).ok == "list" do
    local element = redis.call("RPOP", KEYS[i])
    if not element then
      break
    end
    insert_sorted(KEYS[i + 1], element, false)
    moved = moved + 1
  end
end
return moved
