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
    let failsafe = failsafe::Config::new().build();
    let recloser = recloser::AsyncRecloser::from(recloser::Recloser::custom().error_rate(0.01).closed_len(1).build());
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
    ratios.add("rejection", "failsafe rejection", ours_ns, failsafe_ns);
    ratios.add("rejection", "recloser rejection", ours_ns, recloser_ns);
    ratios.add("rejection", "bare async call", ours_ns, bare);
}
