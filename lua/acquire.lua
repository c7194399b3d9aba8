-- redis-breaker: acquire — decide one call and, when half-open, lease a probe.
-- KEYS: state, probes, window, metrics, history, reporters, processes (see lib/args.lua).
-- ARGV: the common arguments (ARG), then its own (ACQUIRE: the permit id, the caller's pending
--   batch, counted first, and the batch's id); both named in lib/protocol.lua.
-- Reply: { verdict, state, incarnation, epoch, failures, fseq, remaining_ms, stored_config, reason,
--   announced } (REPLY in lib/protocol.lua)
--   verdict: 'allowed' (closed or forced_closed), 'probe' (a half-open lease was taken for the
--   permit id) or 'rejected' (remaining_ms says how long until it is worth asking again; -1 when
--   an operator's forced open has no end).
-- Transitions: forced_closed -> closed when its time is up; closed -> open when the batch makes
--   a rate rule hold; open or forced_open -> half_open once Redis's clock passes open_until
--   (then a probe is taken at once).
local c = parse_config(ACQUIRE.config)
local permit = str_arg(ACQUIRE.permit, 'permit id', 64, false)
local batch = parse_batch(ACQUIRE.batch, ACQUIRE.batch_id)
local S = load(c)

advance(S, c)
apply_batch(S, c, batch)
if (S.state == 'open' or S.state == 'forced_open') and S.open_until > 0 and c.now >= S.open_until then
  to_half_open(S, c, REASON.recovery)
end

local verdict = 'allowed'
if S.state == 'open' or S.state == 'forced_open' then
  verdict = 'rejected'
elseif S.state == 'half_open' then
  purge_leases(S, c)
  if lease_count(S) < c.max_probes then
    own(S, 'P')[permit] = c.now + c.lease
    S.probes_dirty = true
    verdict = 'probe'
  else
    verdict = 'rejected'
  end
end

commit(S, c)
remember_batch(c, batch)
return reply(S, c, verdict)
