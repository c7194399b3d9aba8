-- redis-breaker lib/args.lua: the arguments every script takes, validated (Rust twin: `CallArgs`
-- and `Params` in src/protocol/). The lib files, joined in the order clock, protocol, args, load,
-- transitions, rules, batch, commit, count, are the prelude of acquire.lua, record.lua and control.lua
-- (and of the library's count.lua): they read and validate, hold the transitions every script may
-- cause, and write nothing until `commit` (or `count_failure`, the short path of a failure that
-- only counts).
--
-- KEYS (every script but count.lua, which takes the state and metrics keys alone):
--   1 state   HASH  breaker:{name}:state    the state machine
--   2 probes  ZSET  breaker:{name}:probes   half-open leases: member = permit id, score = expiry ms
--   3 window  HASH  breaker:{name}:window   rolling-window buckets "<bucket>:c|f|s"
--   4 metrics HASH  breaker:{name}:metrics  cumulative outcome counters
--   5 history STREAM breaker:{name}:history the last transitions (about 100), with their reasons
--   6 reporters ZSET breaker:{name}:reporters processes whose own breaker opened (under a quorum):
--                                         member = reporter id (RECORD.reporter), score = when (ms)
--   7 processes ZSET breaker:{name}:processes processes that recorded calls (with quorum_fraction):
--                                         member = reporter id, score = when it last said so (ms)
--
-- ARGV (every script but count.lua, which takes its own five, COUNT): the common arguments, named in ARG of lib/protocol.lua (generated from
-- src/protocol/, where each is documented): those that differ per call, then the caller's config
-- fingerprint and config id; from OWN on, the script's own (ACQUIRE, RECORD, CONTROL); then, from
-- <script>.config on, the rest of the caller's config (CONFIG), left out where the scripts run as
-- a library that knows the config id (see parse_config). Scripts read every argument by name.
--
-- Reply (every script; count.lua's may be { 'general' } instead): REPLY of lib/protocol.lua, in that order: { verdict, state, incarnation,
--   epoch, failures, fseq, remaining_ms, stored_config, reason, announced, ramp_left_ms, ramp_ms,
--   ramp_permille }.

-- Library functions as locals: every global use is a table lookup in the script's environment.
local tonumber, unpack, pairs, ipairs, next, type = tonumber, unpack, pairs, ipairs, next, type
local floor, mmin, mmax, fmt, concat = math.floor, math.min, math.max, string.format, table.concat
local rcall, rpcall = redis.call, redis.pcall

local STATES = { closed = true, open = true, half_open = true, forced_open = true, forced_closed = true }
-- The state hash's fields: three strings, then these integers (in this order in `S.stored`,
-- and all of them in `empty_state`).
local INT_FIELDS = { 'incarnation', 'epoch', 'failures', 'fseq', 'successes', 'trips', 'opened_at',
  'open_until', 'changed_at', 'failed_at', 'ramp_until', 'ramp_ms', 'ramp_permille' }
-- What `load` asks the state hash for after its five text fields: INT_FIELDS, then `announced`
-- (present while the last transition was not announced: see `announce` in lib/commit.lua).
local INT_FIELDS_ANNOUNCED = { unpack(INT_FIELDS) }
INT_FIELDS_ANNOUNCED[#INT_FIELDS_ANNOUNCED + 1] = 'announced'


local function fail(what)
  -- A string error at level 0: every server version prints it (Redis 6 cannot print an error
  -- table raised with error()), as `ERR ... redis-breaker: bad argument <what> ...`.
  error('redis-breaker: bad argument ' .. what, 0)
end

-- An integer in [min, max] (max: MAX_INT when not given). Most are '0', which needs no parsing.
local function int_arg(i, name, min, max)
  local s = ARGV[i]
  if s == '0' and min <= 0 then return 0 end
  local v = tonumber(s)
  if v == nil or v ~= v or v < min or v > (max or MAX_INT) or v % 1 ~= 0 then fail(name) end
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


-- The configs validated where the scripts run as a Functions library (PERSISTENT: the library's
-- locals outlive a call), by config id (ARG.config_id), so that a call may send the id alone. The
-- library computes the id of the arguments it validated itself (the SHA-1 of the fingerprint and
-- the rest, each followed by a NUL byte) before it keeps a config under one: no caller can file a
-- config under another's id. A fleet has a few configs, so at most CONFIGS_MAX are kept (the table
-- starts again when full). With EVALSHA nothing outlives a call: every call sends its config.
local CONFIGS, CONFIG_COUNT, CONFIGS_MAX = {}, 0, 256

-- The config table of a call whose config arguments begin at ARGV[at] (CONFIG): every config
-- argument by its name (read_config in lib/protocol.lua), what follows from them, and room for the
-- fields each call sets (see parse_config).
local function validate_config(at)
  local c = read_config(at, int_arg, float_arg, str_arg)
  c.clock_us, c.reporter, c.note, c.failure = 0, '', '', ''
  c.quorum_mode = c.quorum > 1 or c.fraction > 0
  -- The rule as the state hash keeps it: "<quorum>" or "<quorum>:<fraction>".
  c.quorum_text = int(c.quorum)
  if c.fraction > 0 then c.quorum_text = c.quorum_text .. ':' .. ARGV[at + CONFIG.fraction] end
  -- Under a quorum the fleet keeps no window: each process applies the rate rules to its own calls.
  c.windowed = (c.failure_rate > 0 or c.slow_rate > 0) and not c.quorum_mode
  return c
end

-- The config of this call, with the arguments that differ per call (read_call in lib/protocol.lua:
-- its clock, Redis TIME unless a test set now_ms, its random draw, the breaker's name and where its
-- events go). `at`: where the script's config arguments begin (<script>.config), when sent; a
-- call that ends before them names its config by its id alone, which the library must know: else
-- it is refused, before anything is written, and the caller sends it again in full. A cached
-- config table is reused: those fields are this call's (scripts never run at the same time).
local function parse_config(at)
  if #KEYS ~= 7 then fail('keys (expected 7)') end
  local n = #ARGV
  local c
  if n == at - 1 then
    c = PERSISTENT and CONFIGS[ARGV[ARG.config_id]]
    if not c then error('redis-breaker: unknown config (send it in full)', 0) end
  elseif n == at + CONFIG_LEN - 1 then
    c = validate_config(at)
    local id = ARGV[ARG.config_id]
    if PERSISTENT and CONFIGS[id] == nil
      and id == redis.sha1hex(ARGV[ARG.fingerprint] .. '\0' .. concat(ARGV, '\0', at, n) .. '\0') then
      if CONFIG_COUNT >= CONFIGS_MAX then
        CONFIGS, CONFIG_COUNT = {}, 0
      end
      CONFIGS[id] = c
      CONFIG_COUNT = CONFIG_COUNT + 1
    end
  else
    fail('count (expected ' .. int(at - 1) .. ' or ' .. int(at + CONFIG_LEN - 1) .. ')')
  end
  local clock_ms, clock_us = redis_now_ms()
  read_call(c, clock_ms, int_arg, float_arg, str_arg)
  c.clock_us = clock_us
  c.note = ''
  c.failure = ''
  c.reporter = ''
  return c
end
