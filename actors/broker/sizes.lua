-- Waiting, delayed, in-flight and dead-lettered counts of one queue, read
-- in one atomic step (so a message moving between them is never missed).
-- KEYS[1] queue list, KEYS[2] delayed zset, KEYS[3] dead zset,
-- KEYS[4] heartbeats zset.  ARGV[1] prefix of the per-process index hash.
local inflight = 0
local processes = redis.call("ZRANGE", KEYS[4], 0, -1)
for i = 1, #processes do
  local index = redis.call("HGETALL", ARGV[1] .. processes[i])
  for j = 1, #index, 2 do
    if index[j + 1] == KEYS[1] then
      inflight = inflight + redis.call("LLEN", index[j])
    end
  end
end
return {
  redis.call("LLEN", KEYS[1]),
  redis.call("ZCARD", KEYS[2]),
  inflight,
  redis.call("ZCARD", KEYS[3]),
}
