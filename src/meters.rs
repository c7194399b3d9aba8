//! Counters and gauges through the `metrics` facade (feature `metrics`); without the feature
//! every method is empty and costs nothing.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `redis_breaker_calls_total` | counter | `breaker`, `outcome` = `success` / `failure` / `ignore` / `timeout` |
//! | `redis_breaker_rejected_total` | counter | `breaker` |
//! | `redis_breaker_shadow_rejected_total` | counter | `breaker`: calls shadow mode let run that it would have rejected |
//! | `redis_breaker_throttled_total` | counter | `breaker`: calls a recovery ramp held back (not in `rejected`) |
//! | `redis_breaker_transitions_total` | counter | `breaker`, `from`, `to` |
//! | `redis_breaker_state` | gauge | `breaker`, `state` = each of the five states: 1 for the state the process last saw, 0 for the others |
//! | `redis_breaker_store_up` | gauge | `prefix`: 1 while Redis decides, 0 while degraded |
//! | `redis_breaker_redis_op_seconds` | histogram | every Redis operation's latency, `op_timeout` included |
//!
//! Each is described (`describe_*`, with its unit) when the first breaker is made.
//! Handles are taken when a breaker is made, so install the recorder before making breakers.

use crate::Outcome;
use crate::state::State;

#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct Meters {
    name: String,
    success: metrics::Counter,
    failure: metrics::Counter,
    ignored: metrics::Counter,
    timeout: metrics::Counter,
    rejected: metrics::Counter,
    shadow_rejected: metrics::Counter,
    throttled: metrics::Counter,
    /// One gauge per state, in `State::to_u8` order.
    states: [metrics::Gauge; 5],
}

#[cfg(feature = "metrics")]
const STATES: [State; 5] = [State::Closed, State::Open, State::HalfOpen, State::ForcedOpen, State::ForcedClosed];

/// Help text and units, given to the recorder once.
#[cfg(feature = "metrics")]
fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!("redis_breaker_calls_total", Unit::Count, "Calls that ran through a breaker, by outcome");
        describe_counter!("redis_breaker_rejected_total", Unit::Count, "Calls a breaker turned away");
        describe_counter!("redis_breaker_throttled_total", Unit::Count, "Calls a recovery ramp held back");
        describe_counter!(
            "redis_breaker_shadow_rejected_total",
            Unit::Count,
            "Calls a breaker in shadow mode would have turned away (they ran)"
        );
        describe_counter!("redis_breaker_transitions_total", Unit::Count, "State transitions seen by this process");
        describe_gauge!("redis_breaker_state", "1 for the state this process last saw a breaker in, 0 for the others");
        describe_gauge!("redis_breaker_store_up", "1 while Redis decides the calls, 0 while the degraded mode does");
        describe_gauge!(
            "redis_breaker_own_open",
            "Under a quorum: 1 while this process's own breaker is open or half-open (its own calls failed), else 0"
        );
        describe_histogram!("redis_breaker_redis_op_seconds", Unit::Seconds, "Latency of each Redis operation");
    });
}

#[cfg(feature = "metrics")]
impl Meters {
    pub(crate) fn new(name: &str) -> Meters {
        describe();
        let calls = |outcome: &'static str| metrics::counter!("redis_breaker_calls_total", "breaker" => name.to_string(), "outcome" => outcome);
        Meters {
            name: name.to_string(),
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignore"),
            timeout: calls("timeout"),
            rejected: metrics::counter!("redis_breaker_rejected_total", "breaker" => name.to_string()),
            shadow_rejected: metrics::counter!("redis_breaker_shadow_rejected_total", "breaker" => name.to_string()),
            throttled: metrics::counter!("redis_breaker_throttled_total", "breaker" => name.to_string()),
            states: STATES
                .map(|s| metrics::gauge!("redis_breaker_state", "breaker" => name.to_string(), "state" => s.as_str())),
        }
    }

    pub(crate) fn outcome(&self, outcome: Outcome, timed_out: bool) {
        let counter = match outcome {
            _ if timed_out => &self.timeout,
            Outcome::Success => &self.success,
            Outcome::Failure => &self.failure,
            Outcome::Ignore => &self.ignored,
        };
        counter.increment(1);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.increment(1);
    }

    pub(crate) fn throttled(&self) {
        self.throttled.increment(1);
    }

    pub(crate) fn shadow_rejected(&self) {
        self.shadow_rejected.increment(1);
    }

    pub(crate) fn state(&self, state: State) {
        for (s, gauge) in STATES.iter().zip(&self.states) {
            gauge.set(if *s == state { 1.0 } else { 0.0 });
        }
    }

    /// Under a quorum: whether this process's own breaker is open (or half-open).
    pub(crate) fn own_open(&self, open: bool) {
        metrics::gauge!("redis_breaker_own_open", "breaker" => self.name.clone()).set(if open { 1.0 } else { 0.0 });
    }

    pub(crate) fn transition(&self, from: Option<State>, to: State) {
        let from = from.map_or("corrupt", State::as_str);
        metrics::counter!("redis_breaker_transitions_total", "breaker" => self.name.clone(), "from" => from, "to" => to.as_str())
            .increment(1);
        self.state(to);
    }
}

/// Records one Redis operation's latency.
#[cfg(feature = "metrics")]
pub(crate) fn redis_op(took: std::time::Duration) {
    metrics::histogram!("redis_breaker_redis_op_seconds").record(took.as_secs_f64());
}

#[cfg(feature = "metrics")]
pub(crate) fn store_up(prefix: &str, up: bool) {
    metrics::gauge!("redis_breaker_store_up", "prefix" => prefix.to_string()).set(if up { 1.0 } else { 0.0 });
}

#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct Meters;

#[cfg(not(feature = "metrics"))]
impl Meters {
    pub(crate) fn new(_name: &str) -> Meters {
        Meters
    }
    pub(crate) fn outcome(&self, _outcome: Outcome, _timed_out: bool) {}
    pub(crate) fn rejected(&self) {}
    pub(crate) fn shadow_rejected(&self) {}
    pub(crate) fn throttled(&self) {}
    pub(crate) fn state(&self, _state: State) {}
    pub(crate) fn transition(&self, _from: Option<State>, _to: State) {}
    pub(crate) fn own_open(&self, _open: bool) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn store_up(_prefix: &str, _up: bool) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn redis_op(_took: std::time::Duration) {}
