//! [`Params`]: the caller's config as every script takes it, one row per argument. A new config
//! field that a script needs is one row here (and its rule, in Lua and in `machine/`).

#[cfg(test)]
use super::args::Check;
use super::args::arguments;
use crate::config::Config;
use std::time::Duration;

arguments! {
    /// Everything a script call needs from the caller's config, in script units (ms): the common
    /// arguments after [`CallArgs`](super::CallArgs), which the scripts validate once per
    /// distinct config where they run as a library. The Rust machine takes the same values.
    #[derive(Debug, Clone)]
    struct Params from Config {
        /// The fingerprint of the caller's config, which the state hash keeps.
        fingerprint: String = |c| c.fingerprint(),
            Check::Text { min: 1, max: 64 }, "config";
        /// Consecutive failures that open a closed breaker (0 = the rule is off).
        failure_threshold: u64 = |c| c.failure_threshold.into(),
            Check::Int { min: 0, max: "MAX_INT" }, "failure_threshold";
        /// Probe successes that close a half-open breaker.
        success_threshold: u64 = |c| c.success_threshold.into(),
            Check::Int { min: 1, max: "MAX_INT" }, "success_threshold";
        /// Half-open probes out at once, fleet-wide.
        max_probes: u64 = |c| c.half_open_max_probes.into(),
            Check::Int { min: 1, max: "MAX_INT" }, "half_open_max_probes";
        /// The open time after the first trip (ms).
        base: u64 = |c| ms(c.base_recovery),
            Check::Int { min: 1, max: "MAX_INT" }, "base_recovery";
        /// The cap on the open time (ms), at least `base`.
        max: u64 = |c| ms(c.max_recovery),
            Check::IntFrom { min: "base", max: "MAX_INT" }, "max_recovery";
        /// Growth of the open time per further trip in a row.
        multiplier: f64 = |c| c.multiplier,
            Check::Float { min: 1.0, max: 1000.0 }, "multiplier";
        /// Spread of the open time, a fraction.
        jitter: f64 = |c| c.jitter,
            Check::Float { min: 0.0, max: 1.0 }, "jitter";
        /// The longest a half-open probe holds its permit (ms).
        lease: u64 = |c| ms(c.probe_lease),
            Check::Int { min: 1, max: "MAX_INT" }, "probe_lease";
        /// How long an idle breaker's keys live after the last write (ms).
        state_ttl: u64 = |c| ms(c.state_ttl),
            Check::Int { min: 1, max: "MAX_INT" }, "state_ttl";
        /// How long the metrics hash lives after the last write (ms).
        metrics_ttl: u64 = |c| ms(c.metrics_ttl),
            Check::Int { min: 1, max: "MAX_INT" }, "metrics_ttl";
        /// The failure-rate threshold (0 = the rule is off).
        failure_rate: f64 = |c| c.failure_rate.unwrap_or(0.0),
            Check::Float { min: 0.0, max: 1.0 }, "failure_rate";
        /// The slow-call-rate threshold (0 = the rule is off).
        slow_rate: f64 = |c| c.slow_call_rate.unwrap_or(0.0),
            Check::Float { min: 0.0, max: 1.0 }, "slow_call_rate";
        /// Calls the window must hold before a rate rule may trip.
        minimum_calls: u64 = |c| c.minimum_calls.into(),
            Check::Int { min: 1, max: "MAX_INT" }, "minimum_calls";
        /// The length of the rolling window (ms), 10 buckets.
        window: u64 = |c| ms(c.window),
            Check::Int { min: 10, max: "MAX_DURATION" }, "window";
        /// The consecutive count starts again when no failure was recorded for this long (ms).
        failure_expiry: u64 = |c| ms(c.failure_expiry),
            Check::Int { min: 1, max: "MAX_DURATION" }, "failure_expiry";
        /// Distinct processes whose own trip rule must hold (reported with record's 'failing')
        /// before the fleet opens; 1 = the closed-state rules count the fleet's outcomes.
        quorum: u64 = |c| c.quorum.into(),
            Check::Int { min: 1, max: "MAX_QUORUM" }, "quorum";
        /// The quorum's fraction in [0, 1] (0 = none): the fleet opens only when at least this
        /// fraction of the processes that recorded calls within the window (the processes key)
        /// reported, and `quorum` of them. Either above its default (1, 0) puts the breaker under
        /// a quorum.
        fraction: f64 = |c| c.quorum_fraction.unwrap_or(0.0),
            Check::Float { min: 0.0, max: 1.0 }, "quorum_fraction";
        /// The recovery ramp (ms; 0 = off): after half_open -> closed on probe successes, the
        /// fraction of calls admitted rises from `ramp_permille` to all over this long.
        ramp: u64 = |c| ms(c.recovery_ramp),
            Check::Int { min: 0, max: "MAX_RAMP" }, "recovery_ramp";
        /// Where a recovery ramp starts, in per mille of the calls.
        ramp_permille: u64 = |c| c.ramp_permille(),
            Check::Int { min: 1, max: "PER_MILLE" }, "ramp_start";
    }
}

/// A duration in ms, as the scripts count time.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Params {
    /// Whether the fleet keeps a rolling window: a rate rule is on and the fleet's outcomes
    /// decide (no quorum; under one, each process keeps its own window).
    pub(crate) fn windowed(&self) -> bool {
        (self.failure_rate > 0.0 || self.slow_rate > 0.0) && !self.under_quorum()
    }

    /// Whether the fleet opens by a quorum of processes (`quorum` > 1 or a `quorum_fraction`).
    pub(crate) fn under_quorum(&self) -> bool {
        self.quorum > 1 || self.fraction > 0.0
    }

    /// The quorum rule as the state hash keeps it: `<quorum>` or `<quorum>:<fraction>`.
    pub(crate) fn quorum_text(&self) -> String {
        if self.fraction > 0.0 { format!("{}:{}", self.quorum, self.fraction) } else { self.quorum.to_string() }
    }

    /// The rules a process applies to its own calls under a quorum: the same, with no quorum.
    pub(crate) fn own_rules(&self) -> Params {
        Params { quorum: 1, fraction: 0.0, ..self.clone() }
    }
}
