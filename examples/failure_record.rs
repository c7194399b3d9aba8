//! Failures recorded through `execute`, one after another, for a measurement of what each costs
//! the server (`scripts/failure-record-cost.sh` drives it and reads `INFO commandstats` around it).
//!
//! `cargo run --release --example failure_record -- --count 10000 [--name NAME] [--evalsha]` —
//! uses `$REDIS_URL`, else starts a throwaway redis-server. The breaker never trips
//! (`failure_threshold` = u32::MAX) and its snapshot stays fresh (`cache_ttl` at its maximum),
//! so each failure is exactly what `execute` sends for one: one record script call. One failure
//! is recorded first (it loads the scripts and makes the snapshot); then the example prints
//! `ready` and, for each line `N` on stdin, records N failures and prints `done N <state>`, until
//! `--count` are recorded. `--evalsha` sends the scripts with EVALSHA (as on a server without
//! Functions).

use redis_breaker_test_support::example as common;

use redis_breaker::{Client, ClientConfig, Config};
use std::io::BufRead;

struct Options {
    count: u64,
    name: String,
    evalsha: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options { count: 10_000, name: "failure-record".into(), evalsha: false };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--evalsha" => o.evalsha = true,
            "--count" => {
                o.count = args.next().and_then(|v| v.parse().ok()).ok_or("--count takes a number")?;
            }
            "--name" => o.name = args.next().ok_or("--name takes a breaker name")?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let redis = common::redis()?;
    let config = ClientConfig::builder().cache_ttl(ClientConfig::MAX_CACHE_TTL).functions(!o.evalsha).build()?;
    let client = Client::connect_with(&redis.url, config).await?;
    let breaker = client.breaker(&o.name, Config::builder().failure_threshold(u32::MAX).build()?)?;
    let fail = || async { Err::<(), &str>("downstream error") };

    let _ = breaker.execute(fail).await;
    println!("ready");
    // Each line on stdin: a number of failures to record now (the harness alternates sides in
    // chunks); an empty line or the end of stdin: `--count` of them, then exit.
    let mut done = 0;
    for line in std::io::stdin().lock().lines() {
        let n = line?.trim().parse().unwrap_or(o.count.saturating_sub(done));
        for _ in 0..n {
            let _ = breaker.execute(fail).await;
        }
        done += n;
        println!("done {n} {}", breaker.state().as_str());
        if done >= o.count {
            break;
        }
    }
    client.shutdown().await?;
    Ok(())
}
