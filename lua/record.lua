-- redis-breaker: record — report one call's outcome; batched counters ride along.
-- KEYS: state, probes, window, metrics, history, reporters, processes (see lib/args.lua).
-- ARGV: the common arguments (ARG), then its own (RECORD: the outcome, the permit's incarnation,
--   epoch, probe id and fseq, whether the call was slow or timed out, the caller's pending batch, a
--   failure's description, the caller's report under the quorum rule, whether it is active, its
--   identity for the quorum, and the batch's id); both named and described in lib/protocol.lua.
-- Reply: { verdict, state, incarnation, epoch, failures, fseq, remaining_ms, stored_config, reason,
--   announced } (REPLY in lib/protocol.lua)
--   verdict: 'applied', or 'stale' when the outcome moved no state (its permit belongs to another
--   incarnation or epoch, or its probe lease is gone). Metrics count both. A probe's own lease
--   is judged before expired ones are swept: one that outlived its lease still counts until
--   another caller takes the slot; a 'release' of a lease still held frees it whatever epoch
--   it names.
-- Transitions: closed -> open (consecutive, failure-rate or slow-call rule; under a quorum, the
--   quorum-th process reporting 'failing');
--   half_open -> closed (success_threshold probe successes); half_open -> open (a probe failed,
--   trips + 1); forced_closed -> closed when its time is up.
local c = parse_config(RECORD.config)
local outcome = ARGV[RECORD.outcome]
if outcome ~= 'failure' and outcome ~= 'success' and outcome ~= 'none' and outcome ~= 'ignore'
  and outcome ~= 'release' then
  fail('outcome')
end
local p_inc = int_arg(RECORD.incarnation, 'permit incarnation', 0)
local p_epoch = int_arg(RECORD.epoch, 'permit epoch', 0)
local probe = str_arg(RECORD.probe, 'probe id', 64, true)
local slow = int_arg(RECORD.slow, 'slow', 0)
local timed_out = int_arg(RECORD.timed_out, 'timed out', 0)
local p_fseq = int_arg(RECORD.fseq, 'permit fseq', 0)
local batch = parse_batch(RECORD.batch, RECORD.batch_id)
if outcome == 'failure' then c.failure = str_arg(RECORD.description, 'failure description', 200, true) end
local action = str_arg(RECORD.report, 'report', 9, true)
if action ~= '' and action ~= 'failing' and action ~= 'recovered' then fail('report') end
local active = int_arg(RECORD.active, 'active', 0)
if active > 1 then fail('active') end
c.reporter = str_arg(RECORD.reporter, 'reporter', 64, true)
if slow > 1 or timed_out > 1 then fail('flags') end
-- A failure that only counts takes the short path (lib/count.lua), which leaves anything else here.
local raw = nil
if outcome == 'failure' and slow == 0 and timed_out == 0 and action == '' and batch.empty and not batch.again
  and not c.windowed and not c.quorum_mode then
  local counted
  counted, raw = count_failure(c, batch, p_inc, p_epoch, KEYS[1], KEYS[4])
  if counted then return counted end
end
local S = load(c, raw)

-- A permit's own lease is judged before expired leases are swept: a probe that reports after
-- its lease ran out (a hung downstream timing out) still counts while nobody took its slot.
local own_lease = probe ~= '' and S.P[probe] ~= nil
advance(S, c)
purge_leases(S, c)
apply_batch(S, c, batch)

local verdict = 'applied'
local counted = outcome == 'success' or outcome == 'failure' or outcome == 'ignore'
if counted then
  metric(S, 'calls', 1)
  if outcome == 'success' then metric(S, 'successes', 1) end
  if outcome == 'failure' then metric(S, 'failures', 1) end
  metric(S, 'slow', slow)
  metric(S, 'timeouts', timed_out)
end
if outcome ~= 'none' then
  -- Leases are cleared on every transition, so a lease still held belongs to this half-open
  -- epoch: its outcome applies even from a caller that never learnt the epoch (the release of
  -- an acquire whose reply was lost).
  if S.state == 'half_open' and own_lease then
    S.P[probe] = nil
    S.probes_dirty = true
    if outcome == 'success' then
      S.successes = S.successes + 1
      S.dirty = true
      if S.successes >= c.success_threshold then
        close(S, c, fmt(REASON.probes_succeeded, S.successes))
        start_ramp(S, c)
      end
    elseif outcome == 'failure' then
      trip(S, c, REASON.probe_failed)
    end
  elseif not matches(S, p_inc, p_epoch) then
    verdict = 'stale'
  elseif S.state == 'closed' and (outcome == 'success' or outcome == 'failure') then
    if outcome == 'failure' then
      S.failures = S.failures + 1
      S.fseq = S.fseq + 1
      S.failed_at = c.now
      S.dirty = true
      window_add(S, c, 1, 1, slow)
    else
      if p_fseq == S.fseq and S.failures > 0 then
        S.failures = 0
        S.dirty = true
      end
      window_add(S, c, 1, 0, slow)
    end
    check_rules(S, c)
  elseif S.state == 'half_open' then
    verdict = 'stale'
  elseif outcome == 'success' or outcome == 'failure' then
    verdict = 'stale'
  end
end

report(S, c, action)
S.active = active == 1 and c.fraction > 0 and c.reporter ~= ''

commit(S, c)
remember_batch(c, batch)
return reply(S, c, verdict)
