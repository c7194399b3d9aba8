//! The paths that reach Redis: a snapshot miss (one acquire script call) and a recorded failure
//! (one script call: the library's `count` where the server has Functions, else an EVALSHA
//! record), against a PING round trip on the same server and connection kind.

use crate::harness::{Ratios, case, runtime};
use criterion::Criterion;
use redis_breaker::{Client, ClientConfig, Config};
use std::time::Duration;

pub fn bench(c: &mut Criterion, url: &str, ratios: &mut Ratios) {
    let rt = runtime(1);
    let (miss_client, conn) = rt.block_on(async {
        let config = ClientConfig::builder()
            .cache_ttl(Duration::ZERO)
            .op_timeout(Duration::from_secs(1))
            .build()
            .expect("config");
        let client = Client::connect_with(url, config).await.expect("client");
        let conn = redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("connect");
        (client, conn)
    });
    // Never trips: every failure is recorded, none rejected.
    let never = Config::builder().failure_threshold(u32::MAX).build().expect("config");
    let miss = miss_client.breaker("bench-miss", Config::default()).expect("breaker");
    let fresh_client = rt.block_on(async {
        let config = ClientConfig::builder()
            .cache_ttl(ClientConfig::MAX_CACHE_TTL)
            .op_timeout(Duration::from_secs(1))
            .build()
            .expect("config");
        Client::connect_with(url, config).await.expect("client")
    });
    let failing = fresh_client.breaker("bench-record", never).expect("breaker");
    rt.block_on(async {
        miss.execute(|| async { Ok::<(), ()>(()) }).await.expect("load the scripts");
        let _ = failing.execute(|| async { Err::<(), ()>(()) }).await;
    });

    let mut g = c.benchmark_group("redis round trips");
    let iters = 2_000;
    let ping = case(&mut g, &rt, 1, iters, "baseline: PING", {
        let conn: &'static _ = Box::leak(Box::new(conn.clone()));
        move || async move { redis::cmd("PING").query_async::<String>(&mut conn.clone()).await.is_ok() }
    });
    let miss_ns = case(&mut g, &rt, 1, iters, "execute on a miss (one acquire)", {
        let b: &'static _ = Box::leak(Box::new(miss.clone()));
        move || async move { b.execute(|| async { Ok::<(), ()>(()) }).await.is_ok() }
    });
    let record_ns = case(&mut g, &rt, 1, iters, "execute recording a failure (one script call)", {
        let b: &'static _ = Box::leak(Box::new(failing.clone()));
        move || async move { b.execute(|| async { Err::<(), ()>(()) }).await.is_err() }
    });
    g.finish();
    ratios.add("miss path (acquire)", "PING round trip", miss_ns, ping);
    ratios.add("recording a failure", "PING round trip", record_ns, ping);
}
