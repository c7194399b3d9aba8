//! Criterion benches of the call paths, each beside a baseline measured in the same run.
//!
//! `cargo bench --bench breaker` (uses `$REDIS_URL`, else starts a throwaway redis-server).
//! Each group prints its cases; compare the ratio of a breaker case to the group's baseline.

#[path = "../examples/common/mod.rs"]
mod common;

use criterion::Criterion;
use redis_breaker::{Client, ClientConfig, Config};
use std::hint::black_box;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

async fn downstream(x: u64) -> Result<u64, ()> {
    Ok(black_box(x))
}

fn hot_path(c: &mut Criterion) {
    let redis = common::redis().expect("redis for the bench");
    let rt = runtime();
    let client = rt.block_on(async {
        let config = ClientConfig::builder().cache_ttl(Duration::from_secs(3600)).build().expect("config");
        Client::connect_with(&redis.url, config).await.expect("client")
    });
    let closed = client.breaker("bench-closed", Config::default()).expect("breaker");
    let open = client
        .breaker(
            "bench-open",
            Config::builder()
                .failure_threshold(1)
                .base_recovery(Duration::from_secs(3600))
                .max_recovery(Duration::from_secs(3600))
                .build()
                .expect("config"),
        )
        .expect("breaker");
    rt.block_on(async {
        closed.execute(|| downstream(1)).await.expect("warm the snapshot");
        let _ = open.execute(|| async { Err::<(), ()>(()) }).await;
    });

    let mut g = c.benchmark_group("closed, fresh snapshot");
    g.bench_function("baseline: bare async call", |b| b.to_async(&rt).iter(|| async { downstream(1).await }));
    g.bench_function("breaker.execute", |b| b.to_async(&rt).iter(|| async { closed.execute(|| downstream(1)).await }));
    g.finish();

    let mut g = c.benchmark_group("open, fresh snapshot");
    g.bench_function("baseline: bare async call", |b| b.to_async(&rt).iter(|| async { downstream(1).await }));
    g.bench_function("breaker.execute (rejected)", |b| {
        b.to_async(&rt).iter(|| async { open.execute(|| downstream(1)).await.is_err() })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    hot_path(&mut c);
    c.final_summary();
}
