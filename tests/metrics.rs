//! The `metrics` facade: counters and gauges with the documented names and labels.
#![cfg(feature = "metrics")]

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
}

struct Shared(Arc<Memory>);

impl Recorder for Shared {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
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
    assert_eq!(m.gauge(&id("redis_breaker_state", "")), 1.0, "open");
    let transition = format!("redis_breaker_transitions_total{{breaker={name},from=closed,to=open}}");
    let start = std::time::Instant::now();
    while m.get(&transition) != 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "the transition was not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(m.gauge("redis_breaker_store_up{prefix=breaker}"), 1.0);
}
