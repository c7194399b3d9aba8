-- redis-breaker: record — report one call's outcome; batched counters ride along.
-- KEYS: state, probes, window, metrics, history, reporters, processes (see lib/args.lua).
-- ARGV: 1..24 common (see lib/args.lua), then, from OWN (25):
--   OWN outcome: 'success' | 'failure' | 'ignore' | 'release' (a permit dropped with no outcome:
--      frees its probe lease, counts nothing) | 'none' (a flush of the batch alone)
--   OWN+1 permit incarnation  OWN+2 permit epoch  OWN+3 probe id ('' when the permit holds no
--   lease)  OWN+4 slow (0|1)  OWN+5 timed out (0|1)  OWN+6 fseq the permit's process had seen
--   OWN+7 .. OWN+15 the caller's pending batch (see parse_batch in lib/batch.lua)
--   OWN+16 a failure's one-line description for the history (0-200 bytes; '' = none)
--   OWN+17 the caller's report under the quorum rule: '' | 'failing' (its own breaker opened, or
--      is still open: said again every quarter window) | 'recovered' (it closed again); see
--      `report` in lib/rules.lua
--   OWN+18 active (0|1): with a quorum_fraction, the caller recorded calls and counts among the
--      processes of the window (sent about ten times per window, not with every record)
--   OWN+19 reporter: the caller's identity for the quorum (1-64 bytes; '' = none): the member its
--      report and its word that it is active write in KEYS[6] and KEYS[7]. Processes with one
--      identity (one host, across restarts) count as one; the events still name the caller's
--      own client id (ARGV 21)
--   OWN+20 the batch's id: '', `<sender>:<seq>`, or `<sender>:<seq>:again` when sent again after
--      its reply was lost (see parse_batch in lib/batch.lua): a batch counted already counts nothing
-- Reply: { verdict, state, incarnation, epoch, failures, fseq, remaining_ms, stored_config, reason,
--   announced } (see lib/args.lua)
--   verdict: 'applied', or 'stale' when the outcome moved no state (its permit belongs to another
--   incarnation or epoch, or its probe lease is gone). Metrics count both. A probe's own lease
--   is judged before expired ones are swept: one that outlived its lease still counts until
--   another caller takes the slot; a 'release' of a lease still held frees it whatever epoch
--   it names.
-- Transitions: closed -> open (consecutive, failure-rate or slow-call rule; under a quorum, the
--   quorum-th process reporting 'failing');
--   half_open -> closed (success_threshold probe successes); half_open -> open (a probe failed,
--   trips + 1); forced_closed -> closed when its time is up.
local c = parse_config()
local outcome = ARGV[OWN]
if outcome ~= 'failure' and outcome ~= 'success' and outcome ~= 'none' and outcome ~= 'ignore'
  and outcome ~= 'release' then
  fail('outcome')
end
local p_inc = int_arg(OWN + 1, 'permit incarnation', 0)
local p_epoch = int_arg(OWN + 2, 'permit epoch', 0)
local probe = str_arg(OWN + 3, 'probe id', 64, true)
local slow = int_arg(OWN + 4, 'slow', 0)
local timed_out = int_arg(OWN + 5, 'timed out', 0)
local p_fseq = int_arg(OWN + 6, 'permit fseq', 0)
local batch = parse_batch(OWN + 7, OWN + 20)
if outcome == 'failure' then c.failure = str_arg(OWN + 16, 'failure description', 200, true) end
local action = str_arg(OWN + 17, 'report', 9, true)
if action ~= '' and action ~= 'failing' and action ~= 'recovered' then fail('report') end
local active = int_arg(OWN + 18, 'active', 0)
if active > 1 then fail('active') end
c.reporter = str_arg(OWN + 19, 'reporter', 64, true)
if slow > 1 or timed_out > 1 then fail('flags') end
local S = load(c)

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
