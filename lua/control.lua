-- redis-breaker: control — an operator's force_open, force_close and reset.
-- KEYS: state, probes, window, metrics, history, reporters, processes (see lib/args.lua).
-- ARGV: the common arguments (ARG), then its own (CONTROL: op, duration_ms, note); both named in
--   lib/protocol.lua.
-- Reply: { 'ok', state, incarnation, epoch, failures, fseq, remaining_ms, stored_config, reason, announced }
--   announced: 0 when the transition's event could not be published (the caller is told)
--   Refused (an error reply, nothing written) when the op would make a transition whose event
--   Redis can tell before any write that it would refuse (>= 7.0, redis.acl_check_cmd: the user
--   may not publish on the events channel): `ERR redis-breaker: this user may not publish on
--   <channel>: nothing was written; grant &<channel pattern> (and +publish / +spublish)`. Processes
--   holding an older snapshot would go on deciding from it for up to subscribed_cache_ttl: an
--   operator's write is worth nothing to them unannounced. Before 7.0 the write is made and its
--   reply says announced 0. (A process's own trip is never refused: see lib/commit.lua.)
-- Transitions: any -> forced_open (trips kept; after the duration it acts as an expired open);
--   any -> forced_closed (never trips; after the duration, closed); any other state -> closed on
--   reset (failures, trips, probes and window cleared; metrics kept). Every op clears the
--   quorum's reporters. Each is a new epoch. A reset
--   of a closed breaker clears its failures and window and is no transition. The stored config
--   fingerprint is kept (an operator is not a process with a config).
local c = parse_config(CONTROL.config)
local op = ARGV[CONTROL.op]
if op ~= 'force_open' and op ~= 'force_close' and op ~= 'reset' then fail('op') end
local duration = int_arg(CONTROL.duration_ms, 'duration_ms', 0)
if duration > MAX_DURATION then fail('duration_ms') end
c.note = str_arg(CONTROL.note, 'note', 200, true)
local S = load(c)
-- An operator's write keeps the config fingerprint of the last process that wrote: it is not a
-- process's config, and must not make the fleet report drift.
S.keep_config = true

-- The refusal of an operator's transition whose event Redis would refuse, or nil: only where
-- Redis can tell before anything is written (>= 7.0) and an events channel is set (without one
-- no process listens, and every snapshot is trusted for the short bound anyway).
local function refused_unannounced(c)
  if not redis.acl_check_cmd or (c.channel == '' and c.shard_channel == '') or may_announce(c) then return nil end
  local channel, grant = c.channel, '&' .. c.channel .. ' (and +publish)'
  if c.shard_channel ~= '' then
    channel, grant = c.shard_channel, '&' .. c.shard_channel .. ' (and +spublish)'
    -- Every breaker's channel of the prefix: `<prefix>:{*}:events`.
    local suffix = ':events'
    if string.sub(c.channel, -#suffix) == suffix then
      grant = '&' .. string.sub(c.channel, 1, -#suffix - 1) .. ':{*}' .. suffix .. ' (and +spublish)'
    end
  end
  return redis.error_reply('ERR redis-breaker: this user may not publish on ' .. channel
    .. ': nothing was written; grant ' .. grant)
end

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
  end_ramp(S)
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

if #S.events > 0 then
  local refused = refused_unannounced(c)
  if refused then return refused end
end

commit(S, c)
return reply(S, c, 'ok')
