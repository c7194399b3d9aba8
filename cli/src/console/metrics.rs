//! `GET /metrics`: every breaker's state and the fleet-wide counters of its metrics hash, in
//! the OpenMetrics text format (which Prometheus scrapes), encoded by `prometheus-client`,
//! from the last shared read. The values are what Redis holds for the whole fleet, which no
//! single process's `metrics` facade has: hence `fleet` in their names, so that they cannot be
//! summed by mistake with the library's per-process `redis_breaker_state` and
//! `redis_breaker_calls_total`. The labels are the library's (`breaker`, `outcome`, `state`).

use super::fleet::Fleet;
use super::notify::Notifier;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis_breaker::State;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

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

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn seconds(value: f64) -> Gauge<f64, AtomicU64> {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    g
}

/// The text of one scrape, from the last shared read; `started` is when the scrape began.
/// Each breaker adds 18 series (docs/console.md): five of the state, one each of its time,
/// retry-after, trips, probes, reporters and recovery ramp, three of calls (one per outcome),
/// one each of rejected, throttled, slow and opened; and one per alert that holds.
pub(crate) fn exposition(fleet: &Fleet, notifier: Option<&Notifier>, started: Instant) -> String {
    let data = &fleet.data;
    let mut registry = Registry::with_prefix("redis_breaker");
    let state = Family::<Labels, Gauge>::default();
    let changed = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let retry_after = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let [trips, probes, reporters] = [(); 3].map(|()| Family::<Labels, Gauge>::default());
    let ramp = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let calls = Family::<Labels, Counter>::default();
    let counters: [(&str, &str, Family<Labels, Counter>); 4] = [
        ("fleet_rejected", "Calls rejected without running, fleet-wide", Family::default()),
        ("fleet_throttled", "Calls a recovery ramp held back, fleet-wide (not in rejected)", Family::default()),
        ("fleet_slow_calls", "Calls at least slow_call_duration long, fleet-wide", Family::default()),
        ("fleet_opened", "Times the breaker opened", Family::default()),
    ];
    for r in &data.rows {
        let s = &r.status;
        for st in STATES {
            state.get_or_create(&labels([("breaker", &s.name), ("state", st.as_str())])).set(i64::from(s.state == st));
        }
        let one = labels([("breaker", &s.name)]);
        changed.get_or_create(&one).set(s.changed_at_ms as f64 / 1000.0);
        retry_after.get_or_create(&one).set(s.retry_after_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        trips.get_or_create(&one).set(gauge(s.trips));
        probes.get_or_create(&one).set(gauge(s.probes.len() as u64));
        reporters.get_or_create(&one).set(gauge(s.reporters.len() as u64));
        ramp.get_or_create(&one).set(s.ramp.map_or(1.0, |r| r.admitted()));
        let m = &s.metrics;
        // A timeout is also a failure in the metrics hash: counted once, under `timeout`.
        let outcomes =
            [("success", m.successes), ("failure", m.failures.saturating_sub(m.timeouts)), ("timeout", m.timeouts)];
        for (outcome, v) in outcomes {
            calls.get_or_create(&labels([("breaker", &s.name), ("outcome", outcome)])).inc_by(v);
        }
        for ((_, _, family), v) in counters.iter().zip([m.rejected, m.throttled, m.slow, m.opened]) {
            family.get_or_create(&one).inc_by(v);
        }
    }
    registry.register("fleet_state", "1 for the state the breaker is in, 0 for the others (Redis)", state);
    registry.register(
        "fleet_state_changed_timestamp_seconds",
        "Time of the breaker's last transition (Redis's clock; 0 when never)",
        changed,
    );
    registry.register("fleet_retry_after_seconds", "Time left to the state's deadline (0 when none)", retry_after);
    registry.register("fleet_trips", "Opens since the last full close (the backoff exponent)", trips);
    registry.register(
        "fleet_ramp_admitted_ratio",
        "The fraction of calls each process admits: below 1 while a recovery ramp runs",
        ramp,
    );
    registry.register("fleet_probes_in_flight", "Half-open probes out now", probes);
    registry.register(
        "fleet_quorum_reporters",
        "Under a quorum: processes whose own breaker opened (reports older than the window are swept at the next)",
        reporters,
    );
    registry.register(
        "fleet_calls",
        "Calls that ran, fleet-wide, by outcome (a timeout counts once, as timeout)",
        calls,
    );
    for (name, help, family) in counters {
        registry.register(name, help, family);
    }
    let alert = Family::<Labels, Gauge>::default();
    for a in &data.alerts {
        alert.get_or_create(&labels([("breaker", &a.breaker), ("kind", a.kind)])).set(1);
    }
    registry.register("console_alert", "1 for each alert that holds (see /api/alerts)", alert);
    console(&mut registry, fleet);
    if let Some(n) = notifier {
        n.register(&mut registry);
    }
    registry.register(
        "console_scrape_duration_seconds",
        "Time this scrape took (it reads no Redis: it serves the last shared read)",
        seconds(started.elapsed().as_secs_f64()),
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// The console's own series: Redis up, the shared read's time and age, the breakers counted.
fn console(registry: &mut Registry, fleet: &Fleet) {
    let data = &fleet.data;
    let up = Gauge::<i64>::default();
    up.set(i64::from(fleet.error.is_none() && fleet.started.is_some()));
    registry.register("console_redis_up", "1 when the console's last read of Redis succeeded, else 0", up);
    registry.register(
        "console_read_duration_seconds",
        "Time the last successful shared read of every breaker took",
        seconds(data.took.as_secs_f64()),
    );
    // Never read: as old as the console (the age of nothing served), i.e. growing from 0.
    let age = fleet.age().map_or(0.0, |a| a.as_secs_f64());
    registry.register(
        "console_read_age_seconds",
        "How old the data served is (the last successful read)",
        seconds(age),
    );
    let breakers = Gauge::<i64>::default();
    breakers.set(gauge(data.rows.len() as u64));
    registry.register("console_breakers", "Breakers under the prefix (those --breakers names)", breakers);
    let skipped = Gauge::<i64>::default();
    skipped.set(gauge(data.skipped.len() as u64));
    registry.register(
        "console_skipped_names",
        "Keys under the prefix whose name cannot be a breaker, skipped (the console logs each name once, with -v)",
        skipped,
    );
}
