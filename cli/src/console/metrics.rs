//! `GET /metrics`: every breaker's state and the fleet-wide counters of its metrics hash, in
//! the OpenMetrics text format (which Prometheus scrapes), encoded by `prometheus-client`.
//! The counters are what Redis holds for the whole fleet, which no single process's `metrics`
//! facade has; hence the `redis_breaker_fleet_` prefix.

use super::alerts::Alert;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis_breaker::State;
use redis_breaker::status::Status;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Labels whose values are escaped as the text format requires (`\\`, `\"`, `\n`):
/// `prometheus-client` writes a `String` value as it is, and breaker names may hold `"` and
/// `\`, which would otherwise add labels or break the exposition.
fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(key, value)| (key, escaped(value))).collect()
}

fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

const STATES: [State; 5] = [State::Closed, State::Open, State::HalfOpen, State::ForcedOpen, State::ForcedClosed];

/// The text of one scrape: made fresh from the statuses read for it (and the count of names
/// under the prefix that cannot be breakers, skipped).
pub(crate) fn exposition(all: &[Status], skipped: usize, alerts: &[Alert], read_in: Duration) -> String {
    let mut registry = Registry::with_prefix("redis_breaker");
    let state = Family::<Labels, Gauge>::default();
    let retry_after = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let trips = Family::<Labels, Gauge>::default();
    let probes = Family::<Labels, Gauge>::default();
    let reporters = Family::<Labels, Gauge>::default();
    let counters: [(&str, &str, Family<Labels, Counter>); 7] = [
        ("fleet_calls", "Calls that ran, fleet-wide (the metrics hash)", Family::default()),
        ("fleet_successes", "Successful calls, fleet-wide", Family::default()),
        ("fleet_failures", "Failed calls, fleet-wide (timeouts included)", Family::default()),
        ("fleet_slow", "Calls at least slow_call_duration long, fleet-wide", Family::default()),
        ("fleet_rejected", "Calls rejected without running, fleet-wide", Family::default()),
        ("fleet_timeouts", "Calls that exceeded call_timeout, fleet-wide", Family::default()),
        ("fleet_opened", "Times the breaker opened", Family::default()),
    ];
    for s in all {
        for st in STATES {
            state.get_or_create(&labels([("breaker", &s.name), ("state", st.as_str())])).set(i64::from(s.state == st));
        }
        let one = labels([("breaker", &s.name)]);
        retry_after.get_or_create(&one).set(s.retry_after_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        trips.get_or_create(&one).set(i64::try_from(s.trips).unwrap_or(i64::MAX));
        probes.get_or_create(&one).set(i64::try_from(s.probes.len()).unwrap_or(i64::MAX));
        reporters.get_or_create(&one).set(i64::try_from(s.reporters.len()).unwrap_or(i64::MAX));
        let m = &s.metrics;
        let values = [m.calls, m.successes, m.failures, m.slow, m.rejected, m.timeouts, m.opened];
        for ((_, _, family), v) in counters.iter().zip(values) {
            family.get_or_create(&one).inc_by(v);
        }
    }
    registry.register("state", "1 for the state the breaker is in, 0 for the others", state);
    registry.register("retry_after_seconds", "Time left to the state's deadline (0 when none)", retry_after);
    registry.register("trips", "Opens since the last full close (the backoff exponent)", trips);
    registry.register("probes_in_flight", "Half-open probes out now", probes);
    registry.register(
        "quorum_reporters",
        "Under a quorum: processes whose own breaker opened (reports older than the window are swept at the next)",
        reporters,
    );
    for (name, help, family) in counters {
        registry.register(name, help, family);
    }
    let alert = Family::<Labels, Gauge>::default();
    for a in alerts {
        alert.get_or_create(&labels([("breaker", &a.breaker), ("kind", a.kind)])).set(1);
    }
    registry.register("alert", "1 for each alert that holds (see /api/alerts)", alert);
    let breakers = Gauge::<i64>::default();
    breakers.set(i64::try_from(all.len()).unwrap_or(i64::MAX));
    registry.register("console_breakers", "Breakers under the prefix", breakers);
    let skipped_names = Gauge::<i64>::default();
    skipped_names.set(i64::try_from(skipped).unwrap_or(i64::MAX));
    registry.register(
        "console_skipped_names",
        "Keys under the prefix whose name cannot be a breaker, skipped (the console logs each name once, with -v)",
        skipped_names,
    );
    let read = Gauge::<f64, AtomicU64>::default();
    read.set(read_in.as_secs_f64());
    registry.register("console_read_seconds", "Time this scrape took to read every breaker from Redis", read);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}
