-- Move due delayed messages into their queues.
-- KEYS: pairs of (delayed zset, queue list).  ARGV[1] most messages
-- moved per queue in one call.
-- Returns {moved, ms until the next eta (0 or more), or -1 for none}.
local now = now_ms()
local limit = tonumber(ARGV[1])
local moved = 0
local next_eta = -1
for i = 1, #KEYS, 2 do
  local delayed, queue = KEYS[i], KEYS[i + 1]
  local due = redis.call("ZRANGEBYSCORE", delayed, "-inf", now, "LIMIT", 0, limit)
  for j = 1, #due do
    insert_sorted(queue, due[j], false)
    redis.call("ZREM", delayed, due[j])
  end
  moved = moved + #due
  local head = redis.call("ZRANGE", delayed, 0, 0, "WITHSCORES")
  if head[2] then
    local eta = tonumber(head[2])
    if next_eta < 0 or eta < next_eta then
      next_eta = eta
    end
  end
end
if next_eta < 0 then
  return {moved, -1}
end
return {moved, math.max(0, next_eta - now)}
