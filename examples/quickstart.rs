//! The README's first snippet: one breaker in front of a flaky call.
//!
//! `cargo run --example quickstart` (uses `$REDIS_URL`, else starts a throwaway redis-server).

use redis_breaker_test_support::example as common;

use redis_breaker::{Client, Config, Error};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::redis()?;
    let client = Client::connect(&redis.url).await?;
    let config = Config::builder().failure_threshold(3).base_recovery(Duration::from_secs(2)).build()?;
    let payments = client.breaker("payments", config)?;

    for i in 1..=8 {
        let healthy = i > 5;
        match payments.execute(|| call_payments(healthy)).await {
            Ok(receipt) => println!("call {i}: ok ({receipt})"),
            Err(Error::Rejected(r)) => {
                println!("call {i}: rejected, breaker {}, retry after {:?}", r.state, r.retry_after())
            }
            Err(Error::Inner(e)) => println!("call {i}: failed ({e})"),
            Err(e) => println!("call {i}: {e}"),
        }
    }
    client.shutdown().await?;
    Ok(())
}

async fn call_payments(healthy: bool) -> Result<&'static str, &'static str> {
    if healthy { Ok("paid") } else { Err("payments is down") }
}
