//! Half-open probes: the fleet-wide cap, leases, closing and reopening with backoff.

use crate::support::*;
use redis_breaker::{Client, Config, Error, State};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;

fn recovering(probes: u32) -> redis_breaker::ConfigBuilder {
    Config::builder()
        .failure_threshold(1)
        .half_open_max_probes(probes)
        .base_recovery(Duration::from_millis(50))
        .max_recovery(Duration::from_millis(50))
        .jitter(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_admits_exactly_max_probes_across_clients() {
    let redis = redis().await;
    let clients: Vec<Client> = vec![
        client(&redis, Duration::from_secs(1)).await,
        client(&redis, Duration::from_secs(1)).await,
        client(&redis, Duration::from_secs(1)).await,
    ];
    let config = recovering(2).success_threshold(10).build().unwrap();
    for round in 0..30 {
        let name = unique("probe-cap");
        let breakers: Vec<_> = clients.iter().map(|c| c.breaker(&name, config.clone()).unwrap()).collect();
        fail(&breakers[0]).await.unwrap_err();
        assert_eq!(state_hash(&redis, &name).await["state"], "open");
        tokio::time::sleep(Duration::from_millis(60)).await;

        let callers_per_client = 4;
        let barrier = Arc::new(Barrier::new(breakers.len() * callers_per_client));
        let mut tasks = Vec::new();
        for b in &breakers {
            for _ in 0..callers_per_client {
                let (b, barrier) = (b.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    b.acquire().await
                }));
            }
        }
        let mut permits = Vec::new();
        let mut rejected = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(p) => permits.push(p),
                Err(r) => {
                    assert_eq!(r.state, State::HalfOpen);
                    rejected += 1;
                }
            }
        }
        assert_eq!(permits.len(), 2, "round {round}: exactly half_open_max_probes probes fleet-wide");
        assert!(permits.iter().all(|p| p.is_probe()));
        assert_eq!(rejected, 10);
        let leases: u64 = redis::cmd("ZCARD")
            .arg(format!("breaker:{{{name}}}:probes"))
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        assert_eq!(leases, 2);
    }
}

#[tokio::test]
async fn a_dead_workers_lease_expires_after_probe_lease() {
    let redis = redis().await;
    let name = unique("lease");
    let lease = Duration::from_millis(300);
    let config = recovering(1).probe_lease(lease).call_timeout(lease / 2).build().unwrap();
    let worker = client(&redis, Duration::from_secs(1)).await.breaker(&name, config.clone()).unwrap();
    let other = client(&redis, Duration::from_secs(1)).await.breaker(&name, config).unwrap();
    fail(&worker).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(60)).await;

    let probe = worker.acquire().await.expect("the probe");
    assert!(probe.is_probe());
    std::mem::forget(probe); // the worker dies holding its lease: nothing releases it
    let rejected = other.acquire().await.expect_err("the only probe is out");
    let wait = rejected.retry_after().expect("time to the lease's expiry");
    assert!(wait <= lease && wait >= Duration::from_millis(200), "retry_after {wait:?}");

    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    let probe = other.acquire().await.expect("the expired lease frees the probe");
    assert!(probe.is_probe());
    probe.success().await;
}

#[tokio::test]
async fn a_dropped_permit_frees_its_probe_at_once() {
    let redis = redis().await;
    let name = unique("drop");
    let config = recovering(1).build().unwrap();
    let a = client(&redis, Duration::from_secs(1)).await.breaker(&name, config.clone()).unwrap();
    let b = client(&redis, Duration::ZERO).await.breaker(&name, config).unwrap();
    fail(&a).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let slow_call = a.execute(|| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<(), &str>(())
    });
    // Cancel the probe's call: its permit is dropped and its lease released.
    assert!(tokio::time::timeout(Duration::from_millis(50), slow_call).await.is_err());
    let mut freed = false;
    for _ in 0..50 {
        if let Ok(p) = b.acquire().await {
            assert!(p.is_probe());
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "the cancelled call's lease was released, long before probe_lease");
    let metrics: std::collections::HashMap<String, u64> = metrics_hash(&redis, &name).await;
    assert_eq!(metrics.get("calls"), Some(&1), "a released permit records nothing: only the first failure counts");
}

#[tokio::test]
async fn success_threshold_probe_successes_close_the_breaker() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("close");
    let b = client.breaker(&name, recovering(1).success_threshold(2).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(60)).await;
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), State::HalfOpen, "one success of two");
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
    let hash = state_hash(&redis, &name).await;
    assert_eq!((hash["state"].as_str(), hash["trips"].as_str()), ("closed", "0"));
    assert_eq!(hash["reason"], "2 probe successes");
    for _ in 0..10 {
        succeed(&b).await.unwrap();
    }
}

#[tokio::test]
async fn a_failed_probe_reopens_for_longer_each_time() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("backoff");
    let config = Config::builder()
        .failure_threshold(1)
        .base_recovery(Duration::from_millis(100))
        .max_recovery(Duration::from_millis(350))
        .multiplier(2.0)
        .jitter(0.0)
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    fail(&b).await.unwrap_err();
    let mut open_times = Vec::new();
    for _ in 0..4 {
        let h = state_hash(&redis, &name).await;
        let open_ms: u64 = h["open_until"].parse::<u64>().unwrap() - h["opened_at"].parse::<u64>().unwrap();
        open_times.push((h["trips"].parse::<u64>().unwrap(), open_ms));
        tokio::time::sleep(Duration::from_millis(open_ms + 10)).await;
        let r = fail(&b).await;
        assert!(matches!(r, Err(Error::Inner(_))), "the probe ran: {r:?}");
        assert_eq!(b.state(), State::Open, "a failed probe reopens");
    }
    assert_eq!(open_times, vec![(1, 100), (2, 200), (3, 350), (4, 350)], "100ms x 2^(k-1), capped at max_recovery");
    assert_eq!(state_hash(&redis, &name).await["reason"], "probe failed");
}
