-- Drop dead letters older than ARGV[1] ms.  KEYS: pairs of (dead zset,
-- dead hash).  Returns how many were dropped.
local cutoff = now_ms() - tonumber(ARGV[1])
local dropped = 0
for i = 1, #KEYS, 2 do
  dropped = dropped + drop_dead_before(KEYS[i], KEYS[i + 1], cutoff)
end
return dropped
