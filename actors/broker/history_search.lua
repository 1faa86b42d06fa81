-- Filter one slice of the monitor's task history in Redis, newest first,
-- without shipping every record to the monitor.  The caller walks the
-- index slice by slice, so no call blocks Redis for long.
-- KEYS[1] index zset (the history's, or one state's).
-- ARGV[1] prefix of a task's record key, ARGV[2] task name ("" any; the
-- runbook's name or the Celery one), ARGV[3] the Celery module's prefix
-- ("tasks."), ARGV[4] worker ("" any), ARGV[5] lower-case text to search
-- for ("" none), ARGV[6] first rank of the slice, ARGV[7] its size,
-- ARGV[8] most matches to return, ARGV[9..] the searched fields.
-- Returns {ids read, matches, id1, score1, id2, score2, ...}.
-- Record fields hold JSON values.
local function text(raw)
  if not raw then return "" end
  -- a plain JSON string needs no decoding
  if string.sub(raw, 1, 1) == '"' and not string.find(raw, "\\", 1, true) then
    return string.sub(raw, 2, -2)
  end
  local ok, value = pcall(cjson.decode, raw)
  if not ok then return raw end
  if type(value) == "string" then return value end
  if type(value) == "number" or type(value) == "boolean" then return tostring(value) end
  return ""
end

local name, module, worker, needle = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local first, size, wanted = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local fields = {"name", "worker"}
if needle ~= "" then
  for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
end
local ids = redis.call("ZREVRANGE", KEYS[1], first, first + size - 1, "WITHSCORES")
local matches, found = 0, {}
for i = 1, #ids, 2 do
  local values = redis.call("HMGET", ARGV[1] .. ids[i], unpack(fields))
  local ok = values[1] ~= false
  if ok and name ~= "" then
    local n = text(values[1])
    ok = n == name or module .. n == name
  end
  if ok and worker ~= "" then ok = text(values[2]) == worker end
  if ok and needle ~= "" then
    local parts = {}
    for j = 3, #values do parts[#parts + 1] = text(values[j]) end
    ok = string.find(string.lower(table.concat(parts, " ")), needle, 1, true) ~= nil
  end
  if ok then
    matches = matches + 1
    if matches <= wanted then
      found[#found + 1] = ids[i]
      found[#found + 1] = ids[i + 1]
    end
  end
end
table.insert(found, 1, matches)
table.insert(found, 1, #ids / 2)
return found
