//! A Redis-backed cache whose operations are guarded by a breaker: while the cache is sick the
//! breaker opens, `get` answers "miss" at once and `set` does nothing, so callers fall through
//! to the source instead of waiting on the cache.
//!
//! `cargo run --example protected_cache` — the breaker's state lives in `$REDIS_URL` (else a
//! throwaway redis-server); the cache is a second throwaway redis-server, paused mid-run with
//! `CLIENT PAUSE` to make it hang.

use redis_breaker_test_support::example as common;

use redis::AsyncCommands;
use redis_breaker::{Breaker, Client, Config, Error};
use std::time::{Duration, Instant};

/// A cache that never makes its caller wait longer than `timeout`, and stops asking a sick
/// cache at all while its breaker is open.
struct GuardedCache {
    conn: redis::aio::MultiplexedConnection,
    breaker: Breaker,
    timeout: Duration,
}

impl GuardedCache {
    async fn get(&self, key: &str) -> Option<String> {
        let mut conn = self.conn.clone();
        let call = || async move {
            match tokio::time::timeout(self.timeout, conn.get::<_, Option<String>>(key)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("cache timed out".to_string()),
            }
        };
        match self.breaker.execute(call).await {
            Ok(value) => value,
            Err(Error::Rejected(_)) => None, // open: a miss, at once
            Err(_) => None,                  // this call failed: a miss too
        }
    }

    async fn set(&self, key: &str, value: &str) {
        let mut conn = self.conn.clone();
        let call = || async move {
            match tokio::time::timeout(self.timeout, conn.set_ex::<_, _, ()>(key, value, 60)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("cache timed out".to_string()),
            }
        };
        let _ = self.breaker.execute(call).await; // open: nothing to do
    }
}

/// The slow source of truth the cache protects.
async fn load_profile(user: u32) -> String {
    tokio::time::sleep(Duration::from_millis(20)).await;
    format!("profile of user {user}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state = common::redis()?;
    let cache_server = common::spawn_server()?;
    let cache_client = redis::Client::open(cache_server.url.as_str())?;
    let mut admin = cache_client.get_multiplexed_async_connection().await?;
    let client = Client::connect(&state.url).await?;
    let config = Config::builder()
        .failure_threshold(3)
        .success_threshold(1)
        .base_recovery(Duration::from_secs(1))
        .jitter(0.0)
        .call_timeout(Duration::from_millis(100))
        .build()?;
    let cache = GuardedCache {
        conn: cache_client.get_multiplexed_async_connection().await?,
        breaker: client.breaker(&format!("profile-cache-{}", std::process::id()), config)?,
        timeout: Duration::from_millis(50),
    };

    let started = Instant::now();
    for round in 0..36 {
        if round == 6 {
            println!("-- the cache hangs for 1.5s (CLIENT PAUSE) --");
            let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("ALL").query_async(&mut admin).await?;
        }
        let user = round % 3;
        let t = Instant::now();
        let key = format!("profile:{user}");
        let (value, source) = match cache.get(&key).await {
            Some(v) => (v, "cache"),
            None => {
                let v = load_profile(user).await;
                cache.set(&key, &v).await;
                (v, "source")
            }
        };
        println!(
            "{:>5}ms  get {key}: from {source:<6} in {:>3}ms, breaker {:<9} ({value})",
            started.elapsed().as_millis(),
            t.elapsed().as_millis(),
            cache.breaker.state().as_str(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.shutdown().await?;
    Ok(())
}
