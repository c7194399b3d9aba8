-- redis-breaker lib/count.lua: a failure that only counts — the record of a failure in a closed
-- breaker that trips nothing — in five commands (TIME, two HMGET, two HSET) instead of the
-- general path's six and its bookkeeping (Rust twin: the closed branch of `Machine::record` in
-- src/machine/, which needs no shortcut: this one writes exactly what the general path would).
-- Anything else is left to the general path (`load` ... `commit`), which then reuses the state
-- hash read here: a breaker that is not closed, a config or quorum rule that differs from the
-- stored one, TTLs due for their refresh, a value the general path would repair, a trip, a batch
-- with counts or sent again, a lane or metrics hash that is new, a stale permit, a slow call, a
-- timeout, a quorum or a window.

-- The state hash fields `load_state` reads, in its order.
local STATE_FIELDS = { 'state', 'reason', 'config', 'ttl_at', 'quorum', unpack(INT_FIELDS_ANNOUNCED) }

-- A field of the state hash as load_state takes it without repairing it: an integer in
-- [0, MAX_INT] (nil: not one).
local function sane(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n < 0 or n > MAX_INT or n % 1 ~= 0 then return nil end
  return n
end

-- A metrics counter HINCRBY takes as it is, at least 1 (`incr` in lib/commit.lua calls a field
-- that was 0 new, and repairs one that is not an integer): its decimal digits, no more.
local function counter(v)
  local n = sane(v)
  if n == nil or n < 1 or n >= MAX_INT or int(n) ~= v then return nil end
  return n
end

-- Answers the reply when the failure was counted here, else nil and the state hash as read (nil
-- when it could not be read), for `load`. Reads before it writes; nothing is written unless it
-- answers a reply. `state` and `metrics`: the breaker's state and metrics keys (KEYS[1] and
-- KEYS[4] of record.lua; count.lua has only these two).
local function count_failure(c, b, p_inc, p_epoch, state, metrics)
  local raw = read('HMGET', state, unpack(STATE_FIELDS))
  if not raw or raw[1] ~= 'closed' or raw[3] ~= c.fingerprint or (raw[5] or '1') ~= c.quorum_text then
    return nil, raw
  end
  local now = c.now
  -- The TTLs are set in full at most every tenth of the shorter TTL (see `commit`): not due.
  local ttl_at = sane(raw[4])
  if not ttl_at or ttl_at == 0 or now < ttl_at or now - ttl_at >= floor(mmin(c.state_ttl, c.metrics_ttl) / 10) then
    return nil, raw
  end
  -- Every integer field sane (else the general path repairs the state); most are '0'.
  for i = 6, #INT_FIELDS + 5 do
    local f = raw[i]
    if f and f ~= '0' and not sane(f) then return nil, raw end
  end
  local incarnation, epoch, failures, fseq = tonumber(raw[6]) or 0, tonumber(raw[7]) or 0, tonumber(raw[8]) or 0,
    tonumber(raw[9]) or 0
  local open_until, failed_at = tonumber(raw[13]) or 0, tonumber(raw[15]) or 0
  if incarnation == 0 or open_until > now + MAX_DURATION then return nil, raw end
  -- A recovery ramp `load` would end or bring back (see ramp_check) is the general path's.
  local ramp_until, ramp_ms, ramp_permille = tonumber(raw[16]) or 0, tonumber(raw[17]) or 0, tonumber(raw[18]) or 0
  if ramp_check(ramp_until, ramp_ms, ramp_permille, tonumber(raw[14]) or 0, c) then return nil, raw end
  if not (epoch == p_epoch and (p_inc == incarnation or (p_inc == 0 and epoch == 0))) then return nil, raw end
  -- advance: the consecutive count starts again after failure_expiry with no failure.
  if failures > 0 and now - failed_at >= c.failure_expiry then failures = 0 end
  failures, fseq = failures + 1, fseq + 1
  if c.failure_threshold > 0 and failures >= c.failure_threshold then return nil, raw end
  -- The metrics hash: its counters and the lane's field exist already (a new one is the general
  -- path's: `since`, the TTL, the sweep of old lanes) and are sane.
  local lane = 'batch:' .. b.sender
  local m = rpcall('HMGET', metrics, 'calls', 'failures', lane)
  if type(m) ~= 'table' or m.err then return nil, raw end
  local calls, failed = counter(m[1]), counter(m[2])
  if not calls or not failed or (b.sender ~= '' and not m[3]) then
    return nil, raw
  end

  rcall('HSET', state, 'failures', failures, 'fseq', fseq, 'failed_at', now)
  if b.sender == '' then
    rcall('HSET', metrics, 'calls', calls + 1, 'failures', failed + 1)
  else
    -- remember_batch: when the lane's batch was applied, and its seq.
    local seen = now * 1000 + b.seq % 1000
    if seen > MAX_INT then seen = b.seq % 1000 end
    rcall('HSET', metrics, 'calls', calls + 1, 'failures', failed + 1, lane, int(seen))
  end
  local announced = 1
  if raw[#INT_FIELDS + 6] then announced = 0 end
  -- The recovery ramp, as `reply` answers it (a ramp `load` would end was sent to it above).
  local left, ramp_ms, ramp_permille = ramp_until - now, 0, 0
  if left > 0 then ramp_ms, ramp_permille = tonumber(raw[17]) or 0, tonumber(raw[18]) or 0 else left = 0 end
  return { [REPLY.verdict] = 'applied', [REPLY.state] = 'closed', [REPLY.incarnation] = incarnation,
    [REPLY.epoch] = epoch, [REPLY.failures] = failures, [REPLY.fseq] = fseq, [REPLY.remaining_ms] = -1,
    [REPLY.stored_config] = raw[3], [REPLY.reason] = raw[2] or '', [REPLY.announced] = announced,
    [REPLY.ramp_left_ms] = left, [REPLY.ramp_ms] = ramp_ms, [REPLY.ramp_permille] = ramp_permille }
end
