-- Give back at once every message one worker process holds, and free the
-- locks it held: its supervisor saw it die, or it is about to exit
-- without finishing its tasks, so there is no need to wait for the sweep.
-- KEYS[1] heartbeats zset, KEYS[2] the process's index hash
-- (in-flight key -> queue key), KEYS[3] its hash of held locks
-- (lock key -> token).  ARGV[1] the process's broker id,
-- ARGV[2] "1" when the process may still fetch before it is gone (its
-- own cold shutdown): its index stays and its heartbeat is set to 0, so
-- the next sweep of any worker gives back what it took in between (it
-- runs no task from here, so its locks go now either way).
-- Returns {messages given back, locks freed}.
local pairs_ = redis.call("HGETALL", KEYS[2])
local moved = 0
for j = 1, #pairs_, 2 do
  moved = moved + give_back_all(pairs_[j], pairs_[j + 1])
end
local freed = release_held(KEYS[3])
if ARGV[2] == "1" then
  redis.call("ZADD", KEYS[1], 0, ARGV[1])
else
  redis.call("DEL", KEYS[2])
  redis.call("ZREM", KEYS[1], ARGV[1])
end
return {moved, freed}
