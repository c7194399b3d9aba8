-- redis-breaker lib/rules.lua: the rolling window and the trip rules of the closed state (Rust
-- twin: `Call::window_sums`, `window_add`, `check_rules` in src/machine.rs).

local function window_sums(S, c)
  local cur = floor(c.now / floor(S.window / 10))
  local calls, fails, slow = 0, 0, 0
  for k, n in pairs(S.W) do
    local b, kind = string.match(k, '^(%d+):(%a)$')
    b = tonumber(b)
    if b == nil or b <= cur - 10 or b > cur then
      S.W[k] = nil
      local del = own(S, 'Wdel')
      del[#del + 1] = k
    elseif kind == 'c' then calls = calls + n
    elseif kind == 'f' then fails = fails + n
    elseif kind == 's' then slow = slow + n
    end
  end
  return calls, fails, slow
end

local function window_add(S, c, calls, fails, slow)
  if not c.windowed or calls == 0 then return end
  local cur = floor(c.now / floor(S.window / 10))
  for kind, n in pairs({ c = calls, f = fails, s = slow }) do
    if n > 0 then
      local k = int(cur) .. ':' .. kind
      local W, add = own(S, 'W'), own(S, 'Wadd')
      W[k] = (W[k] or 0) + n
      add[k] = (add[k] or 0) + n
    end
  end
end

-- Opens the breaker when a trip rule holds (closed state only).
local function check_rules(S, c)
  if S.state ~= 'closed' then return end
  if c.failure_threshold > 0 and S.failures >= c.failure_threshold then
    trip(S, c, fmt(REASON.consecutive, S.failures))
    return
  end
  if not c.windowed then return end
  local calls, fails, slow = window_sums(S, c)
  if calls < c.minimum_calls then return end
  if c.failure_rate > 0 and fails / calls >= c.failure_rate then
    trip(S, c, fmt(REASON.failure_rate, fails / calls, c.failure_rate, calls))
  elseif c.slow_rate > 0 and slow / calls >= c.slow_rate then
    trip(S, c, fmt(REASON.slow_rate, slow / calls, c.slow_rate, calls))
  end
end
