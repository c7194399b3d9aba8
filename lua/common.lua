-- redis-breaker: shared prelude, prepended to acquire.lua, record.lua and control.lua when the
-- crate loads them (Redis scripts cannot include one another). It reads and validates, and
-- holds the transitions every script may cause; it writes nothing until `commit` runs.
--
-- KEYS (every script):
--   1 state   HASH  breaker:{name}:state    the state machine
--   2 probes  ZSET  breaker:{name}:probes   half-open leases: member = permit id, score = expiry ms
--   3 window  HASH  breaker:{name}:window   rolling-window buckets "<bucket>:c|f|s"
--   4 metrics HASH  breaker:{name}:metrics  cumulative outcome counters
--
-- ARGV 1..21 (every script): the caller's clock override, config and id; from 22 on, the script's own.
--   1 now_ms ('' = Redis TIME; only tests send a value)   2 rand in [0,1) for the jitter
--   3 config fingerprint      4 failure_threshold (0 = rule off)   5 success_threshold
--   6 half_open_max_probes    7 base_recovery_ms   8 max_recovery_ms   9 multiplier  10 jitter
--   11 probe_lease_ms  12 state_ttl_ms  13 metrics_ttl_ms  14 failure_rate (0 = rule off)
--   15 slow_call_rate (0 = rule off)  16 minimum_calls  17 window_ms  18 events channel ('' = none)
--   19 breaker name (for events)   20 failure_expiry_ms   21 origin: the caller's client id (for
--   events, so each process can tell the transitions it caused; '' = none)
--
-- Reply (every script): { verdict, state, incarnation, epoch, failures, fseq, remaining_ms,
--   stored_config, reason }. remaining_ms is the time left to the state's next deadline (open_until,
--   the earliest probe lease when all are out, a forced state's end) or -1 when it has none.

-- Library functions as locals: every global use is a table lookup in the script's environment.
local tonumber, unpack, pairs, ipairs, next, type = tonumber, unpack, pairs, ipairs, next, type
local floor, mmin, mmax, fmt = math.floor, math.min, math.max, string.format
local rcall, rpcall = redis.call, redis.pcall

local MAX_INT = 9007199254740991
-- The longest duration any argument may carry (2^43 ms, about 278 years): a deadline now + this
-- stays an exact integer. A stored deadline further away than this was not written by us.
local MAX_DURATION = 8796093022208
-- What a caller rejected while every half-open probe is out is told to wait at most: a probe
-- usually ends long before its lease, and its outcome's event refreshes every snapshot.
local HALF_OPEN_RETRY = 1000
local STATES = { closed = true, open = true, half_open = true, forced_open = true, forced_closed = true }
local INT_FIELDS = { 'incarnation', 'epoch', 'failures', 'fseq', 'successes', 'trips', 'opened_at',
  'open_until', 'changed_at', 'failed_at' }

local function fail(what)
  error({ err = 'ERR redis-breaker: bad argument ' .. what })
end

local function int_arg(i, name, min)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= v or v < min or v > MAX_INT or v ~= floor(v) then fail(name) end
  return v
end

local function float_arg(i, name, min, max)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= v or v < min or v > max then fail(name) end
  return v
end

local function str_arg(i, name, max_len, allow_empty)
  local v = ARGV[i]
  if v == nil or #v > max_len or (not allow_empty and #v == 0) then fail(name) end
  return v
end

local function int(n)
  return fmt('%d', n)
end

local function redis_now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000), tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function parse_config()
  if #KEYS ~= 4 then error({ err = 'ERR redis-breaker: bad argument keys (expected 4)' }) end
  local c = {}
  local clock_ms, clock_us = redis_now_ms()
  if ARGV[1] == '' then c.now = clock_ms else c.now = int_arg(1, 'now_ms', 0) end
  c.clock_us = clock_us
  c.rand = float_arg(2, 'rand', 0, 1)
  c.fingerprint = str_arg(3, 'config', 64, false)
  c.failure_threshold = int_arg(4, 'failure_threshold', 0)
  c.success_threshold = int_arg(5, 'success_threshold', 1)
  c.max_probes = int_arg(6, 'half_open_max_probes', 1)
  c.base = int_arg(7, 'base_recovery', 1)
  c.max = int_arg(8, 'max_recovery', c.base)
  c.multiplier = float_arg(9, 'multiplier', 1, 1000)
  c.jitter = float_arg(10, 'jitter', 0, 1)
  c.lease = int_arg(11, 'probe_lease', 1)
  c.state_ttl = int_arg(12, 'state_ttl', 1)
  c.metrics_ttl = int_arg(13, 'metrics_ttl', 1)
  c.failure_rate = float_arg(14, 'failure_rate', 0, 1)
  c.slow_rate = float_arg(15, 'slow_call_rate', 0, 1)
  c.minimum_calls = int_arg(16, 'minimum_calls', 1)
  c.window = int_arg(17, 'window', 10)
  if c.window > MAX_DURATION then fail('window') end
  c.channel = str_arg(18, 'events channel', 512, true)
  c.name = str_arg(19, 'name', 200, false)
  c.failure_expiry = int_arg(20, 'failure_expiry', 1)
  if c.failure_expiry > MAX_DURATION then fail('failure_expiry') end
  c.origin = str_arg(21, 'origin', 64, true)
  c.windowed = c.failure_rate > 0 or c.slow_rate > 0
  return c
end

-- A read that Redis refuses (WRONGTYPE: a key set by hand) answers nil: the key then reads as
-- missing and is replaced by the next write.
local function read(cmd, key, ...)
  local r = rpcall(cmd, key, ...)
  if type(r) == 'table' and r.err then return nil end
  return r
end

local function key_type(key)
  return rcall('TYPE', key)['ok']
end

-- Reads what the call needs into S (the state), P (probe leases) and W (window buckets); writes
-- nothing. Probes are read only while half-open and the window only while closed with a rate
-- rule on: every transition clears them. A corrupt state (bad field, wrong key type) is
-- replaced by a fresh closed one, and the reason says what was wrong; the deletes it needs are
-- queued for `commit`.
local function load(c)
  local S = { exists = false, state = 'closed', reason = '', config = '', dirty = false,
    events = {}, drop = {}, metrics = {}, P = {}, W = {}, fresh_window = false, Wadd = {}, Wdel = {},
    window = c.window, window_stored = false }
  for _, f in ipairs(INT_FIELDS) do S[f] = 0 end

  local problem = nil
  local raw = read('HMGET', KEYS[1], 'state', 'reason', 'config', unpack(INT_FIELDS))
  if not raw then
    problem = 'state key had type ' .. key_type(KEYS[1])
    S.drop[#S.drop + 1] = KEYS[1]
  else
    for i = 1, #INT_FIELDS + 3 do
      if raw[i] then S.exists = true end
    end
    if S.exists then
      if raw[1] then S.state = raw[1] end
      if not STATES[S.state] then problem = "field state was '" .. S.state .. "'" end
      S.reason = raw[2] or ''
      S.config = raw[3] or ''
      for i, f in ipairs(INT_FIELDS) do
        local v = raw[i + 3]
        if v then
          local n = tonumber(v)
          if n == nil or n ~= n or n < 0 or n > MAX_INT or n ~= floor(n) then
            problem = problem or ("field " .. f .. " was '" .. string.sub(v, 1, 40) .. "'")
          else
            S[f] = n
          end
        end
      end
      if S.incarnation == 0 then S.dirty = true end
    end
  end

  -- A state with a deadline must have a sane one: open with none, or any deadline further away
  -- than the longest duration we accept, was set by hand and would hold the breaker for ever.
  if not problem then
    if S.state == 'open' and S.open_until == 0 then
      problem = 'open state had no deadline'
    elseif S.open_until > c.now + MAX_DURATION then
      problem = 'deadline open_until was ' .. int(S.open_until)
    end
  end

  if S.state == 'half_open' and not problem then
    local flat = read('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    if not flat then
      S.drop[#S.drop + 1] = KEYS[2]
    else
      -- A lease ends at most probe_lease from now: a score set by hand (+inf, 1e300, text) is
      -- brought back to that, so no value can hold a probe slot for ever.
      for i = 1, #flat, 2 do
        local exp = tonumber(flat[i + 1])
        if exp == nil or exp ~= exp or exp ~= floor(exp) or exp > c.now + c.lease then
          exp = c.now + c.lease
          S.probes_dirty = true
        end
        S.P[flat[i]] = exp
      end
    end
  end
  if c.windowed and S.state == 'closed' and not problem then
    local flat = read('HGETALL', KEYS[3])
    if not flat then
      S.drop[#S.drop + 1] = KEYS[3]
    else
      -- Buckets are counted on the scale of the window length stored with them (the first
      -- writer's), so processes with different windows add to one window instead of deleting
      -- each other's buckets. A count that is not a sane integer is deleted before any write.
      for i = 1, #flat, 2 do
        local k, n = flat[i], tonumber(flat[i + 1])
        local sane = n ~= nil and n == n and n >= 0 and n <= MAX_INT and n == floor(n)
        if k == 'len' then
          if sane and n >= 10 and n <= MAX_DURATION then
            S.window = n
            S.window_stored = true
          else
            S.Wdel[#S.Wdel + 1] = k
          end
        elseif sane then
          S.W[k] = n
        else
          S.Wdel[#S.Wdel + 1] = k
        end
      end
    end
  end

  if problem then
    S = { exists = false, state = 'closed', config = '', dirty = true, events = {}, drop = S.drop,
      metrics = {}, P = {}, W = {}, fresh_window = true, Wadd = {}, Wdel = {}, window = c.window,
      window_stored = false }
    for _, f in ipairs(INT_FIELDS) do S[f] = 0 end
    S.reason = 'corrupt state reset to closed: ' .. problem
    S.drop[#S.drop + 1] = KEYS[1]
    S.drop[#S.drop + 1] = KEYS[2]
    S.events[#S.events + 1] = { from = 'corrupt', to = 'closed', reason = S.reason, epoch = 0 }
    S.probes_dirty = true
  end
  -- An open deadline beyond this caller's max_recovery (set by hand, or by a writer with a longer
  -- one) is brought back to it, so no value can keep a breaker open for ever.
  if S.state == 'open' and S.open_until > c.now + c.max then
    S.open_until = c.now + c.max
    S.dirty = true
  end
  return S
end

local function matches(S, inc, epoch)
  return epoch == S.epoch and (inc == S.incarnation or (inc == 0 and S.epoch == 0))
end

local function transition(S, c, to, reason)
  S.events[#S.events + 1] = { from = S.state, to = to, reason = reason, epoch = S.epoch + 1 }
  S.state = to
  S.epoch = S.epoch + 1
  S.changed_at = c.now
  S.reason = reason
  S.failures = 0
  S.successes = 0
  S.P = {}
  S.probes_dirty = true
  S.dirty = true
end

local function metric(S, field, n)
  if n > 0 then S.metrics[field] = (S.metrics[field] or 0) + n end
end

local function clear_window(S, c)
  S.W = {}
  S.Wadd = {}
  S.Wdel = {}
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
    close(S, c, 'forced close expired')
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

local function window_sums(S, c)
  local cur = floor(c.now / floor(S.window / 10))
  local calls, fails, slow = 0, 0, 0
  for k, n in pairs(S.W) do
    local b, kind = string.match(k, '^(%d+):(%a)$')
    b = tonumber(b)
    if b == nil or b <= cur - 10 or b > cur then
      S.W[k] = nil
      S.Wdel[#S.Wdel + 1] = k
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
      S.W[k] = (S.W[k] or 0) + n
      S.Wadd[k] = (S.Wadd[k] or 0) + n
    end
  end
end

-- Opens the breaker when a trip rule holds (closed state only).
local function check_rules(S, c)
  if S.state ~= 'closed' then return end
  if c.failure_threshold > 0 and S.failures >= c.failure_threshold then
    trip(S, c, fmt('%d consecutive failures', S.failures))
    return
  end
  if not c.windowed then return end
  local calls, fails, slow = window_sums(S, c)
  if calls < c.minimum_calls then return end
  if c.failure_rate > 0 and fails / calls >= c.failure_rate then
    trip(S, c, fmt('failure rate %.2f >= %.2f over %d calls', fails / calls, c.failure_rate, calls))
  elseif c.slow_rate > 0 and slow / calls >= c.slow_rate then
    trip(S, c, fmt('slow call rate %.2f >= %.2f over %d calls', slow / calls, c.slow_rate, calls))
  end
end

-- The batch of counts a process gathered since its last script call: ARGV i .. i+8 are
-- incarnation, epoch, fseq (the oldest its successes had seen), successes, slow among them,
-- ignored, rejected, then the successes and failures of calls decided without Redis (while it
-- was down), which count in metrics only.
local function parse_batch(i)
  local b = {
    inc = int_arg(i, 'batch incarnation', 0),
    epoch = int_arg(i + 1, 'batch epoch', 0),
    fseq = int_arg(i + 2, 'batch fseq', 0),
    ok = int_arg(i + 3, 'batch successes', 0),
    slow = int_arg(i + 4, 'batch slow', 0),
    ignored = int_arg(i + 5, 'batch ignored', 0),
    rejected = int_arg(i + 6, 'batch rejected', 0),
    loose = int_arg(i + 7, 'batch degraded successes', 0),
    failed = int_arg(i + 8, 'batch degraded failures', 0),
  }
  if b.slow > b.ok then fail('batch slow') end
  return b
end

-- Counts a batch in metrics and, when it belongs to this closed epoch, in the window; its
-- successes reset the consecutive count only if no failure was recorded since they began.
local function apply_batch(S, c, b)
  metric(S, 'calls', b.ok + b.ignored + b.loose + b.failed)
  metric(S, 'successes', b.ok + b.loose)
  metric(S, 'failures', b.failed)
  metric(S, 'slow', b.slow)
  metric(S, 'rejected', b.rejected)
  if b.ok > 0 and S.state == 'closed' and matches(S, b.inc, b.epoch) then
    window_add(S, c, b.ok, 0, b.slow)
    if b.fseq == S.fseq and S.failures > 0 then
      S.failures = 0
      S.dirty = true
    end
    check_rules(S, c)
  end
end

local function remaining(S, c)
  local st = S.state
  if st == 'open' or st == 'forced_open' or st == 'forced_closed' then
    if S.open_until == 0 then return -1 end
    return mmax(0, S.open_until - c.now)
  elseif st == 'half_open' then
    if lease_count(S) < c.max_probes then return 0 end
    return mmin(HALF_OPEN_RETRY, mmax(0, earliest_lease(S) - c.now))
  end
  return -1
end

local STATE_FIELDS = { 'epoch', 'failures', 'fseq', 'successes', 'trips', 'opened_at', 'open_until', 'changed_at',
  'failed_at' }

-- One event as JSON. Only the last transition of a call knows its deadline; an earlier one says
-- 0 ("ask Redis"), which no reader caches.
local function json_event(c, S, e, last)
  local rem = 0
  if last then rem = remaining(S, c) end
  return fmt(
    '{"name":%s,"from":%s,"to":%s,"incarnation":%s,"epoch":%s,"fseq":%s,"retry_after_ms":%s,"reason":%s,"origin":%s}',
    cjson.encode(c.name), cjson.encode(e.from), cjson.encode(e.to), int(S.incarnation), int(e.epoch),
    int(S.fseq), int(rem), cjson.encode(e.reason), cjson.encode(c.origin))
end

-- How long the state and probe keys must live from now: state_ttl past the furthest deadline
-- the state holds (open_until, the last probe lease), so a state never expires while in force.
local function state_key_ttl(S, c)
  local horizon = S.open_until
  for _, exp in pairs(S.P) do
    if exp > horizon then horizon = exp end
  end
  local ttl = c.state_ttl
  if horizon > c.now then ttl = ttl + (horizon - c.now) end
  return ttl
end

-- HINCRBY that repairs instead of failing: a value set by hand that is not an integer, or one
-- that would overflow, is replaced by the increment (the script has already written; an error
-- now would half-apply it).
local function incr(key, field, n)
  local r = rpcall('HINCRBY', key, field, n)
  if type(r) == 'table' and r.err then rcall('HSET', key, field, int(n)) end
end

-- Writes everything the decision changed, refreshes TTLs, then publishes (last, and with pcall:
-- a refused PUBLISH must not turn an applied transition into an error).
local function commit(S, c)
  -- The last check before the first write: a metrics key of the wrong type is replaced.
  if next(S.metrics) ~= nil then
    local t = key_type(KEYS[4])
    if t ~= 'none' and t ~= 'hash' then S.drop[#S.drop + 1] = KEYS[4] end
  end
  for _, k in ipairs(S.drop) do rcall('DEL', k) end
  local ttl = state_key_ttl(S, c)
  local forever = (S.state == 'forced_open' or S.state == 'forced_closed') and S.open_until == 0
  -- Any state but closed is kept alive by every script that reads it, written or not.
  local in_force = S.state ~= 'closed' and S.exists
  if S.dirty then
    if S.incarnation == 0 then S.incarnation = c.clock_us end
    local config = c.fingerprint
    if S.keep_config then config = S.config end
    local args = { 'state', S.state, 'incarnation', int(S.incarnation), 'reason', S.reason, 'config', config }
    for _, f in ipairs(STATE_FIELDS) do
      args[#args + 1] = f
      args[#args + 1] = int(S[f])
    end
    rcall('HSET', KEYS[1], unpack(args))
  end
  if S.dirty or in_force then
    if forever then
      rcall('PERSIST', KEYS[1])
    else
      rcall('PEXPIRE', KEYS[1], ttl)
    end
  end
  if S.probes_dirty then
    rcall('DEL', KEYS[2])
    local args = {}
    for id, exp in pairs(S.P) do
      args[#args + 1] = int(exp)
      args[#args + 1] = id
    end
    if #args > 0 then
      rcall('ZADD', KEYS[2], unpack(args))
      rcall('PEXPIRE', KEYS[2], ttl)
    end
  elseif in_force and next(S.P) ~= nil then
    rcall('PEXPIRE', KEYS[2], ttl)
  end
  -- The window changes in place: expired buckets deleted, new counts added.
  if S.fresh_window then
    rcall('DEL', KEYS[3])
  elseif #S.Wdel > 0 then
    rcall('HDEL', KEYS[3], unpack(S.Wdel))
  end
  if next(S.Wadd) ~= nil then
    for k, n in pairs(S.Wadd) do incr(KEYS[3], k, n) end
    if not S.window_stored then rcall('HSET', KEYS[3], 'len', int(S.window)) end
    rcall('PEXPIRE', KEYS[3], S.window + floor(S.window / 10))
  end
  if next(S.metrics) ~= nil then
    for f, n in pairs(S.metrics) do incr(KEYS[4], f, n) end
    rcall('HSETNX', KEYS[4], 'since', int(c.now))
    rcall('PEXPIRE', KEYS[4], c.metrics_ttl)
  end
  if c.channel ~= '' then
    for i, e in ipairs(S.events) do
      rpcall('PUBLISH', c.channel, json_event(c, S, e, i == #S.events))
    end
  end
end

local function reply(S, c, verdict)
  return { verdict, S.state, int(S.incarnation), int(S.epoch), int(S.failures), int(S.fseq),
    int(remaining(S, c)), S.config, S.reason }
end
