-- Give back the messages of worker processes whose heartbeat stopped.
-- Their conversation locks are left to expire: a silent process may still
-- be alive (a task holding the GIL, a host cut off from Redis), and its
-- lock is what keeps a redelivered run from writing the conversation at
-- the same time.  Locks are freed early only where death is certain
-- (release.lua).
-- KEYS[1] heartbeats zset.  ARGV[1] silence in ms after which a process is dead,
-- ARGV[2] prefix of the per-process index hash (in-flight key -> queue key).
-- Returns {processes recovered, messages given back}.
local dead = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now_ms() - tonumber(ARGV[1]))
local moved = 0
for i = 1, #dead do
  local index = ARGV[2] .. dead[i]
  local pairs_ = redis.call("HGETALL", index)
  for j = 1, #pairs_, 2 do
    moved = moved + give_back_all(pairs_[j], pairs_[j + 1])
  end
  redis.call("DEL", index)
  redis.call("ZREM", KEYS[1], dead[i])
end
return {#dead, moved}
