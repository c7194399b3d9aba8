-- redis-breaker lib/rules.lua: the rolling window and the trip rules of the closed state (Rust
-- twin: `Call::window_sums`, `window_add`, `check_rules` in src/machine/).

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

-- Opens the breaker when a trip rule holds (closed state only). Under a quorum the fleet's
-- outcomes open nothing: each process applies the rules to its own and reports (`report`).
local function check_rules(S, c)
  if S.state ~= 'closed' or c.quorum_mode then return end
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

-- A read of the reporters (6) or processes (7) key: nil when it has another type (set by hand:
-- replaced at commit); any other refusal (NOPERM) is raised, before anything is written.
local function read_quorum_key(k, cmd, ...)
  local r = rpcall(cmd, KEYS[k], ...)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return nil end
    error('redis-breaker: ' .. string.lower(cmd) .. ' on ' .. KEYS[k] .. ' refused (a breaker under a quorum needs '
      .. '+zcount +zscore +zremrangebyscore +zrem): ' .. r.err, 0)
  end
  return r
end

-- A process's report under the quorum rule (RECORD.report; Rust twin: `Call::report`):
-- 'failing' when its own breaker opened (its own outcomes met the trip rule) or reopened,
-- 'recovered' when it closed again. The fleet opens, once, when `quorum` distinct processes
-- reported failing within the window (the caller included) and, with a quorum_fraction, at
-- least that fraction of the processes that recorded calls within it; below that the caller
-- is added as a reporter and the fleet stays closed. Reports reach a closed fleet only: once
-- the fleet is open, every process is held by it.

-- Entries of the ZSET key k within (now - window, now], the caller counted whether it is in
-- there or not (nil key: another type, queued to be replaced).
local function count_with_caller(S, c, k)
  local since = mmax(c.now - c.window, 0)
  local n = read_quorum_key(k, 'ZCOUNT', '(' .. int(since), c.now)
  if n == nil then
    local drop = own(S, 'drop')
    drop[#drop + 1] = KEYS[k]
    return 1
  end
  local at = tonumber(read_quorum_key(k, 'ZSCORE', c.reporter))
  if at and at > since and at <= c.now then return n end
  return n + 1
end

-- Whether the processes key (7) has collected for a fifth of the window: every process that
-- recorded calls has then said so (about every tenth of the window, with a flush at most
-- flush_interval <= window/10 late). Until then (a new key, or one Redis lost in a restart or a
-- failover) the count is partial and a fraction of it is not decided: a report waits (it is
-- added; the process says it again every quarter window, and that decides).
local function processes_known(c)
  local since = tonumber(read_quorum_key(7, 'ZSCORE', PROCESSES_SINCE))
  return since ~= nil and 5 * (c.now + since) >= c.window
end

local function report(S, c, action)
  if action == '' or c.reporter == '' then return end
  if action == 'recovered' then
    S.reporters = 'remove'
    return
  end
  if S.state ~= 'closed' or not c.quorum_mode then return end
  local n = count_with_caller(S, c, 6)
  local required = c.quorum
  local known = true
  if c.fraction > 0 then
    -- (less a hair: 0.14 x 50 is 7.000000000000001 in floating point, and means 7)
    required = mmax(required, math.ceil(c.fraction * count_with_caller(S, c, 7) - 1e-9))
    known = processes_known(c)
  end
  if n >= required and known then
    trip(S, c, fmt(REASON.quorum, n, required))
    S.reporters = 'clear'
  else
    S.reporters = 'add'
  end
end
