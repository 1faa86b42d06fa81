-- Record that a worker process is alive and which in-flight lists it
-- owns.  KEYS[1] heartbeats zset, KEYS[2] the process's index hash.
-- ARGV[1] broker id, then pairs (in-flight key, queue key).
redis.call("ZADD", KEYS[1], now_ms(), ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
