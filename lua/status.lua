-- redis-breaker: status — read one breaker's keys for operators (the CLI's `status` and `list`).
-- Reads only; its prelude is lib/clock.lua alone.
-- KEYS: state, probes, window, metrics, history, reporters, processes (as in lib/args.lua; the
--   history is not read).
-- ARGV: none.
-- Reply: { now_ms, state_hash_flat, probes_flat (member, score, ...), metrics_flat,
--          pttl_state, pttl_probes, pttl_window, pttl_metrics, reporters_flat (member, score, ...),
--          pttl_reporters, processes (their count) } where a key of the wrong type reads as empty
--          (the next write resets it). The members ' since' and ' window' (negative scores) are
--          the keys' bookkeeping, not reporters or processes.
-- Transitions: none.
local now = redis_now_ms()

local function read(key, want, cmd, ...)
  if redis.call('TYPE', key)['ok'] ~= want then return {} end
  return redis.call(cmd, key, ...)
end

return {
  string.format('%d', now),
  read(KEYS[1], 'hash', 'HGETALL'),
  read(KEYS[2], 'zset', 'ZRANGE', 0, -1, 'WITHSCORES'),
  read(KEYS[4], 'hash', 'HGETALL'),
  redis.call('PTTL', KEYS[1]),
  redis.call('PTTL', KEYS[2]),
  redis.call('PTTL', KEYS[3]),
  redis.call('PTTL', KEYS[4]),
  read(KEYS[6], 'zset', 'ZRANGE', 0, '+inf', 'BYSCORE', 'WITHSCORES'),
  redis.call('PTTL', KEYS[6]),
  #read(KEYS[7], 'zset', 'ZRANGE', 0, '+inf', 'BYSCORE'),
}
