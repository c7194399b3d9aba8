-- redis-breaker: control — an operator's force_open, force_close and reset.
-- KEYS: state, probes, window, metrics, history, reporters, processes (see lib/args.lua).
-- ARGV: 1..24 common (see lib/args.lua), then
--   OWN (25) op: 'force_open' | 'force_close' | 'reset'   OWN+1 duration_ms (0 = until reset)
--   OWN+2 the operator's note for the history (0-200 bytes; '' = none)
-- Reply: { 'ok', state, incarnation, epoch, failures, fseq, remaining_ms, stored_config, reason, announced }
--   announced: 0 when the transition's event could not be published (the caller is told)
-- Transitions: any -> forced_open (trips kept; after the duration it acts as an expired open);
--   any -> forced_closed (never trips; after the duration, closed); any other state -> closed on
--   reset (failures, trips, probes and window cleared; metrics kept). Every op clears the
--   quorum's reporters. Each is a new epoch. A reset
--   of a closed breaker clears its failures and window and is no transition. The stored config
--   fingerprint is kept (an operator is not a process with a config).
local c = parse_config()
local op = ARGV[OWN]
if op ~= 'force_open' and op ~= 'force_close' and op ~= 'reset' then fail('op') end
local duration = int_arg(OWN + 1, 'duration_ms', 0)
if duration > MAX_DURATION then fail('duration_ms') end
c.note = str_arg(OWN + 2, 'note', 200, true)
local S = load(c)
-- An operator's write keeps the config fingerprint of the last process that wrote: it is not a
-- process's config, and must not make the fleet report drift.
S.keep_config = true

local function lasting(what)
  if duration == 0 then return fmt(REASON.forced_until_reset, what) end
  return fmt(REASON.forced_for, what, duration)
end

if op == 'reset' and S.state == 'closed' then
  -- Already closed: no transition (no new epoch, no event); only the counts are cleared.
  if S.failures > 0 then
    S.failures = 0
    S.dirty = true
  end
  clear_window(S, c)
elseif op == 'reset' then
  close(S, c, REASON.reset)
else
  local to = 'forced_open'
  local what = 'forced open'
  if op == 'force_close' then
    to = 'forced_closed'
    what = 'forced closed'
  end
  transition(S, c, to, lasting(what))
  S.open_until = 0
  if duration > 0 then S.open_until = c.now + duration end
  if to == 'forced_open' then S.opened_at = c.now end
end

-- Every operator's command folds the quorum's reports into the state it sets: a process that
-- reported before it is not held to that report afterwards.
S.reporters = 'clear'

commit(S, c)
return reply(S, c, 'ok')
