//! The `metrics` facade: counters and gauges with the documented names and labels.
//!
//! A test binary of its own, not a module of `tests/it`: the recorder is global to the process,
//! and the library describes its metrics to it once, when the process makes its first breaker.
//! Only a binary of its own can install the recorder before any breaker is made (in `tests/it`
//! other tests would make theirs first, and would move the unlabelled latency histogram and the
//! default prefix's `store_up` gauge this test reads).
#![cfg(feature = "metrics")]

#[path = "it/support.rs"]
mod support;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use redis_breaker::Config;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::*;

/// Keeps every counter and gauge in memory, keyed `name{label=value,...}`.
#[derive(Default)]
struct Memory {
    cells: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Metric name -> (unit, help text) as described.
    described: Mutex<HashMap<String, (Option<Unit>, String)>>,
    /// Values recorded into each histogram, by name.
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

impl Memory {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        labels.sort();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        self.cells.lock().unwrap().entry(id).or_default().clone()
    }

    fn get(&self, id: &str) -> u64 {
        self.cells.lock().unwrap().get(id).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn gauge(&self, id: &str) -> f64 {
        f64::from_bits(self.get(id))
    }

    fn describe(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.described.lock().unwrap().insert(name.as_str().to_string(), (unit, help.to_string()));
    }
}

struct Shared(Arc<Memory>);

impl Recorder for Shared {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe(name, unit, help);
    }
    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe(name, unit, help);
    }
    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe(name, unit, help);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let samples = self.0.histograms.lock().unwrap().entry(key.name().to_string()).or_default().clone();
        Histogram::from_arc(samples)
    }
}

fn memory() -> Arc<Memory> {
    static MEMORY: OnceLock<Arc<Memory>> = OnceLock::new();
    MEMORY
        .get_or_init(|| {
            let memory = Arc::new(Memory::default());
            metrics::set_global_recorder(Shared(memory.clone())).expect("the only recorder");
            memory
        })
        .clone()
}

#[tokio::test]
async fn calls_rejections_transitions_and_state_are_recorded() {
    let m = memory();
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("meters");
    let b = client.breaker(&name, Config::builder().failure_threshold(2).build().unwrap()).unwrap();
    for _ in 0..3 {
        succeed(&b).await.unwrap();
    }
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    for _ in 0..4 {
        assert!(succeed(&b).await.unwrap_err().is_rejected());
    }
    let id = |metric: &str, extra: &str| format!("{metric}{{breaker={name}{extra}}}");
    assert_eq!(m.get(&id("redis_breaker_calls_total", ",outcome=success")), 3);
    assert_eq!(m.get(&id("redis_breaker_calls_total", ",outcome=failure")), 2);
    assert_eq!(m.get(&id("redis_breaker_rejected_total", "")), 4);
    // One series per state: 1 for the state seen, 0 for the others.
    assert_eq!(m.gauge(&id("redis_breaker_state", ",state=open")), 1.0, "open");
    assert_eq!(m.gauge(&id("redis_breaker_state", ",state=closed")), 0.0);
    assert_eq!(m.gauge(&id("redis_breaker_state", ",state=half_open")), 0.0);
    let transition = format!("redis_breaker_transitions_total{{breaker={name},from=closed,to=open}}");
    let start = std::time::Instant::now();
    while m.get(&transition) != 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "the transition was not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(m.gauge("redis_breaker_store_up{prefix=breaker}"), 1.0);

    // Every metric is described, with its unit where it has one.
    let described = m.described.lock().unwrap().clone();
    for name in [
        "redis_breaker_calls_total",
        "redis_breaker_rejected_total",
        "redis_breaker_transitions_total",
        "redis_breaker_state",
        "redis_breaker_store_up",
        "redis_breaker_own_open",
        "redis_breaker_redis_op_seconds",
    ] {
        assert!(described.get(name).is_some_and(|(_, help)| !help.is_empty()), "{name} is not described");
    }
    assert_eq!(described["redis_breaker_redis_op_seconds"].0, Some(Unit::Seconds));
    assert_eq!(described["redis_breaker_calls_total"].0, Some(Unit::Count));
    // Each Redis operation's latency was recorded (at least the two failures' script calls).
    let latencies = m.histograms.lock().unwrap().get("redis_breaker_redis_op_seconds").cloned().expect("histogram");
    let samples = latencies.0.lock().unwrap().clone();
    assert!(samples.len() >= 2 && samples.iter().all(|s| *s >= 0.0 && *s < 5.0), "{samples:?}");
}

/// What one flush and one failure cost Redis (INFO commandstats, the commands the script runs
/// included; before batch ids: 6 each), and what the ids leave in the metrics hash: one
/// `batch:<sender>` field per lane that sent. A first attempt is never counted already, so its
/// id costs one HSET and no read.
#[tokio::test]
async fn a_batch_id_costs_a_flush_and_a_failure_one_command_and_the_hash_keeps_one_field_per_lane() {
    let redis = private_redis().await;
    let client = client_flushing_every(&redis, Duration::from_secs(60), Duration::from_secs(600)).await;
    let name = unique("flush-cost");
    let b = client.breaker(&name, Config::default()).unwrap();
    succeed(&b).await.unwrap();
    client.flush().await.unwrap(); // the lane's first batch (it also tidies the hash)
    const FLUSHES: u64 = 20;
    let before = redis.commandstats().await;
    for _ in 0..FLUSHES {
        for _ in 0..5 {
            succeed(&b).await.unwrap();
        }
        client.flush().await.unwrap();
    }
    let after = redis.commandstats().await;
    let per_flush: std::collections::BTreeMap<String, f64> = after
        .iter()
        .filter(|(c, _)| !is_the_tests_own(c))
        .map(|(c, n)| (c.clone(), (n - before.get(c).copied().unwrap_or(0)) as f64 / FLUSHES as f64))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let total: f64 = per_flush.values().sum();
    println!("figures: one flush of a healthy breaker's successes runs {total} commands: {per_flush:?}");
    let hash = metrics_hash(&redis, &name).await;
    assert_eq!((hash["calls"], hash["successes"]), (101, 101), "{hash:?}");
    assert_eq!(hash.keys().filter(|f| f.starts_with("batch:")).count(), 1, "one lane sent them all: {hash:?}");
    assert_eq!((per_flush.get("hget"), per_flush.get("hset")), (None, Some(&1.0)), "the batch id: {per_flush:?}");
    assert!(total <= 7.0, "a flush stays small: {per_flush:?}");

    // A failure's record carries an id of its own (its outcome counts under it if its reply is lost).
    let f =
        client.breaker(&unique("failure-cost"), Config::builder().failure_threshold(1000).build().unwrap()).unwrap();
    fail(&f).await.unwrap_err();
    fail(&f).await.unwrap_err();
    let before = redis.commandstats().await;
    for _ in 0..FLUSHES {
        fail(&f).await.unwrap_err();
    }
    let after = redis.commandstats().await;
    let per_failure: std::collections::BTreeMap<String, f64> = after
        .iter()
        .filter(|(c, _)| !is_the_tests_own(c))
        .map(|(c, n)| (c.clone(), (n - before.get(c).copied().unwrap_or(0)) as f64 / FLUSHES as f64))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let total: f64 = per_failure.values().sum();
    println!("figures: one failure's record runs {total} commands: {per_failure:?}");
    assert!(total <= 7.0, "a failure's record stays small: {per_failure:?}");
}

/// Commands that are not the breaker's: INFO and the connection set-up of the test's own
/// reads (CLIENT SETINFO, which Redis 6.2 counts as `client`), and the subscription's keepalive
/// PING.
fn is_the_tests_own(command: &str) -> bool {
    matches!(command, "info" | "ping" | "hello") || command.starts_with("client")
}
