-- redis-breaker lib/clock.lua: Redis's own clock. The first piece of every script, status.lua
-- included: Redis scripts cannot include one another, so the crate joins the lib files in front
-- of each script when it loads them (`script!` in src/store/scripts.rs).

-- Redis TIME as ms since the Unix epoch, and as µs (an incarnation is the µs a state was made).
local function redis_now_ms()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + (us - us % 1000) / 1000, s * 1000000 + us
end
