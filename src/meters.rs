//! Counters and gauges through the `metrics` facade (feature `metrics`); without the feature
//! every method is empty and costs nothing.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `redis_breaker_calls_total` | counter | `breaker`, `outcome` = `success` / `failure` / `ignore` / `timeout` |
//! | `redis_breaker_rejected_total` | counter | `breaker` |
//! | `redis_breaker_transitions_total` | counter | `breaker`, `from`, `to` |
//! | `redis_breaker_state` | gauge | `breaker`: 0 closed, 1 open, 2 half_open, 3 forced_open, 4 forced_closed |
//! | `redis_breaker_store_up` | gauge | `prefix`: 1 while Redis decides, 0 while degraded |
//!
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
    state: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Meters {
    pub(crate) fn new(name: &str) -> Meters {
        let calls = |outcome: &'static str| metrics::counter!("redis_breaker_calls_total", "breaker" => name.to_string(), "outcome" => outcome);
        Meters {
            name: name.to_string(),
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignore"),
            timeout: calls("timeout"),
            rejected: metrics::counter!("redis_breaker_rejected_total", "breaker" => name.to_string()),
            state: metrics::gauge!("redis_breaker_state", "breaker" => name.to_string()),
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

    pub(crate) fn state(&self, state: State) {
        self.state.set(f64::from(state.to_u8()));
    }

    pub(crate) fn transition(&self, from: Option<State>, to: State) {
        let from = from.map_or("corrupt", State::as_str);
        metrics::counter!("redis_breaker_transitions_total", "breaker" => self.name.clone(), "from" => from, "to" => to.as_str())
            .increment(1);
        self.state(to);
    }
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
    pub(crate) fn state(&self, _state: State) {}
    pub(crate) fn transition(&self, _from: Option<State>, _to: State) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn store_up(_prefix: &str, _up: bool) {}
