-- redis-breaker lib/args.lua: the arguments every script takes, validated (Rust twin: `Params`
-- in src/protocol.rs). The lib files, joined in the order clock, args, load, transitions, rules,
-- batch, commit, are the prelude of acquire.lua, record.lua and control.lua: they read and
-- validate, hold the transitions every script may cause, and write nothing until `commit`.
--
-- KEYS (every script):
--   1 state   HASH  breaker:{name}:state    the state machine
--   2 probes  ZSET  breaker:{name}:probes   half-open leases: member = permit id, score = expiry ms
--   3 window  HASH  breaker:{name}:window   rolling-window buckets "<bucket>:c|f|s"
--   4 metrics HASH  breaker:{name}:metrics  cumulative outcome counters
--   5 history STREAM breaker:{name}:history the last transitions (about 100), with their reasons
--   6 reporters ZSET breaker:{name}:reporters processes whose own breaker opened (under a quorum):
--                                         member = reporter id (record.lua OWN+19), score = when (ms)
--   7 processes ZSET breaker:{name}:processes processes that recorded calls (with quorum_fraction):
--                                         member = reporter id, score = when it last said so (ms)
--
-- ARGV 1..24 (every script): the caller's clock override, config and id; from OWN (25) on, the
-- script's own, which each script names as OWN + k so a new common argument moves none of them.
--   1 now_ms ('' = Redis TIME; only tests send a value)   2 rand in [0,1) for the jitter
--   3 config fingerprint      4 failure_threshold (0 = rule off)   5 success_threshold
--   6 half_open_max_probes    7 base_recovery_ms   8 max_recovery_ms   9 multiplier  10 jitter
--   11 probe_lease_ms  12 state_ttl_ms  13 metrics_ttl_ms  14 failure_rate (0 = rule off)
--   15 slow_call_rate (0 = rule off)  16 minimum_calls  17 window_ms  18 events channel ('' = none)
--   19 breaker name (for events)   20 failure_expiry_ms   21 origin: the caller's client id (for
--   events, so each process can tell the transitions it caused; '' = none)
--   22 shard channel: '' = events go to the channel of 18 with PUBLISH; else the breaker's own
--   channel `<prefix>:{<name>}:events`, in its slot, with SPUBLISH (Redis Cluster: a transition
--   travels within its shard), falling back to PUBLISH on 18 where SPUBLISH is unknown (< 7.0)
--   23 quorum: distinct processes whose own trip rule must hold (reported with record.lua's
--   'failing') before the fleet opens; 1 = the closed-state rules count the fleet's outcomes
--   24 quorum_fraction in [0, 1] (0 = none): the fleet opens only when at least this fraction of
--   the processes that recorded calls within the window (key 7) reported, and `quorum` of them.
--   Either above its default (1, 0) puts the breaker under a quorum.
--
-- Reply (every script): { verdict, state, incarnation, epoch, failures, fseq, remaining_ms,
--   stored_config, reason, announced }. remaining_ms is the time left to the state's next deadline
--   (open_until, the earliest probe lease when all are out, a forced state's end) or -1 when it has
--   none. announced is 0 while the state's last transition was not announced on the events
--   channel (this call's own refused, or an earlier one's: the state hash's `announced` field),
--   else 1: processes trust a state answered with 0 for the short bound only.

-- Library functions as locals: every global use is a table lookup in the script's environment.
local tonumber, unpack, pairs, ipairs, next, type = tonumber, unpack, pairs, ipairs, next, type
local floor, mmin, mmax, fmt = math.floor, math.min, math.max, string.format
local rcall, rpcall = redis.call, redis.pcall

-- The first of a script's own arguments.
local OWN = 25
local MAX_INT = 9007199254740991
-- The longest duration any argument may carry (2^43 ms, about 278 years): a deadline now + this
-- stays an exact integer. A stored deadline further away than this was not written by us.
local MAX_DURATION = 8796093022208
-- Entries the history stream keeps (about: MAXLEN ~ trims whole blocks).
local HISTORY_LEN = 100
-- The largest quorum (Rust twin: `MAX_QUORUM` in src/config.rs).
local MAX_QUORUM = 10000
-- The member of the processes key (7) whose score is minus the time the key began collecting
-- (ms; Rust twin: `Machine::processes_since`). Reporter ids hold no whitespace, so it names no
-- process; its negative score keeps it out of every count and sweep.
local PROCESSES_SINCE = ' since'
-- The member of the reporters (6) and processes (7) keys whose score is minus the longest window
-- of the processes that wrote them (ms; Rust twin: `Machine::reporters_window`, `processes_window`): no writer sweeps an
-- entry that still counts for another with a longer window.
local LONGEST_WINDOW = ' window'
-- What a caller rejected while every half-open probe is out is told to wait at most: a probe
-- usually ends long before its lease, and its outcome's event refreshes every snapshot.
local HALF_OPEN_RETRY = 1000
-- Every reason a script writes into the state hash, once (Rust twin: src/machine/reason.rs).
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
local STATES = { closed = true, open = true, half_open = true, forced_open = true, forced_closed = true }
-- The state hash's fields: three strings, then these integers (in this order in `S.stored`,
-- and all of them in `empty_state`).
local INT_FIELDS = { 'incarnation', 'epoch', 'failures', 'fseq', 'successes', 'trips', 'opened_at',
  'open_until', 'changed_at', 'failed_at' }
-- What `load` asks the state hash for after its five text fields: INT_FIELDS, then `announced`
-- (present while the last transition was not announced: see `announce` in lib/commit.lua).
local INT_FIELDS_ANNOUNCED = { unpack(INT_FIELDS) }
INT_FIELDS_ANNOUNCED[#INT_FIELDS_ANNOUNCED + 1] = 'announced'


local function fail(what)
  -- A string error at level 0: every server version prints it (Redis 6 cannot print an error
  -- table raised with error()), as `ERR ... redis-breaker: bad argument <what> ...`.
  error('redis-breaker: bad argument ' .. what, 0)
end

local function int_arg(i, name, min)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= v or v < min or v > MAX_INT or v % 1 ~= 0 then fail(name) end
  return v
end

local function float_arg(i, name, min, max)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= v or v < min or v > max then fail(name) end
  return v
end

local function str_arg(i, name, max_len, allow_empty)
  local v = ARGV[i]
  if v == nil or #v > max_len or (not allow_empty and #v == 0) then fail(name) end
  return v
end

-- A number as Redis writes it. Numbers given to redis.call are written exactly as they are
-- (every integer the scripts handle is below 2^53), and numbers in a reply become integers, so
-- this is needed only inside text (events, reasons).
local function int(n)
  return fmt('%d', n)
end


-- The config arguments (3 .. 17, 20, 23 and 24) validated once per distinct argument list where the
-- scripts run as a Functions library (PERSISTENT: the library's locals outlive a call), on every
-- call where they run with EVALSHA. A fleet has a few configs, so at most CONFIGS_MAX are kept
-- (the table starts again when full). The key joins the arguments with NUL bytes; two lists
-- that join alike (possible only with a NUL inside an argument, which the crate never sends)
-- share one validation, which gives a caller nothing it could not get by sending the other list.
local CONFIGS, CONFIG_COUNT, CONFIGS_MAX = {}, 0, 256

local function validate_config()
  local base = int_arg(7, 'base_recovery', 1)
  local c = {
    now = 0, clock_us = 0, rand = 0, channel = '', name = '', origin = '', reporter = '', shard_channel = '', note = '',
    failure = '',
    fingerprint = str_arg(3, 'config', 64, false),
    failure_threshold = int_arg(4, 'failure_threshold', 0),
    success_threshold = int_arg(5, 'success_threshold', 1),
    max_probes = int_arg(6, 'half_open_max_probes', 1),
    base = base,
    max = int_arg(8, 'max_recovery', base),
    multiplier = float_arg(9, 'multiplier', 1, 1000),
    jitter = float_arg(10, 'jitter', 0, 1),
    lease = int_arg(11, 'probe_lease', 1),
    state_ttl = int_arg(12, 'state_ttl', 1),
    metrics_ttl = int_arg(13, 'metrics_ttl', 1),
    failure_rate = float_arg(14, 'failure_rate', 0, 1),
    slow_rate = float_arg(15, 'slow_call_rate', 0, 1),
    minimum_calls = int_arg(16, 'minimum_calls', 1),
    window = int_arg(17, 'window', 10),
    failure_expiry = int_arg(20, 'failure_expiry', 1),
    quorum = int_arg(23, 'quorum', 1),
    fraction = float_arg(24, 'quorum_fraction', 0, 1),
    quorum_mode = false,
    quorum_text = '',
    windowed = false,
  }
  if c.window > MAX_DURATION then fail('window') end
  if c.failure_expiry > MAX_DURATION then fail('failure_expiry') end
  if c.quorum > MAX_QUORUM then fail('quorum') end
  c.quorum_mode = c.quorum > 1 or c.fraction > 0
  -- The rule as the state hash keeps it: "<quorum>" or "<quorum>:<fraction>".
  c.quorum_text = int(c.quorum)
  if c.fraction > 0 then c.quorum_text = c.quorum_text .. ':' .. ARGV[24] end
  -- Under a quorum the fleet keeps no window: each process applies the rate rules to its own calls.
  c.windowed = (c.failure_rate > 0 or c.slow_rate > 0) and not c.quorum_mode
  return c
end

-- The config of this call, with its clock (Redis TIME unless a test set now_ms), its random
-- draw and the per-breaker arguments (channel, name, origin). A cached config table is reused:
-- those fields are this call's (scripts never run at the same time).
local function parse_config()
  if #KEYS ~= 7 then fail('keys (expected 7)') end
  if #ARGV < OWN - 1 then fail('count (expected at least 24)') end
  local c
  if PERSISTENT then
    local A = ARGV
    local key = A[3] .. '\0' .. A[4] .. '\0' .. A[5] .. '\0' .. A[6] .. '\0' .. A[7] .. '\0' .. A[8] .. '\0'
      .. A[9] .. '\0' .. A[10] .. '\0' .. A[11] .. '\0' .. A[12] .. '\0' .. A[13] .. '\0' .. A[14] .. '\0'
      .. A[15] .. '\0' .. A[16] .. '\0' .. A[17] .. '\0' .. A[20] .. '\0' .. A[23] .. '\0' .. A[24]
    c = CONFIGS[key]
    if c == nil then
      c = validate_config()
      if CONFIG_COUNT >= CONFIGS_MAX then
        CONFIGS, CONFIG_COUNT = {}, 0
      end
      CONFIGS[key] = c
      CONFIG_COUNT = CONFIG_COUNT + 1
    end
  else
    c = validate_config()
  end
  local clock_ms, clock_us = redis_now_ms()
  if ARGV[1] == '' then c.now = clock_ms else c.now = int_arg(1, 'now_ms', 0) end
  c.clock_us = clock_us
  c.rand = float_arg(2, 'rand', 0, 1)
  c.channel = str_arg(18, 'events channel', 512, true)
  c.name = str_arg(19, 'name', 200, false)
  c.origin = str_arg(21, 'origin', 64, true)
  c.shard_channel = str_arg(22, 'shard channel', 512, true)
  c.note = ''
  c.failure = ''
  c.reporter = ''
  return c
end
