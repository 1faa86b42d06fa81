-- Give back the messages of worker processes whose heartbeat stopped, and
-- free the locks they held (their tasks no longer run).
-- KEYS[1] heartbeats zset.  ARGV[1] silence in ms after which a process is dead,
-- ARGV[2] prefix of the per-process index hash (in-flight key -> queue key),
-- ARGV[3] prefix of the per-process hash of held locks (lock key -> token).
-- Returns {processes recovered, messages given back, locks freed}.
local dead = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now_ms() - tonumber(ARGV[1]))
local moved = 0
local freed = 0
for i = 1, #dead do
  local index = ARGV[2] .. dead[i]
  local pairs_ = redis.call("HGETALL", index)
  for j = 1, #pairs_, 2 do
    moved = moved + give_back_all(pairs_[j], pairs_[j + 1])
  end
  freed = freed + release_held(ARGV[3] .. dead[i])
  redis.call("DEL", index)
  redis.call("ZREM", KEYS[1], dead[i])
end
return {#dead, moved, freed}
