//! An open breaker rejecting from its fresh snapshot, against the in-process breakers rejecting.

use crate::harness::{Ratios, case, runtime};
use criterion::Criterion;
use failsafe::futures::CircuitBreaker as _;
use redis_breaker::{Client, ClientConfig, Config};
use std::hint::black_box;
use std::time::Duration;

async fn downstream() -> Result<u64, ()> {
    Ok(black_box(1))
}

async fn failing() -> Result<u64, ()> {
    Err(())
}

pub fn bench(c: &mut Criterion, url: &str, ratios: &mut Ratios) {
    let rt = runtime(1);
    let hour = Duration::from_secs(3600);
    let client = rt.block_on(async {
        Client::connect_with(
            url,
            ClientConfig::builder().cache_ttl(ClientConfig::MAX_CACHE_TTL).build().expect("config"),
        )
        .await
        .expect("client")
    });
    let config = Config::builder().failure_threshold(1).base_recovery(hour).max_recovery(hour).build().expect("config");
    let ours = client.breaker("bench-open", config).expect("breaker");
    // Open for the hour, as ours. With failsafe's default backoff (5-10s after its first trip)
    // it was no longer open at the end of a full run: a call let through then closes it, and
    // its "rejection" figure becomes its success path (94-176 ns in full runs, 29 ns in a
    // short one). The breakers are checked still open after the measurements.
    let failsafe = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(1, failsafe::backoff::constant(hour)))
        .build();
    let recloser = recloser::AsyncRecloser::from(
        recloser::Recloser::custom().error_rate(0.01).closed_len(1).open_wait(hour).build(),
    );
    rt.block_on(async {
        ours.reset().await.expect("reset");
        let _ = ours.execute(failing).await;
        for _ in 0..20 {
            let _ = failsafe.call(failing()).await;
            let _ = recloser.call(failing()).await;
        }
        assert!(ours.execute(downstream).await.is_err_and(|e| e.is_rejected()), "open");
        assert!(!failsafe.is_call_permitted(), "failsafe open");
    });

    let mut g = c.benchmark_group("rejection, one thread");
    let iters = 10_000;
    let bare = case(&mut g, &rt, 1, iters, "baseline: bare async call", || async { downstream().await });
    let ours_ns = case(&mut g, &rt, 1, iters, "redis-breaker execute (rejected)", {
        let b: &'static _ = Box::leak(Box::new(ours.clone()));
        move || async move { b.execute(downstream).await.is_err() }
    });
    let failsafe_ns = case(&mut g, &rt, 1, iters, "failsafe call (rejected)", {
        let f: &'static _ = Box::leak(Box::new(failsafe.clone()));
        move || async move { f.call(downstream()).await.is_err() }
    });
    let recloser_ns = case(&mut g, &rt, 1, iters, "recloser call (rejected)", {
        let r: &'static _ = Box::leak(Box::new(recloser.clone()));
        move || async move { r.call(downstream()).await.is_err() }
    });
    g.finish();
    rt.block_on(async {
        assert!(ours.execute(downstream).await.is_err_and(|e| e.is_rejected()), "still open");
        assert!(!failsafe.is_call_permitted(), "failsafe still open: its figure is a rejection's");
        assert!(recloser.call(downstream()).await.is_err(), "recloser still open");
    });
    ratios.add("rejection", "failsafe rejection", ours_ns, failsafe_ns);
    ratios.add("rejection", "recloser rejection", ours_ns, recloser_ns);
    ratios.add("rejection", "bare async call", ours_ns, bare);
}
