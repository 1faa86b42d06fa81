-- Apply the monitor's task-history bounds (after a batch of events).
-- KEYS[1] index zset (task id -> last event ms), KEYS[2] workers zset
-- (worker -> last event ms), KEYS[3] event counters hash, KEYS[4] runtime
-- histogram hash, KEYS[5..] the per-state indexes of task ids.  ARGV[1] most tasks kept, ARGV[2] age bound in ms,
-- ARGV[3] prefix of a task's record key.
-- Drops ids older than the age bound and the oldest beyond the count, with
-- their records; and the counter fields of workers with no event within
-- the age bound (worker names change with every restart), so neither the
-- hashes nor the exported series grow without bound.  Returns how many
-- tasks went.
local cutoff = now_ms() - tonumber(ARGV[2])
local gone = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", cutoff)
local n = redis.call("ZCARD", KEYS[1]) - #gone - tonumber(ARGV[1])
if n > 0 then
  local extra = redis.call("ZRANGE", KEYS[1], #gone, #gone + n - 1)
  for i = 1, #extra do gone[#gone + 1] = extra[i] end
end
-- In chunks, each a few variadic commands: a full history drops as many
-- tasks per batch as the batch adds (thousands a second on a busy worker).
local CHUNK = 500
for first = 1, #gone, CHUNK do
  local ids, records = {}, {}
  for i = first, math.min(first + CHUNK - 1, #gone) do
    ids[#ids + 1] = gone[i]
    records[#records + 1] = ARGV[3] .. gone[i]
  end
  redis.call("DEL", unpack(records))
  redis.call("ZREM", KEYS[1], unpack(ids))
  for k = 5, #KEYS do
    redis.call("ZREM", KEYS[k], unpack(ids))
  end
end

local workers = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", cutoff)
if #workers > 0 then
  local old = {}
  for i = 1, #workers do old[workers[i]] = true end
  -- field JSON [task, type, worker] / [task, worker, bucket]
  for _, spec in ipairs({{KEYS[3], 3}, {KEYS[4], 2}}) do
    local fields = redis.call("HKEYS", spec[1])
    for i = 1, #fields do
      local ok, labels = pcall(cjson.decode, fields[i])
      if ok and type(labels) == "table" and old[labels[spec[2]]] then
        redis.call("HDEL", spec[1], fields[i])
      end
    end
  end
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", cutoff)
end
return #gone
