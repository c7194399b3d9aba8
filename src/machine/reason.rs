//! Every reason the machine writes into the state, once, worded as `REASON` in
//! `lua/lib/args.lua` (the property test compares them).

pub(super) fn consecutive(failures: u64) -> String {
    format!("{failures} consecutive failures")
}

pub(super) fn failure_rate(rate: f64, threshold: f64, calls: u64) -> String {
    format!("failure rate {rate:.2} >= {threshold:.2} over {calls} calls")
}

pub(super) fn slow_rate(rate: f64, threshold: f64, calls: u64) -> String {
    format!("slow call rate {rate:.2} >= {threshold:.2} over {calls} calls")
}

pub(super) const RECOVERY: &str = "recovery timeout elapsed";
pub(super) const PROBE_FAILED: &str = "probe failed";

pub(super) fn probes_succeeded(successes: u64) -> String {
    format!("{successes} probe successes")
}

pub(super) fn quorum(reporters: u64, quorum: u64) -> String {
    format!("failing processes {reporters} >= quorum {quorum}")
}

pub(super) const FORCED_CLOSE_EXPIRED: &str = "forced close expired";
pub(super) const RESET: &str = "reset by operator";

/// `what` is "forced open" or "forced closed"; `duration_ms` 0 means until reset.
pub(super) fn forced(what: &str, duration_ms: u64) -> String {
    if duration_ms == 0 {
        format!("{what} by operator until reset")
    } else {
        format!("{what} by operator for {duration_ms}ms")
    }
}

/// The in-process breaker of a Redis client starts from the snapshot (no Lua twin).
pub(super) const SEEDED: &str = "continued from the last state seen in redis";
