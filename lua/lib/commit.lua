-- redis-breaker lib/commit.lua: writes what a call changed, keeps TTLs, publishes events and
-- builds the reply (Rust twin: the end of `Machine::run` and `Call::reply` in src/machine/).

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

-- One event as JSON. Only the last transition of a call knows its deadline; an earlier one says
-- 0 ("ask Redis"), which no reader caches.
-- The last one also carries the recovery ramp it began (ramp_left_ms, ramp_ms, ramp_permille).
local function json_event(c, S, e, last)
  local rem, ramp = 0, ''
  if last then
    rem = remaining(S, c)
    local left = ramp_left(S, c)
    if left > 0 then
      ramp = fmt(',"ramp_left_ms":%d,"ramp_ms":%d,"ramp_permille":%d', left, S.ramp_ms, S.ramp_permille)
    end
  end
  return fmt(
    '{"name":%s,"from":%s,"to":%s,"incarnation":%d,"epoch":%d,"fseq":%d,"retry_after_ms":%d,"reason":%s,"origin":%s%s}',
    cjson.encode(c.name), cjson.encode(e.from), cjson.encode(e.to), S.incarnation, e.epoch, S.fseq, rem,
    cjson.encode(e.reason), cjson.encode(c.origin), ramp)
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

-- HINCRBY that repairs instead of failing (the script has already written; an error now would
-- half-apply it): a key of another type set by hand is replaced by a hash, a value that is not
-- an integer, or one that would overflow, by the increment. Answers whether the field is new.
local function incr(key, field, n)
  local r = rpcall('HINCRBY', key, field, n)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then rcall('DEL', key) end
    rcall('HSET', key, field, n)
    return true
  end
  return r == n
end

-- Adds the caller to a ZSET of the quorum's bookkeeping (reporters, processes) at now: entries
-- older than the longest window of the key's writers (LONGEST_WINDOW, this caller's included:
-- an entry still counts for them) and entries from the future are swept, a key of another type
-- set by hand is replaced, and the key lives at least a window from now (never shortened: a
-- process with a longer window may have written it). The processes key also keeps when it began
-- collecting (PROCESSES_SINCE, added once: `ZADD NX`), so a fraction is not decided on a key
-- that is still refilling.
local function add_caller(key, c)
  local keep = c.window
  local longest = tonumber(rpcall('ZSCORE', key, LONGEST_WINDOW))
  if longest and -longest > keep then keep = -longest end
  rpcall('ZREMRANGEBYSCORE', key, 0, c.now - keep)
  rpcall('ZREMRANGEBYSCORE', key, '(' .. int(c.now), '+inf')
  local added = rpcall('ZADD', key, c.now, c.reporter)
  if type(added) == 'table' and added.err and string.sub(added.err, 1, 9) == 'WRONGTYPE' then
    rcall('DEL', key)
    rcall('ZADD', key, c.now, c.reporter)
  end
  rcall('ZADD', key, 'LT', -c.window, LONGEST_WINDOW)
  if key == KEYS[7] then rcall('ZADD', key, 'NX', -c.now, PROCESSES_SINCE) end
  if rcall('PTTL', key) < c.window then rcall('PEXPIRE', key, c.window) end
end

-- Whether this call's events can reach the processes that listen: an events channel is set
-- and, where Redis can tell before anything is written (>= 7.0, redis.acl_check_cmd), this user
-- may publish on it (SPUBLISH on the breaker's own channel when events are sharded). Before 7.0
-- the PUBLISH itself tells (see `commit`).
local function may_announce(c)
  local cmd, channel = 'PUBLISH', c.channel
  if c.shard_channel ~= '' then cmd, channel = 'SPUBLISH', c.shard_channel end
  if channel == '' then return false end
  if not redis.acl_check_cmd then return true end
  local ran, allowed = pcall(redis.acl_check_cmd, cmd, channel, 'm')
  return not ran or allowed == true
end

-- Writes everything the decision changed, refreshes TTLs, then publishes (last, and with pcall:
-- a refused PUBLISH must not turn an applied transition into an error).
-- A transition whose events cannot be announced (no channel, or publishing refused) is marked in
-- the state hash (`announced` = 0) until an announced transition replaces it: every reply about
-- such a state says so (`S.unannounced`), and processes trust it for the short bound only.
local function commit(S, c)
  for i = 1, #S.drop do rcall('DEL', S.drop[i]) end
  local announce = #S.events > 0 and may_announce(c)
  local ttl = state_key_ttl(S, c)
  local forever = (S.state == 'forced_open' or S.state == 'forced_closed') and S.open_until == 0
  -- Any state but closed is kept alive by every script that reads it, written or not.
  local in_force = S.state ~= 'closed' and S.exists
  -- A closed state's TTL and the metrics' TTL are set in full at most every tenth of the
  -- shorter of the two (6 min by default), not on every write: `ttl_at` in the state hash says
  -- when they last were, so each key lives 0.9 to 1 times its TTL past its last write. A
  -- state in force, a transition and a new key always set theirs.
  local refresh = floor(mmin(c.state_ttl, c.metrics_ttl) / 10)
  local ttl_due = S.ttl_at == 0 or c.now < S.ttl_at or c.now - S.ttl_at >= refresh
  local refresh_ttls = ttl_due and (S.dirty or S.exists)
  if S.dirty or refresh_ttls then
    if S.incarnation == 0 then S.incarnation = c.clock_us end
    local config = c.fingerprint
    if S.keep_config then config = S.config end
    -- Only what changed since the state was read (all of it for a new or reset state), and
    -- `ttl_at` when the TTLs are set in full; numbers go as numbers (see `int`).
    local was = S.stored
    local args, n = {}, 0
    if S.dirty and (not was or was[1] ~= S.state) then
      args[n + 1], args[n + 2], n = 'state', S.state, n + 2
    end
    if S.dirty and (not was or was[2] ~= S.reason) then
      args[n + 1], args[n + 2], n = 'reason', S.reason, n + 2
    end
    if S.dirty and (not was or was[3] ~= config) then
      args[n + 1], args[n + 2], n = 'config', config, n + 2
    end
    -- The writer's quorum rule, when it differs from the stored one (absent: '1'), so operators
    -- can read it; an operator's command has none.
    if S.dirty and not S.keep_config and (S.quorum or '1') ~= c.quorum_text then
      args[n + 1], args[n + 2], n = 'quorum', c.quorum_text, n + 2
    end
    for i = 1, #INT_FIELDS do
      local f = INT_FIELDS[i]
      local v = S[f]
      if S.dirty and (not was or was[i + 5] ~= v) then
        args[n + 1], args[n + 2], n = f, v, n + 2
      end
    end
    if refresh_ttls then
      args[n + 1], args[n + 2], n = 'ttl_at', c.now, n + 2
    end
    if #S.events > 0 and not announce and not S.unannounced then
      args[n + 1], args[n + 2], n = 'announced', 0, n + 2
      S.unannounced = true
    end
    if n > 0 then rcall('HSET', KEYS[1], unpack(args, 1, n)) end
  end
  if announce and S.unannounced then
    rcall('HDEL', KEYS[1], 'announced')
    S.unannounced = false
  end
  if in_force or refresh_ttls or (S.dirty and #S.events > 0) then
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
      args[#args + 1] = exp
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
    if not S.window_stored then rcall('HSET', KEYS[3], 'len', S.window) end
    rcall('PEXPIRE', KEYS[3], S.window + floor(S.window / 10))
  end
  if next(S.metrics) ~= nil then
    local new_field = false
    for f, n in pairs(S.metrics) do
      if incr(KEYS[4], f, n) then new_field = true end
    end
    -- A new key has only new fields: 'since' is set with the first of them.
    if new_field then rcall('HSETNX', KEYS[4], 'since', c.now) end
    if new_field or ttl_due then rcall('PEXPIRE', KEYS[4], c.metrics_ttl) end
  elseif refresh_ttls then
    -- The refresh covers the metrics key too (none: nothing happens).
    rcall('PEXPIRE', KEYS[4], c.metrics_ttl)
  end
  -- The reporters of the quorum rule (see `report` in lib/rules.lua): the caller added (those
  -- older than the window go); a quorum met, or an operator's command, deletes them all (they
  -- are folded into the fleet's state). Removals use pcall: they only tidy, and must not undo
  -- what was applied.
  if S.reporters == 'add' then
    add_caller(KEYS[6], c)
  elseif S.reporters == 'remove' then
    rpcall('ZREM', KEYS[6], c.reporter)
  elseif S.reporters == 'clear' then
    rcall('DEL', KEYS[6])
  end
  -- The caller recorded calls (quorum_fraction): it counts among the processes for a window.
  if S.active then add_caller(KEYS[7], c) end
  -- Each transition also goes to the breaker's history, capped at about HISTORY_LEN entries,
  -- kept as long as the state and at least metrics_ttl (the console draws the last day). With
  -- pcall, as publishing: a history Redis refuses must not undo an applied transition; a key of
  -- another type set by hand is replaced.
  for i = 1, #S.events do
    local e = S.events[i]
    local entry = { 'XADD', KEYS[5], 'MAXLEN', '~', HISTORY_LEN, '*', 'time', c.now, 'from', e.from, 'to', e.to,
      'reason', e.reason, 'epoch', e.epoch, 'trips', S.trips, 'origin', c.origin }
    if c.note ~= '' then
      entry[#entry + 1] = 'note'
      entry[#entry + 1] = c.note
    end
    if c.failure ~= '' then
      entry[#entry + 1] = 'failure'
      entry[#entry + 1] = c.failure
    end
    -- The recovery ramp the last transition began.
    if i == #S.events and ramp_left(S, c) > 0 then
      entry[#entry + 1] = 'ramp_ms'
      entry[#entry + 1] = S.ramp_ms
      entry[#entry + 1] = 'ramp_permille'
      entry[#entry + 1] = S.ramp_permille
    end
    -- The config fingerprint of the process that caused it (an operator's command has none).
    if not S.keep_config then
      entry[#entry + 1] = 'config'
      entry[#entry + 1] = c.fingerprint
    end
    local added = rpcall(unpack(entry))
    if type(added) == 'table' and added.err and string.sub(added.err, 1, 9) == 'WRONGTYPE' then
      rcall('DEL', KEYS[5])
      rpcall(unpack(entry))
    end
  end
  if #S.events > 0 then rpcall('PEXPIRE', KEYS[5], mmax(ttl, c.metrics_ttl)) end
  local refused = false
  for i, e in ipairs(S.events) do
    local msg = json_event(c, S, e, i == #S.events)
    local sent = nil
    if c.shard_channel ~= '' then sent = rpcall('SPUBLISH', c.shard_channel, msg) end
    if (sent == nil or (type(sent) == 'table' and sent.err)) and c.channel ~= '' then
      sent = rpcall('PUBLISH', c.channel, msg)
    end
    if sent == nil or (type(sent) == 'table' and sent.err) then refused = true end
  end
  -- A refusal Redis could not foretell (before 7.0): the mark follows the PUBLISH, with pcall.
  -- Nothing was announced, so nothing written after it can contradict an announcement.
  if announce and refused then
    rpcall('HSET', KEYS[1], 'announced', 0)
    S.unannounced = true
  end
end

local function reply(S, c, verdict)
  local announced = 1
  if S.unannounced then announced = 0 end
  local left, ramp_ms, ramp_permille = ramp_left(S, c), 0, 0
  if left > 0 then ramp_ms, ramp_permille = S.ramp_ms, S.ramp_permille end
  return { [REPLY.verdict] = verdict, [REPLY.state] = S.state, [REPLY.incarnation] = S.incarnation,
    [REPLY.epoch] = S.epoch, [REPLY.failures] = S.failures, [REPLY.fseq] = S.fseq,
    [REPLY.remaining_ms] = remaining(S, c), [REPLY.stored_config] = S.config, [REPLY.reason] = S.reason,
    [REPLY.announced] = announced, [REPLY.ramp_left_ms] = left, [REPLY.ramp_ms] = ramp_ms,
    [REPLY.ramp_permille] = ramp_permille }
end
