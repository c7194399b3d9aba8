-- redis-breaker lib/batch.lua: the counts a process batched since its last script call (Rust
-- twins: `Batch` in src/protocol/op.rs, `Call::batch` in src/machine/call.rs).

-- The batch of counts a process gathered since its last script call: from ARGV i, at the offsets
-- of BATCH (lib/protocol.lua), incarnation, epoch, fseq (the oldest its successes had seen),
-- successes, slow among them, ignored, rejected, then the successes and failures of calls decided
-- without Redis (while it was down), which count in metrics only, and the calls a recovery ramp
-- held back (throttled). Its id (ARGV id_at) is '',
-- `<sender>:<seq>` or, sent again, `<sender>:<seq>:again`: sender 1-16 hex digits (one lane of
-- one process's breaker), seq its number in that lane (from 1). A lane sends its next batch
-- only once Redis answered for the last, and sends a batch whose reply was lost again, as it
-- was: so the metrics hash keeps one field per lane, `batch:<sender>` = when the lane's last
-- batch was applied (ms, Redis clock) x 1000 + its seq mod 1000, and a batch sent again whose
-- seq matches is counted already (a first attempt never is: it costs no read).
-- A batch with no counts: nothing in it is used (shared, never written).
-- `empty`: the batch counts nothing (its id, if any, is an outcome's).
local NO_COUNTS = { inc = 0, epoch = 0, fseq = 0, ok = 0, slow = 0, ignored = 0, rejected = 0, degraded_ok = 0,
  degraded_failed = 0, throttled = 0, sender = '', seq = 0, again = false, dup = false, empty = true }

-- A batch id (ARGV id_at): its sender ('' for none), seq and whether it was sent again.
local function parse_batch_id(id_at)
  local id = str_arg(id_at, 'batch id', 48, true)
  if id == '' then return '', 0, false end
  local again = false
  local s, q = string.match(id, '^(%x+):(%d+)$')
  if s == nil then
    s, q = string.match(id, '^(%x+):(%d+):again$')
    again = true
  end
  if s == nil or #s > 16 then fail('batch id') end
  local seq = tonumber(q)
  if seq == nil or seq < 1 or seq > MAX_INT then fail('batch id') end
  return s, seq, again
end

local function parse_batch(i, id_at)
  local A = ARGV
  local sender, seq, again = parse_batch_id(id_at)
  local B = BATCH
  if A[i + B.successes] == '0' and A[i + B.slow] == '0' and A[i + B.ignored] == '0'
    and A[i + B.rejected] == '0' and A[i + B.degraded_successes] == '0' and A[i + B.degraded_failures] == '0'
    and A[i + B.throttled] == '0' then
    int_arg(i + B.incarnation, 'batch incarnation', 0)
    int_arg(i + B.epoch, 'batch epoch', 0)
    int_arg(i + B.fseq, 'batch fseq', 0)
    if sender == '' then return NO_COUNTS end
    -- An outcome's id with no counts (the outcome counts under it).
    return { inc = 0, epoch = 0, fseq = 0, ok = 0, slow = 0, ignored = 0, rejected = 0, degraded_ok = 0,
      degraded_failed = 0, throttled = 0, sender = sender, seq = seq, again = again, dup = false, empty = true }
  end
  local b = {
    inc = int_arg(i + B.incarnation, 'batch incarnation', 0),
    epoch = int_arg(i + B.epoch, 'batch epoch', 0),
    fseq = int_arg(i + B.fseq, 'batch fseq', 0),
    ok = int_arg(i + B.successes, 'batch successes', 0),
    slow = int_arg(i + B.slow, 'batch slow', 0),
    ignored = int_arg(i + B.ignored, 'batch ignored', 0),
    rejected = int_arg(i + B.rejected, 'batch rejected', 0),
    degraded_ok = int_arg(i + B.degraded_successes, 'batch degraded successes', 0),
    degraded_failed = int_arg(i + B.degraded_failures, 'batch degraded failures', 0),
    throttled = int_arg(i + B.throttled, 'batch throttled', 0),
    sender = sender,
    seq = seq,
    again = again,
    dup = false,
    empty = false,
  }
  if b.slow > b.ok then fail('batch slow') end
  return b
end

-- Whether a batch sent again was counted already (its lane's field holds its seq): read before
-- anything is written. A field that is not a number, or a metrics key of another type, reads
-- as none.
local function batch_seen(b)
  if not b.again then return false end
  local r = rpcall('HMGET', KEYS[4], 'batch:' .. b.sender)
  if type(r) ~= 'table' or r.err or type(r[1]) ~= 'string' then return false end
  local v = tonumber(r[1])
  return v ~= nil and v == v and v >= 0 and v % 1000 == b.seq % 1000
end

-- Counts a batch in metrics and, when it belongs to this closed epoch, in the window; its
-- successes reset the consecutive count only if no failure was recorded since they began. A
-- batch counted already counts nothing.
local function apply_batch(S, c, b)
  if batch_seen(b) then
    b.dup = true
    return
  end
  metric(S, 'calls', b.ok + b.ignored + b.degraded_ok + b.degraded_failed)
  metric(S, 'successes', b.ok + b.degraded_ok)
  metric(S, 'failures', b.degraded_failed)
  metric(S, 'slow', b.slow)
  metric(S, 'rejected', b.rejected)
  metric(S, 'throttled', b.throttled)
  if b.ok > 0 and S.state == 'closed' and matches(S, b.inc, b.epoch) then
    window_add(S, c, b.ok, 0, b.slow)
    if b.fseq == S.fseq and S.failures > 0 then
      S.failures = 0
      S.dirty = true
    end
    check_rules(S, c)
  end
end

-- After commit: remembers that the batch was counted. A lane's first batch also forgets the
-- lanes whose last batch is older than BATCH_MEMORY (processes gone), so the fields are those
-- of the lanes of that long, and gives the key its TTL if the commit set none. With pcall:
-- what the call counted is written already, and must not turn into an error.
local function remember_batch(c, b)
  if b.sender == '' or b.dup then return end
  local v = c.now * 1000 + b.seq % 1000
  -- A clock too far ahead for an exact number (only a test's): the seq alone, forgotten first.
  if v > MAX_INT then v = b.seq % 1000 end
  if rpcall('HSET', KEYS[4], 'batch:' .. b.sender, int(v)) ~= 1 then return end
  local before = (c.now - mmin(BATCH_MEMORY, c.metrics_ttl)) * 1000
  local flat = rpcall('HGETALL', KEYS[4])
  if type(flat) == 'table' and not flat.err then
    local old = {}
    for k = 1, #flat - 1, 2 do
      if string.sub(flat[k], 1, 6) == 'batch:' then
        local n = tonumber(flat[k + 1])
        if n == nil or n ~= n or n < before then old[#old + 1] = flat[k] end
      end
    end
    if #old > 0 then rpcall('HDEL', KEYS[4], unpack(old)) end
  end
  if rpcall('PTTL', KEYS[4]) == -1 then rpcall('PEXPIRE', KEYS[4], c.metrics_ttl) end
end
