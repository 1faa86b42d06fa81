-- The enqueue time (ms) of the oldest waiting message of a queue list, or
-- false when it is empty, without reading the whole list.
-- KEYS[1] queue list.  ARGV[1] elements read at the tail of each priority band.
-- Within one priority band the oldest message sits nearest the tail
-- (insert_sorted), so each band's last few elements are read; a band's
-- first index is found by binary search with LINDEX, as insert_sorted does.
local per_band = tonumber(ARGV[1])
local last = redis.call("LLEN", KEYS[1]) - 1
local oldest = false
local bands = 0
while last >= 0 and bands < 64 do
  bands = bands + 1
  local p = priority_of(redis.call("LINDEX", KEYS[1], last))
  -- First index whose priority is not above p (from head to tail they never increase).
  local lo, hi = 0, last
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if priority_of(redis.call("LINDEX", KEYS[1], mid)) > p then
      lo = mid + 1
    else
      hi = mid
    end
  end
  local from = math.max(lo, last - per_band + 1)
  local tail = redis.call("LRANGE", KEYS[1], from, last)
  for i = 1, #tail do
    local stamp = string.match(tail[i], '"message_timestamp":%s*(%d+)')
    if stamp then
      stamp = tonumber(stamp)
      if oldest == false or stamp < oldest then
        oldest = stamp
      end
    end
  end
  last = lo - 1
end
return oldest
