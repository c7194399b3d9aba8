-- redis-breaker: preflight — would this Redis user be refused a command the scripts run on this
-- breaker's keys and channel? Run once per connection before the first script call, so a
-- missing permission is one clear error before anything is written, not a script that fails
-- after it wrote the state. Reads and writes nothing. Its prelude: none.
-- Needs redis.acl_check_cmd (Redis >= 7.0, Valkey); earlier servers answer 'unchecked'.
-- KEYS: state, probes, window, metrics, history, reporters, processes (as in lib/args.lua). The
--   commands only a quorum breaker runs on those two (ZCOUNT, ZSCORE, ZREMRANGEBYSCORE, ZREM) are not
--   asked: a user without them is refused at its first report, before anything is written.
-- ARGV: 1 the channel events are published on ('' = none), 2 how: 'publish' or 'spublish',
--   3 the record function of the crate's Functions library ('' = not asked).
-- Reply: { verdict, server version ('' before 7.0: redis.REDIS_VERSION is new in 7.0), ... }:
--   { 'unchecked', '' } | { 'ok', version, flags... } | { 'denied', version, command, ... }
--   (lower case, each once). Flags: 'publish' when only publishing is refused (the scripts
--   publish with pcall: nothing is half-written, but no other process hears this one's
--   transitions); 'functions' when the user may call the library's functions on these keys
--   and load the library (FCALL, FUNCTION LOAD).
local version = redis.REDIS_VERSION or ''
if not redis.acl_check_cmd then return { 'unchecked', version } end
local denied, seen = { 'denied', version }, {}
local function check(...)
  local ran, allowed = pcall(redis.acl_check_cmd, ...)
  local name = string.lower((...))
  if ran and not allowed and not seen[name] then
    seen[name] = true
    denied[#denied + 1] = name
  end
end
local state, probes, window, metrics, history, reporters, processes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6], KEYS[7]
check('TIME')
for _, key in ipairs({ state, probes, window, metrics, history, reporters, processes }) do
  check('TYPE', key)
  check('DEL', key)
  check('PEXPIRE', key, 1)
  check('PTTL', key)
end
check('HMGET', state, 'state')
check('HSET', state, 'state', 'closed')
check('PERSIST', state)
check('ZRANGE', probes, 0, -1, 'WITHSCORES')
check('ZADD', probes, 1, 'p')
check('ZADD', reporters, 1, 'c')
check('ZADD', processes, 1, 'c')
check('HDEL', state, 'announced')
check('HGETALL', window)
check('HSET', window, 'len', 1)
check('HDEL', window, 'b')
check('HINCRBY', window, 'b', 1)
check('HGETALL', metrics)
check('HINCRBY', metrics, 'calls', 1)
check('HSET', metrics, 'calls', 1)
check('HSETNX', metrics, 'since', 1)
check('XADD', history, 'MAXLEN', '~', 100, '*', 'time', 1)
if #denied > 2 then return denied end
-- Publishing is not needed to write nothing half-way, but a transition nobody hears about
-- leaves the other processes trusting their snapshots until they expire.
local reply = { 'ok', version }
if ARGV[1] ~= '' then
  local ran, allowed = pcall(redis.acl_check_cmd, string.upper(ARGV[2] or 'publish'), ARGV[1], 'm')
  if ran and not allowed then reply[#reply + 1] = 'publish' end
end
if ARGV[3] and ARGV[3] ~= '' then
  local ran, call = pcall(redis.acl_check_cmd, 'FCALL', ARGV[3], 7, state, probes, window, metrics, history, reporters,
    processes)
  local ran_load, load = pcall(redis.acl_check_cmd, 'FUNCTION', 'LOAD', 'code')
  if ran and call and ran_load and load then reply[#reply + 1] = 'functions' end
end
return reply
