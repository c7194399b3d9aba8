-- redis-breaker lib/protocol.lua: the scripts' calling convention by name: their arguments, how the
-- common ones are checked, the reply's order, the reasons and the limits (Rust twin: src/protocol/).
-- GENERATED from the tables of src/protocol/ by `cargo test -p redis-breaker --lib protocol`, which
-- rewrites it when they change: edit those, not this file. Joined after lib/clock.lua in front of
-- every script that changes state (`lib!` in src/store/scripts.rs).

-- Limits (where Rust keeps each).
local OWN = 9 -- the first of a script's own arguments
local MAX_INT = 9007199254740991 -- protocol::MAX_INT
local MAX_DURATION = 8796093022208 -- config::MAX_DURATION: a deadline now + this stays exact
local MAX_QUORUM = 10000 -- config::MAX_QUORUM
local MAX_RAMP = 3600000 -- config::MAX_RAMP
local PER_MILLE = 1000 -- a recovery ramp's start is kept in per mille of the calls
local HISTORY_LEN = 100 -- entries the history stream keeps (about: MAXLEN ~)
local HALF_OPEN_RETRY = 1000 -- protocol::HALF_OPEN_RETRY_MS
local BATCH_MEMORY = 3600000 -- breaker::pending::BATCH_MEMORY_MS
local PROCESSES_SINCE = ' since' -- protocol::PROCESSES_SINCE
local LONGEST_WINDOW = ' window' -- protocol::LONGEST_WINDOW

-- The common arguments of every script, by name (ARGV[ARG.<name>]): per call (CallArgs), then the
-- caller's config fingerprint and id; the rest of the config (Params) follows the script's own
-- (CONFIG, from <script>.config), when it is sent.
local ARG = {
  -- The caller's clock (ms): '' = Redis TIME; only tests send one.
  now = 1,
  -- A uniform draw in [0, 1) for the jitter of the recovery timeout, from the caller:
  -- Redis seeds its own math.random alike on every start.
  rand = 2,
  -- The events channel ('' = none).
  channel = 3,
  -- The breaker's name, for its events.
  name = 4,
  -- The caller's client id, for its events, so that each process can tell the
  -- transitions it caused ('' = none).
  origin = 5,
  -- '' = events go to `channel` with PUBLISH; else the breaker's own channel
  -- `<prefix>:{<name>}:events`, in its slot, with SPUBLISH (Redis Cluster: a transition
  -- travels within its shard), falling back to PUBLISH on `channel` where SPUBLISH is
  -- unknown (< 7.0).
  shard_channel = 6,
  -- The fingerprint of the caller's config, which the state hash keeps.
  fingerprint = 7,
  -- The config id: the SHA-1 (hex) of the fingerprint and the rest of the config, each
  -- followed by a NUL byte. Where the scripts run as a library, the config it names, once
  -- validated in full, is kept under it, and a call may leave the rest out; a library that
  -- does not know it refuses such a call before anything is written (see parse_config).
  config_id = 8,
}

-- The rest of the config, by offset from its first argument (ARGV[at + CONFIG.<name>]).
local CONFIG = {
  -- Consecutive failures that open a closed breaker (0 = the rule is off).
  failure_threshold = 0,
  -- Probe successes that close a half-open breaker.
  success_threshold = 1,
  -- Half-open probes out at once, fleet-wide.
  max_probes = 2,
  -- The open time after the first trip (ms).
  base = 3,
  -- The cap on the open time (ms), at least `base`.
  max = 4,
  -- Growth of the open time per further trip in a row.
  multiplier = 5,
  -- Spread of the open time, a fraction.
  jitter = 6,
  -- The longest a half-open probe holds its permit (ms).
  lease = 7,
  -- How long an idle breaker's keys live after the last write (ms).
  state_ttl = 8,
  -- How long the metrics hash lives after the last write (ms).
  metrics_ttl = 9,
  -- The failure-rate threshold (0 = the rule is off).
  failure_rate = 10,
  -- The slow-call-rate threshold (0 = the rule is off).
  slow_rate = 11,
  -- Calls the window must hold before a rate rule may trip.
  minimum_calls = 12,
  -- The length of the rolling window (ms), 10 buckets.
  window = 13,
  -- The consecutive count starts again when no failure was recorded for this long (ms).
  failure_expiry = 14,
  -- Distinct processes whose own trip rule must hold (reported with record's 'failing')
  -- before the fleet opens; 1 = the closed-state rules count the fleet's outcomes.
  quorum = 15,
  -- The quorum's fraction in [0, 1] (0 = none): the fleet opens only when at least this
  -- fraction of the processes that recorded calls within the window (the processes key)
  -- reported, and `quorum` of them. Either above its default (1, 0) puts the breaker under
  -- a quorum.
  fraction = 16,
  -- The recovery ramp (ms; 0 = off): after half_open -> closed on probe successes, the
  -- fraction of calls admitted rises from `ramp_permille` to all over this long.
  ramp = 17,
  -- Where a recovery ramp starts, in per mille of the calls.
  ramp_permille = 18,
}

-- Reads the arguments that differ per call into the config table c, each checked with int_arg,
-- float_arg or str_arg of lib/args.lua (passed in: this file comes before it); `now` is Redis's clock,
-- for a clock argument ''.
local function read_call(c, now, int_arg, float_arg, str_arg)
  if ARGV[1] == '' then c.now = now else c.now = int_arg(1, 'now_ms', 0, MAX_INT) end
  c.rand = float_arg(2, 'rand', 0, 1)
  c.channel = str_arg(3, 'events channel', 512, true)
  c.name = str_arg(4, 'name', 200, false)
  c.origin = str_arg(5, 'origin', 64, true)
  c.shard_channel = str_arg(6, 'shard channel', 512, true)
end

-- The config arguments: the fingerprint, then the rest from ARGV[at] on (CONFIG), validated once per
-- config id where the scripts run as a library (see parse_config in lib/args.lua).
local CONFIG_LEN = 19

-- A config table: the config arguments, each checked (as in read_call), with room for those that
-- differ per call.
local function read_config(at, int_arg, float_arg, str_arg)
  local c = {
    fingerprint = str_arg(7, 'config', 64, false),
    failure_threshold = int_arg(at + 0, 'failure_threshold', 0, MAX_INT),
    success_threshold = int_arg(at + 1, 'success_threshold', 1, MAX_INT),
    max_probes = int_arg(at + 2, 'half_open_max_probes', 1, MAX_INT),
    base = int_arg(at + 3, 'base_recovery', 1, MAX_INT),
    max = 0,
    multiplier = float_arg(at + 5, 'multiplier', 1, 1000),
    jitter = float_arg(at + 6, 'jitter', 0, 1),
    lease = int_arg(at + 7, 'probe_lease', 1, MAX_INT),
    state_ttl = int_arg(at + 8, 'state_ttl', 1, MAX_INT),
    metrics_ttl = int_arg(at + 9, 'metrics_ttl', 1, MAX_INT),
    failure_rate = float_arg(at + 10, 'failure_rate', 0, 1),
    slow_rate = float_arg(at + 11, 'slow_call_rate', 0, 1),
    minimum_calls = int_arg(at + 12, 'minimum_calls', 1, MAX_INT),
    window = int_arg(at + 13, 'window', 10, MAX_DURATION),
    failure_expiry = int_arg(at + 14, 'failure_expiry', 1, MAX_DURATION),
    quorum = int_arg(at + 15, 'quorum', 1, MAX_QUORUM),
    fraction = float_arg(at + 16, 'quorum_fraction', 0, 1),
    ramp = int_arg(at + 17, 'recovery_ramp', 0, MAX_RAMP),
    ramp_permille = int_arg(at + 18, 'ramp_start', 1, PER_MILLE),
    now = 0,
    rand = 0,
    channel = '',
    name = '',
    origin = '',
    shard_channel = '',
  }
  c.max = int_arg(at + 4, 'max_recovery', c.base, MAX_INT)
  return c
end

-- The own arguments of acquire.lua, from OWN.
local ACQUIRE = {
  -- The permit id (1-64 bytes, unique per permit).
  permit = 9,
  -- The caller's pending batch (BATCH), counted first.
  batch = 10,
  -- The batch's id: '', `<sender>:<seq>`, or `<sender>:<seq>:again` when sent again after its
  -- reply was lost (see parse_batch in lib/batch.lua): a batch counted already counts nothing.
  batch_id = 20,
  -- Where the rest of the caller's config (CONFIG) begins: its last arguments, sent when the
  -- scripts run with EVALSHA, or when the library does not know the config id yet.
  config = 21,
}

-- The own arguments of record.lua, from OWN.
local RECORD = {
  -- 'success' | 'failure' | 'ignore' | 'release' (a permit dropped with no outcome: frees its
  -- probe lease, counts nothing) | 'none' (a flush of the batch alone).
  outcome = 9,
  -- The incarnation the permit was granted in.
  incarnation = 10,
  -- The epoch the permit was granted in.
  epoch = 11,
  -- The probe id ('' when the permit holds no lease).
  probe = 12,
  -- Whether the call was slow (0|1).
  slow = 13,
  -- Whether the call timed out (0|1).
  timed_out = 14,
  -- The fseq the permit's process had seen.
  fseq = 15,
  -- The caller's pending batch (BATCH).
  batch = 16,
  -- A failure's one-line description for the history (0-200 bytes; '' = none).
  description = 26,
  -- The caller's report under the quorum rule: '' | 'failing' (its own breaker opened, or is
  -- still open: said again every quarter window) | 'recovered' (it closed again); see
  -- `report` in lib/rules.lua.
  report = 27,
  -- With a quorum_fraction (0|1): the caller recorded calls and counts among the processes of
  -- the window (sent about ten times per window, not with every record).
  active = 28,
  -- The caller's identity for the quorum (1-64 bytes; '' = none): the member its report and its
  -- word that it is active write in KEYS[6] and KEYS[7]. Processes with one identity (one host,
  -- across restarts) count as one; the events still name the caller's own client id (ARG.origin).
  reporter = 29,
  -- The batch's id: '', `<sender>:<seq>`, or `<sender>:<seq>:again` when sent again after its
  -- reply was lost (see parse_batch in lib/batch.lua): a batch counted already counts nothing.
  batch_id = 30,
  -- Where the rest of the caller's config (CONFIG) begins: its last arguments, sent when the
  -- scripts run with EVALSHA, or when the library does not know the config id yet.
  config = 31,
}

-- The own arguments of control.lua, from OWN.
local CONTROL = {
  -- 'force_open' | 'force_close' | 'reset'.
  op = 9,
  -- How long a forced state lasts (0 = until reset).
  duration_ms = 10,
  -- The operator's note for the history (0-200 bytes; '' = none).
  note = 11,
  -- Where the rest of the caller's config (CONFIG) begins: its last arguments, sent when the
  -- scripts run with EVALSHA, or when the library does not know the config id yet.
  config = 12,
}

-- The arguments of count.lua, from ARGV 1 (it takes none of the common ones).
local COUNT = {
  -- The caller's clock (ms): '' = Redis TIME; only tests send one.
  now = 1,
  -- The caller's config id (ARG.config_id): a config the library does not know, or one with a
  -- window or a quorum, is record.lua's.
  config_id = 2,
  -- The incarnation the permit was granted in.
  incarnation = 3,
  -- The epoch the permit was granted in.
  epoch = 4,
  -- The batch's id: '', `<sender>:<seq>`, or `<sender>:<seq>:again` when sent again after its
  -- reply was lost (see parse_batch in lib/batch.lua): a batch counted already counts nothing.
  batch_id = 5,
}

-- A batch of counts (Rust: `Batch`), by offset from its first argument (see parse_batch in
-- lib/batch.lua).
local BATCH = {
  incarnation = 0,
  epoch = 1,
  fseq = 2,
  successes = 3,
  slow = 4,
  ignored = 5,
  rejected = 6,
  degraded_successes = 7,
  degraded_failures = 8,
  throttled = 9,
}

-- The reply of every script, by position (Rust: `Reply`, read by parse_reply in src/store/scripts.rs).
local REPLY = {
  -- 'allowed', 'probe' or 'rejected' (acquire); 'applied' or 'stale' (record); 'ok' (control).
  verdict = 1,
  -- The state after the call.
  state = 2,
  -- When the state hash was made (Redis TIME in µs).
  incarnation = 3,
  -- +1 on every transition.
  epoch = 4,
  -- Failures counted toward the consecutive rule this closed epoch.
  failures = 5,
  -- +1 on every recorded failure.
  fseq = 6,
  -- The time left to the state's next deadline (open_until, the earliest probe lease when all
  -- are out, a forced state's end), or -1 when it has none.
  remaining_ms = 7,
  -- The config fingerprint the state hash held before the call.
  stored_config = 8,
  -- Why the state is what it is.
  reason = 9,
  -- 0 while the state's last transition was not announced on the events channel (this call's
  -- own refused, or an earlier one's: the state hash's `announced` field), else 1: processes
  -- trust a state answered with 0 for the short bound only.
  announced = 10,
  -- The time left of a closed breaker's recovery ramp, or 0 when none runs.
  ramp_left_ms = 11,
  -- That ramp's length (0 when none runs).
  ramp_ms = 12,
  -- Where that ramp started, per mille of the calls admitted (0 when none runs).
  ramp_permille = 13,
}

-- Every reason a script writes into the state hash, once (string.format templates; Rust:
-- src/protocol/reason.rs fills the same).
local REASON = {
  consecutive = '%d consecutive failures',
  failure_rate = 'failure rate %.2f >= %.2f over %d calls',
  slow_rate = 'slow call rate %.2f >= %.2f over %d calls',
  recovery = 'recovery timeout elapsed',
  probe_failed = 'probe failed',
  probes_succeeded = '%d probe successes',
  forced_close_expired = 'forced close expired',
  reset = 'reset by operator',
  forced_until_reset = '%s by operator until reset',
  forced_for = '%s by operator for %dms',
  corrupt = 'corrupt state reset to closed: %s',
  quorum = 'failing processes %d >= quorum %d',
}
