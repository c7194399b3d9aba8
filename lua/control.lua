-- redis-breaker: control — an operator's force_open, force_close and reset.
-- KEYS: state, probes, window, metrics (see common.lua).
-- ARGV: 1..19 common (see common.lua), then
--   20 op: 'force_open' | 'force_close' | 'reset'   21 duration_ms (0 = until reset)
-- Reply: { 'ok', state, incarnation, epoch, failures, fseq, remaining_ms, stored_config, reason }
-- Transitions: any -> forced_open (trips kept; after the duration it acts as an expired open);
--   any -> forced_closed (never trips; after the duration, closed); any -> closed on reset
--   (failures, trips, probes and window cleared; metrics kept). Each is a new epoch.
local c = parse_config()
local op = ARGV[20]
if op ~= 'force_open' and op ~= 'force_close' and op ~= 'reset' then fail('op') end
local duration = int_arg(21, 'duration_ms', 0)
local S = load(c)

local function lasting(what)
  if duration == 0 then return what .. ' by operator until reset' end
  return fmt('%s by operator for %dms', what, duration)
end

if op == 'reset' then
  close(S, c, 'reset by operator')
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

commit(S, c)
return reply(S, c, 'ok')
