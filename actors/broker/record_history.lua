-- Write one batch of the monitor's task history (prepended to trim_history.lua,
-- which then applies the bounds, in the same atomic step).
-- KEYS as trim_history.lua: [1] index zset, [2] workers zset, [3] event
-- counters hash, [4] runtime histogram hash, [5..] the per-state indexes.
-- ARGV[1..3] as trim_history.lua; ARGV[4] the batch as JSON, every number
-- and value already a string (values are the record's JSON texts, written
-- as they are):
--   {"states": [state of KEYS[5], state of KEYS[6], ...],
--    "tasks": [[id, last event ms, state or "", state's ms, [field, value, ...]], ...],
--    "counts": [[field, n], ...], "buckets": [[field, n], ...], "sums": [[field, seconds], ...],
--    "workers": [worker, ms, worker, ms, ...]}
local batch = cjson.decode(ARGV[4])
local ttl = ARGV[2]
local state_key = {}
for i, state in ipairs(batch.states) do
  state_key[state] = KEYS[4 + i]
end
for _, task in ipairs(batch.tasks) do
  local id, record = task[1], ARGV[3] .. task[1]
  redis.call("HSET", record, unpack(task[5]))
  redis.call("PEXPIRE", record, ttl)
  redis.call("ZADD", KEYS[1], task[2], id)
  if task[3] ~= "" then
    -- the id moves to its new state's index, and out of the others
    for state, key in pairs(state_key) do
      if state == task[3] then
        redis.call("ZADD", key, task[4], id)
      else
        redis.call("ZREM", key, id)
      end
    end
  end
end
for _, pair in ipairs(batch.counts) do
  redis.call("HINCRBY", KEYS[3], pair[1], pair[2])
end
for _, pair in ipairs(batch.buckets) do
  redis.call("HINCRBY", KEYS[4], pair[1], pair[2])
end
for _, pair in ipairs(batch.sums) do
  redis.call("HINCRBYFLOAT", KEYS[4], pair[1], pair[2])
end
if #batch.workers > 0 then
  redis.call("ZADD", KEYS[2], "GT", unpack(batch.workers))
end
