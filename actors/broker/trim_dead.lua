-- Drop dead letters older than ARGV[1] ms.  KEYS: pairs of (dead zset,
-- dead hash).  Returns how many were dropped.
local cutoff = now_ms() - tonumber(ARGV[1])
local dropped = 0
for i = 1, #KEYS, 2 do
  local expired = redis.call("ZRANGEBYSCORE", KEYS[i], "-inf", cutoff)
  for j = 1, #expired do
    redis.call("HDEL", KEYS[i + 1], expired[j])
  end
  if #expired > 0 then
    redis.call("ZREMRANGEBYSCORE", KEYS[i], "-inf", cutoff)
  end
  dropped = dropped + #expired
end
return dropped
