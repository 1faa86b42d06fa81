-- wrk script of the webhook benchmark: POST /webhook with pre-signed bodies
-- at a fixed rate.  Set by bench/web_bench.py through the environment:
-- BENCH_BODIES (a file of "<signature>\t<body>" lines), BENCH_INTERVAL_MS
-- (each connection's interval between request starts: connections x 1000 /
-- rate), BENCH_THREADS (wrk's -t).
--
-- Each connection keeps a schedule (start + k x interval, by the wall
-- clock): it waits for its next slot, or sends at once when a slow answer
-- made it late, so a slow server does not lower the offered rate as a
-- plain think time would.  Latency is wrk's own, from send to answer.

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  local path = os.getenv("BENCH_BODIES")
  for line in io.lines(path) do
    local tab = string.find(line, "\t", 1, true)
    bodies[#bodies + 1] = { string.sub(line, 1, tab - 1), string.sub(line, tab + 1) }
  end
  if #bodies == 0 then
    error("no bodies in " .. path)
  end
  -- Each thread starts at its own place, so threads do not post the same wamid.
  local nthreads = tonumber(os.getenv("BENCH_THREADS")) or 1
  index = math.floor(#bodies / nthreads) * id
  interval = tonumber(os.getenv("BENCH_INTERVAL_MS"))
  next_slot = nil
end

-- wrk calls delay() before each request of a connection; one Lua state
-- serves all connections of a thread, so the schedule is per thread,
-- shared by its connections, and each request takes the next slot.
function delay()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now
  end
  local wait = next_slot - now
  next_slot = math.max(next_slot, now - interval * 10) + interval
  if wait > 0 then
    return math.floor(wait)
  end
  return 0
end

function request()
  index = index % #bodies + 1
  local entry = bodies[index]
  return wrk.format("POST", "/webhook", {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = entry[1],
  }, entry[2])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
