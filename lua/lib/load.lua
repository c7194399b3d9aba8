-- redis-breaker lib/load.lua: reads one breaker's keys into S and repairs what is corrupt; writes
-- nothing (the deletes a repair needs are queued for commit).

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

-- The empty list every list of S starts as (most calls fill none of them: a table made is
-- time spent allocating and collecting it). Shared, so never written: `own` gives S its own
-- table first, and a write to EMPTY itself is an error, not state carried into another call.
local EMPTY = setmetatable({}, { __newindex = function(_, _, v)
  if v ~= nil then error('redis-breaker: internal: write to the shared empty table', 0) end
end })

-- S's own table in field f (events, drop, metrics, P, W, Wadd or Wdel), to write into.
local function own(S, f)
  local t = S[f]
  if t == EMPTY then
    t = {}
    S[f] = t
  end
  return t
end

-- A fresh, empty state: closed, epoch 0, nothing stored. One table constructor (every field
-- of INT_FIELDS among them), so the table is made at its size once.
local function empty_state(c)
  return { exists = false, state = 'closed', reason = '', config = '', dirty = false,
    incarnation = 0, epoch = 0, failures = 0, fseq = 0, successes = 0, trips = 0, opened_at = 0,
    open_until = 0, changed_at = 0, failed_at = 0, ramp_until = 0, ramp_ms = 0, ramp_permille = 0, ttl_at = 0, quorum = nil, reporters = '', active = false,
    stored = false, unannounced = false,
    keep_config = false,
    events = EMPTY, drop = EMPTY, metrics = EMPTY, P = EMPTY, probes_dirty = false, W = EMPTY,
    fresh_window = false, Wadd = EMPTY, Wdel = EMPTY, window = c.window, window_stored = false }
end

-- Reads the state hash into S (`raw`: its fields as read already, by count_failure in
-- lib/count.lua); answers what is corrupt in it (nil when nothing is).
local function load_state(S, c, raw)
  raw = raw or read('HMGET', KEYS[1], 'state', 'reason', 'config', 'ttl_at', 'quorum', unpack(INT_FIELDS_ANNOUNCED))
  if not raw then
    local drop = own(S, 'drop')
    drop[#drop + 1] = KEYS[1]
    return 'state key had type ' .. key_type(KEYS[1])
  end
  for i = 1, #INT_FIELDS + 5 do
    if raw[i] then
      S.exists = true
      break
    end
  end
  if not S.exists then return nil end
  local problem = nil
  if raw[1] then S.state = raw[1] end
  if not STATES[S.state] then problem = "field state was '" .. S.state .. "'" end
  S.reason = raw[2] or ''
  S.config = raw[3] or ''
  -- When the TTLs were last set in full (bookkeeping: a bad value only makes them due now).
  local ttl_at = tonumber(raw[4])
  if ttl_at and ttl_at == ttl_at and ttl_at > 0 and ttl_at <= MAX_INT then S.ttl_at = ttl_at end
  -- The quorum rule of the last process that wrote (text; absent: '1').
  S.quorum = raw[5] or nil
  -- Present (any value; the scripts write '0') while the state's last transition was not
  -- announced on the events channel: readers then trust it for the short bound only.
  if raw[#INT_FIELDS + 6] then S.unannounced = true end
  for i = 1, #INT_FIELDS do
    local f = INT_FIELDS[i]
    local v = raw[i + 5]
    if v then
      local n = tonumber(v)
      if n == nil or n ~= n or n < 0 or n > MAX_INT or n % 1 ~= 0 then
        problem = problem or ("field " .. f .. " was '" .. string.sub(v, 1, 40) .. "'")
      else
        S[f] = n
      end
    end
  end
  if S.incarnation == 0 then S.dirty = true end
  -- What was read (state, reason, config, ttl_at, quorum, then INT_FIELDS in order), so commit
  -- writes only the fields that changed.
  if not problem then
    raw[1], raw[2], raw[3], raw[4], raw[5] = S.state, S.reason, S.config, S.ttl_at, S.quorum
    for i = 1, #INT_FIELDS do raw[i + 5] = S[INT_FIELDS[i]] end
    S.stored = raw
  end
  -- A state with a deadline must have a sane one: open with none, or any deadline further away
  -- than the longest duration we accept, was set by hand and would hold the breaker for ever.
  if problem then return problem end
  if S.state == 'open' and S.open_until == 0 then return 'open state had no deadline' end
  if S.open_until > c.now + MAX_DURATION then return 'deadline open_until was ' .. int(S.open_until) end
  return nil
end

-- Reads the probe leases into S.P. A lease ends at most probe_lease from now: a score set by
-- hand (+inf, 1e300, text) is brought back to that, so no value can hold a probe slot for ever.
local function load_probes(S, c)
  local flat = read('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  if not flat then
    local drop = own(S, 'drop')
    drop[#drop + 1] = KEYS[2]
    return
  end
  for i = 1, #flat, 2 do
    local exp = tonumber(flat[i + 1])
    if exp == nil or exp ~= exp or exp ~= floor(exp) or exp > c.now + c.lease then
      exp = c.now + c.lease
      S.probes_dirty = true
    end
    own(S, 'P')[flat[i]] = exp
  end
end

-- Reads the window buckets into S.W. Buckets are counted on the scale of the window length
-- stored with them (the first writer's), so processes with different windows add to one window
-- instead of deleting each other's buckets. A count that is not a sane integer is deleted
-- before any write.
local function load_window(S)
  local flat = read('HGETALL', KEYS[3])
  if not flat then
    local drop = own(S, 'drop')
    drop[#drop + 1] = KEYS[3]
    return
  end
  for i = 1, #flat, 2 do
    local k, n = flat[i], tonumber(flat[i + 1])
    local sane = n ~= nil and n == n and n >= 0 and n <= MAX_INT and n == floor(n)
    if k == 'len' then
      if sane and n >= 10 and n <= MAX_DURATION then
        S.window = n
        S.window_stored = true
      else
        local del = own(S, 'Wdel')
        del[#del + 1] = k
      end
    elseif sane then
      own(S, 'W')[k] = n
    else
      local del = own(S, 'Wdel')
      del[#del + 1] = k
    end
  end
end

-- What `load` does with the stored recovery ramp: nil (keep it), 'end' or 'cap'. A ramp counts
-- only as the close that began it wrote it (ramp_until = changed_at + ramp_ms: not one an older
-- writer left behind when it closed the breaker again, nor most set by hand), at most MAX_RAMP
-- long, with a start in (0, PER_MILLE]; any other ends. One that would run longer from now than
-- this caller's own ramp is brought back to it, and a caller with none ends it (as open_until is
-- brought back to max_recovery): no writer holds back a fleet's calls longer than the config of
-- every process that writes allows. (Rust twin: `ramp_check` in src/machine/.)
local function ramp_check(until_, ms, permille, changed_at, c)
  if until_ == 0 and ms == 0 and permille == 0 then return nil end
  if ms > MAX_RAMP or permille < 1 or permille > PER_MILLE or until_ ~= changed_at + ms
    or until_ > c.now + ms or c.ramp == 0 then
    return 'end'
  end
  if until_ > c.now + c.ramp then return 'cap' end
  return nil
end

-- Ends a recovery ramp (every transition does, and a reset).
local function end_ramp(S)
  if S.ramp_until > 0 or S.ramp_ms > 0 or S.ramp_permille > 0 then
    S.ramp_until, S.ramp_ms, S.ramp_permille = 0, 0, 0
    S.dirty = true
  end
end

-- Reads what the call needs into S (the state), P (probe leases) and W (window buckets); writes
-- nothing. Probes are read only while half-open and the window only while closed with a rate
-- rule on: every transition clears them. A corrupt state (bad field, wrong key type) is
-- replaced by a fresh closed one, and the reason says what was wrong; the deletes it needs are
-- queued for `commit`. `raw`: the state hash as read already, if it was.
local function load(c, raw)
  local S = empty_state(c)
  local problem = load_state(S, c, raw)
  if problem then
    local drop = own(S, 'drop')
    S = empty_state(c)
    S.drop = drop
    S.dirty = true
    S.fresh_window = true
    S.reason = fmt(REASON.corrupt, problem)
    drop[#drop + 1] = KEYS[1]
    drop[#drop + 1] = KEYS[2]
    S.events = { { from = 'corrupt', to = 'closed', reason = S.reason, epoch = 0 } }
    S.probes_dirty = true
    return S
  end
  if S.state == 'half_open' then load_probes(S, c) end
  if c.windowed and S.state == 'closed' then load_window(S) end
  -- An open deadline beyond this caller's max_recovery (set by hand, or by a writer with a longer
  -- one) is brought back to it, so no value can keep a breaker open for ever.
  if S.state == 'open' and S.open_until > c.now + c.max then
    S.open_until = c.now + c.max
    S.dirty = true
  end
  local ramp = ramp_check(S.ramp_until, S.ramp_ms, S.ramp_permille, S.changed_at, c)
  if ramp == 'end' then
    end_ramp(S)
  elseif ramp == 'cap' then
    S.ramp_until = c.now + c.ramp
    S.ramp_ms = S.ramp_until - S.changed_at
    S.dirty = true
  end
  return S
end
