-- redis-breaker lib/transitions.lua: the moves between states, leases and time-driven moves
-- (Rust twin: `Call::transition`, `close`, `trip`, `advance`, `purge_leases` in src/machine/).

local function matches(S, inc, epoch)
  return epoch == S.epoch and (inc == S.incarnation or (inc == 0 and S.epoch == 0))
end

-- Starts the caller's recovery ramp (half_open -> closed on probe successes), if it has one: the
-- fleet then admits a fraction of its calls rising from ramp_permille to all until ramp_until.
local function start_ramp(S, c)
  if c.ramp > 0 then
    S.ramp_until, S.ramp_ms, S.ramp_permille = c.now + c.ramp, c.ramp, c.ramp_permille
    S.dirty = true
  end
end

-- The time left of the recovery ramp of a closed breaker (0: none).
local function ramp_left(S, c)
  if S.state == 'closed' and S.ramp_until > c.now then return S.ramp_until - c.now end
  return 0
end

local function transition(S, c, to, reason)
  local events = own(S, 'events')
  events[#events + 1] = { from = S.state, to = to, reason = reason, epoch = S.epoch + 1 }
  S.state = to
  S.epoch = S.epoch + 1
  S.changed_at = c.now
  S.reason = reason
  S.failures = 0
  S.successes = 0
  S.P = EMPTY
  S.probes_dirty = true
  S.dirty = true
  end_ramp(S)
end

local function metric(S, field, n)
  if n > 0 then
    local m = own(S, 'metrics')
    m[field] = (m[field] or 0) + n
  end
end

local function clear_window(S, c)
  S.W = EMPTY
  S.Wadd = EMPTY
  S.Wdel = EMPTY
  S.fresh_window = true
  S.window = c.window
  S.window_stored = false
end

local function close(S, c, reason)
  transition(S, c, 'closed', reason)
  S.trips = 0
  S.opened_at = 0
  S.open_until = 0
  clear_window(S, c)
end

local function to_half_open(S, c, reason)
  transition(S, c, 'half_open', reason)
end

local function trip(S, c, reason)
  S.trips = S.trips + 1
  local d = mmin(c.max, c.base * c.multiplier ^ (S.trips - 1))
  local lo = d * (1 - c.jitter)
  local hi = mmin(c.max, d * (1 + c.jitter))
  local open_ms = floor(lo + c.rand * (hi - lo))
  if open_ms < 1 then open_ms = 1 end
  transition(S, c, 'open', reason)
  S.opened_at = c.now
  S.open_until = c.now + open_ms
  metric(S, 'opened', 1)
end

-- Time-driven moves every script makes before its own: a forced close that has run its course;
-- failures of the consecutive rule that are older than failure_expiry (the count starts again
-- when no failure was recorded for that long).
local function advance(S, c)
  if S.state == 'forced_closed' and S.open_until > 0 and c.now >= S.open_until then
    close(S, c, REASON.forced_close_expired)
  end
  if S.state == 'closed' and S.failures > 0 and c.now - S.failed_at >= c.failure_expiry then
    S.failures = 0
    S.dirty = true
  end
end

-- Drops expired probe leases (a dead worker's lease ends at its expiry).
local function purge_leases(S, c)
  for id, exp in pairs(S.P) do
    if exp <= c.now then
      S.P[id] = nil
      S.probes_dirty = true
    end
  end
end

local function lease_count(S)
  local n = 0
  for _ in pairs(S.P) do n = n + 1 end
  return n
end

local function earliest_lease(S)
  local e = nil
  for _, exp in pairs(S.P) do
    if e == nil or exp < e then e = exp end
  end
  return e
end
