-- redis-breaker: count — a failure that only counts, sent alone where the scripts run as a library
-- (FCALL): with the two keys and five arguments the short path of a failure reads (lib/count.lua)
-- instead of record.lua's seven keys and about thirty arguments, which cost the server more to
-- take than the short path costs to run. The caller sends it for a failure that, by its snapshot,
-- trips nothing (`Record::only_counts` in src/protocol/op.rs); it counts exactly what record.lua
-- would, by the same `count_failure`, and writes nothing otherwise: a breaker that is not closed, a
-- failure that trips, TTLs due for their refresh, a value the general path repairs, a lane or
-- metrics hash that is new, a stale permit, a batch sent again, a config with a window or a quorum,
-- or one the library does not know (loaded anew) are record.lua's, to which the caller then sends
-- the same failure.
-- KEYS: state, metrics (KEYS[1] and KEYS[4] of record.lua).
-- ARGV: COUNT of lib/protocol.lua: the caller's clock, its config id, the permit's incarnation and
--   epoch, the batch id.
-- Reply: REPLY (lib/protocol.lua) with verdict 'applied', as record.lua answers; or { 'general' }:
--   nothing was written, send it to record.lua.
if #KEYS ~= 2 then fail('keys (expected 2)') end
if #ARGV ~= COUNT.batch_id then fail('count (expected ' .. int(COUNT.batch_id) .. ')') end
local c = CONFIGS[str_arg(COUNT.config_id, 'config id', 40, false)]
if not c or c.windowed or c.quorum_mode then return { 'general' } end
local p_inc = int_arg(COUNT.incarnation, 'permit incarnation', 0)
local p_epoch = int_arg(COUNT.epoch, 'permit epoch', 0)
local sender, seq, again = parse_batch_id(COUNT.batch_id)
if again then return { 'general' } end
if ARGV[COUNT.now] == '' then c.now = redis_now_ms() else c.now = int_arg(COUNT.now, 'now_ms', 0, MAX_INT) end
return count_failure(c, { sender = sender, seq = seq }, p_inc, p_epoch, KEYS[1], KEYS[2]) or { 'general' }
