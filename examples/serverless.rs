//! One serverless invocation: connect, decide and make one call, flush, exit. Run it many times
//! in a row or in parallel: every invocation is its own process with its own `Client`, and the
//! breaker they share lives in Redis.
//!
//! `cargo run --example serverless [-- --fail]` — uses `$REDIS_URL`, else starts a throwaway
//! redis-server. Prints one JSON line: the decision and the time each step took. A cold start
//! costs the connection, the connection's one check of the server and the ACL (one read-only
//! EVALSHA on Redis >= 7.0, HELLO before) and one EVALSHA (the acquire); a success adds one
//! more (the flush that sends it), a failure is recorded before `execute` returns.

use redis_breaker_test_support::example as common;

use redis_breaker::{Client, Config, Error};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fail = std::env::args().any(|a| a == "--fail");
    let redis = common::redis()?;
    let started = Instant::now();

    let client = Client::connect(&redis.url).await?;
    let connected = started.elapsed();
    let breaker = client.breaker("serverless-demo", Config::builder().failure_threshold(3).build()?)?;

    let call_started = Instant::now();
    let mut decided = None;
    let result = breaker
        .execute(|| {
            decided = Some(call_started.elapsed());
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if fail { Err("downstream error") } else { Ok("done") }
            }
        })
        .await;
    let executed = call_started.elapsed();
    let flush_started = Instant::now();
    client.shutdown().await?;
    let flushed = flush_started.elapsed();

    let decision = match &result {
        Ok(_) => "allowed: success",
        Err(Error::Inner(_)) => "allowed: failure (recorded)",
        Err(Error::Rejected(_)) => "rejected",
        Err(_) => "allowed: timed out",
    };
    let retry_after_ms = match &result {
        Err(Error::Rejected(rejected)) => rejected.retry_after().map(|d| d.as_millis()),
        _ => None,
    };
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    println!(
        "{}",
        serde_json::json!({
            "decision": decision,
            "state": breaker.state().as_str(),
            "retry_after_ms": retry_after_ms,
            "client_ms": ms(connected),
            "first_decision_ms": decided.map(ms),
            "execute_ms": ms(executed),
            "flush_ms": ms(flushed),
            "total_ms": ms(started.elapsed()),
        })
    );
    Ok(())
}
