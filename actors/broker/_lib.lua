-- Shared helpers, prepended to every script of this folder.
--
-- A queue list is kept sorted by priority so that LLEN counts every
-- waiting message once and the most urgent one is always at the tail,
-- where consumers take from (RPOP/LMOVE RIGHT).  Priorities use
-- Dramatiq's scale: lower numbers are more urgent.  From head (index 0)
-- to tail the numbers never increase; within one priority the oldest
-- message is nearest the tail.

-- Redis's clock in milliseconds: every process reads the same one, so
-- heartbeats, sweeps and delays do not depend on the hosts' clocks.
local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The priority written at the start of our envelopes, or 0 for a
-- foreign message (a Celery envelope left by the old deployment).
local function priority_of(element)
  local p = string.match(element, '^{"priority":(%-?%d+)')
  if p then
    return tonumber(p)
  end
  return 0
end

-- Insert element into the sorted list at key.
-- requeue=false: a new message goes behind every message of its own
-- priority.  requeue=true: a message given back goes in front of them.
local function insert_sorted(key, element, requeue)
  local priority = priority_of(element)
  -- Does an element of priority p stay on the head side of the new one?
  local function stays_left(p)
    if requeue then
      return p >= priority
    end
    return p > priority
  end

  local n = redis.call("LLEN", key)
  if n == 0 then
    redis.call("LPUSH", key, element)
    return
  end
  -- Fast paths: all equal or the new one is the least urgent (new), or
  -- the most urgent (requeue).
  if not requeue and not stays_left(priority_of(redis.call("LINDEX", key, 0))) then
    redis.call("LPUSH", key, element)
    return
  end
  if requeue and stays_left(priority_of(redis.call("LINDEX", key, -1))) then
    redis.call("RPUSH", key, element)
    return
  end

  -- Binary search for the first index whose element does not stay left.
  local lo, hi = 0, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if stays_left(priority_of(redis.call("LINDEX", key, mid))) then
      lo = mid + 1
    else
      hi = mid
    end
  end
  if lo >= n then
    redis.call("RPUSH", key, element)
  elseif lo == 0 then
    redis.call("LPUSH", key, element)
  else
    redis.call("LINSERT", key, "BEFORE", redis.call("LINDEX", key, lo), element)
  end
end

-- Give every element of an in-flight list back to its queue, oldest
-- first in line, and delete the list.  Returns how many moved.
local function give_back_all(inflight, queue)
  -- LMOVE ... LEFT puts the newest at the head: requeue newest first so
  -- that the oldest ends up nearest the tail.
  local elements = redis.call("LRANGE", inflight, 0, -1)
  for i = 1, #elements do
    insert_sorted(queue, elements[i], true)
  end
  redis.call("DEL", inflight)
  return #elements
end

-- Drop the dead letters of one queue that failed before cutoff (ms).
-- Returns how many went.
local function drop_dead_before(dead, records, cutoff)
  local expired = redis.call("ZRANGEBYSCORE", dead, "-inf", cutoff)
  for i = 1, #expired do
    redis.call("HDEL", records, expired[i])
  end
  if #expired > 0 then
    redis.call("ZREMRANGEBYSCORE", dead, "-inf", cutoff)
  end
  return #expired
end

-- Free the locks a worker process held (hash lock key -> token): each is
-- deleted only while it still holds that token, so a lock that expired and
-- was taken by another process stays with it.  Deletes the hash.  Returns
-- how many locks were freed.
local function release_held(held)
  local entries = redis.call("HGETALL", held)
  local freed = 0
  for i = 1, #entries, 2 do
    if redis.call("GET", entries[i]) == entries[i + 1] then
      redis.call("DEL", entries[i])
      freed = freed + 1
    end
  end
  redis.call("DEL", held)
  return freed
end
