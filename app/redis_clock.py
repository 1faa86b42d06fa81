"""Redis's clock, as the project's Lua scripts read it.

Every script that stamps or compares a time (buffers, rejected bodies, the
node registry, the beat lease) reads ``TIME`` inside Redis, so hosts whose
clocks disagree still agree on windows, expiries and periods.  They must
also agree with each other on the unit and the rounding: one definition,
prepended to each script.  (The broker's scripts have the same in
``actors/broker/_lib.lua``, as a Lua function.)  ``TIME`` before a write
is allowed: Redis 7 replicates a script by its effects.
"""

__all__ = ["NOW_MS_LUA"]

#: Lua that sets the local ``now`` to Redis's clock in milliseconds.
NOW_MS_LUA = """
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
