-- redis-breaker lib/batch.lua: the counts a process batched since its last script call (Rust
-- twins: `Batch` in src/protocol.rs, `Call::batch` in src/machine.rs).

-- The batch of counts a process gathered since its last script call: ARGV i .. i+8 are
-- incarnation, epoch, fseq (the oldest its successes had seen), successes, slow among them,
-- ignored, rejected, then the successes and failures of calls decided without Redis (while it
-- was down), which count in metrics only.
-- A batch with no counts: nothing in it is used (shared, never written).
local NO_COUNTS = { inc = 0, epoch = 0, fseq = 0, ok = 0, slow = 0, ignored = 0, rejected = 0, degraded_ok = 0,
  degraded_failed = 0 }

local function parse_batch(i)
  local A = ARGV
  if A[i + 3] == '0' and A[i + 4] == '0' and A[i + 5] == '0' and A[i + 6] == '0' and A[i + 7] == '0'
    and A[i + 8] == '0' then
    int_arg(i, 'batch incarnation', 0)
    int_arg(i + 1, 'batch epoch', 0)
    int_arg(i + 2, 'batch fseq', 0)
    return NO_COUNTS
  end
  local b = {
    inc = int_arg(i, 'batch incarnation', 0),
    epoch = int_arg(i + 1, 'batch epoch', 0),
    fseq = int_arg(i + 2, 'batch fseq', 0),
    ok = int_arg(i + 3, 'batch successes', 0),
    slow = int_arg(i + 4, 'batch slow', 0),
    ignored = int_arg(i + 5, 'batch ignored', 0),
    rejected = int_arg(i + 6, 'batch rejected', 0),
    degraded_ok = int_arg(i + 7, 'batch degraded successes', 0),
    degraded_failed = int_arg(i + 8, 'batch degraded failures', 0),
  }
  if b.slow > b.ok then fail('batch slow') end
  return b
end

-- Counts a batch in metrics and, when it belongs to this closed epoch, in the window; its
-- successes reset the consecutive count only if no failure was recorded since they began.
local function apply_batch(S, c, b)
  metric(S, 'calls', b.ok + b.ignored + b.degraded_ok + b.degraded_failed)
  metric(S, 'successes', b.ok + b.degraded_ok)
  metric(S, 'failures', b.degraded_failed)
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
