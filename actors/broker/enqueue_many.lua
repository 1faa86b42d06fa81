-- Enqueue a batch of messages in one step: Redis runs the whole script
-- or none of it, so a batch is never half in its queues.
-- KEYS[1] wake list; KEYS[i + 1] where element ARGV[i + 1] goes: its
-- queue list, or its delayed zset when ARGV[1] (a delay in ms) is above 0.
-- Elements go in order, where as many single enqueues (enqueue.lua,
-- schedule.lua) would put them.  Returns how many went.
local delay = tonumber(ARGV[1])
if delay <= 0 then
  for i = 2, #ARGV do
    insert_sorted(KEYS[i], ARGV[i], false)
  end
  return #ARGV - 1
end
local eta = now_ms() + delay
local delayed_sets = {}
for i = 2, #ARGV do
  redis.call("ZADD", KEYS[i], eta, ARGV[i])
  delayed_sets[KEYS[i]] = true
end
-- Wake one scheduler if one of them is now the earliest of its queue.
for key in pairs(delayed_sets) do
  local first = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
  if tonumber(first[2]) == eta then
    redis.call("LPUSH", KEYS[1], "1")
    redis.call("LTRIM", KEYS[1], 0, 0)
    break
  end
end
return #ARGV - 1
