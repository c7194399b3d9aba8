//! A server older than the oldest supported (6.2) is refused with an error that names its
//! version, and calls keep flowing on the degraded mode. Needs such a server first in PATH, so
//! it is run on purpose (CI does, with Redis 6.0.9 from PyPI's `redis-server` wheel):
//!
//! ```text
//! RB_CURRENT_REDIS_SERVER=$(command -v redis-server) \
//!   PATH=/path/to/redis-6.0/bin:$PATH cargo test --test it -- --ignored old_server::
//! ```
//!
//! `RB_CURRENT_REDIS_SERVER` (a supported server) replaces the old one on the same port to show
//! that the client recovers once the server is upgraded.

use crate::support;
use redis_breaker::{Client, ClientConfig, Config, StoreError};
use std::time::Duration;

#[tokio::test]
#[ignore = "needs a redis-server older than 6.2 first in PATH: PATH=/path/to/redis-6.0:$PATH cargo test --test it -- --ignored old_server::"]
async fn a_server_older_than_6_2_is_refused_naming_its_version_and_calls_still_flow() {
    let redis = support::private_redis().await;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut redis.conn().await).await.unwrap();
    let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
    let (major, minor) = {
        let mut p = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
        (p.next().unwrap_or(0), p.next().unwrap_or(0))
    };
    assert!(
        (major, minor) < (6, 2),
        "this test needs a redis-server older than 6.2 first in PATH; found {version} (see the file's header)"
    );

    let config = ClientConfig::builder().op_timeout(Duration::from_millis(500)).build().unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let b = client.breaker(&support::unique("old"), Config::default()).unwrap();
    let refused = b.force_open(None).await.expect_err("an old server is refused");
    assert!(matches!(refused, StoreError::ServerTooOld { .. }), "{refused:?}");
    let said = refused.to_string();
    assert!(said.contains("6.0") && said.contains("6.2"), "names the version found and the minimum: {said}");
    assert!(!refused.is_outage(), "a refusal, not an outage");

    // Calls are decided by the degraded mode (an in-process breaker), never wedged.
    for _ in 0..10 {
        b.execute(|| async { Ok::<(), ()>(()) }).await.expect("calls flow on the degraded mode");
    }
    // Nothing was written half-way: the scripts never ran.
    let keys: Vec<String> = redis::cmd("KEYS").arg("breaker:*").query_async(&mut redis.conn().await).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    // The server is upgraded in place: the client asks again (every 10s) and recovers.
    let current = std::env::var("RB_CURRENT_REDIS_SERVER")
        .expect("RB_CURRENT_REDIS_SERVER: a supported redis-server to upgrade to (see the file's header)");
    let mut redis = redis;
    let port = redis.port().expect("a spawned server");
    redis.kill();
    let dir = std::env::temp_dir().join(format!("redis-breaker-upgraded-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut upgraded = std::process::Command::new(&current)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{current}: {e}"));
    let upgraded_at = std::time::Instant::now();
    loop {
        if b.force_open(None).await.is_ok() {
            break;
        }
        assert!(upgraded_at.elapsed() < Duration::from_secs(30), "the client never used the upgraded server");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = upgraded_at.elapsed();
    let _ = upgraded.kill();
    let _ = upgraded.wait();
    println!("figures: refused with: {said}; the upgraded server was used {recovered:.1?} after it started");
}
