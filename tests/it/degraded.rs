//! Calls keep flowing when Redis cannot be reached: the degraded modes.

use crate::support;
use crate::support::{fail, succeed};
use redis_breaker::{Client, ClientConfig, Config, Degraded, Error, Rejected, State, StoreStatus};
use std::time::Duration;

/// A loopback URL where nothing listens: connections are refused at once.
fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("redis://127.0.0.1:{port}")
}

async fn down_client(mode: Degraded) -> Client {
    let config = ClientConfig::builder().degraded(mode).op_timeout(Duration::from_millis(50)).build().unwrap();
    Client::connect_with(&nowhere(), config).await.expect("connecting is lazy: it succeeds while Redis is down")
}

#[tokio::test]
async fn a_client_made_while_redis_is_down_decides_by_a_local_breaker() {
    let client = down_client(Degraded::Local).await;
    let b = client.breaker("local-fallback", Config::builder().failure_threshold(3).build().unwrap()).unwrap();
    succeed(&b).await.expect("the call is served");
    for _ in 0..3 {
        assert!(matches!(fail(&b).await, Err(Error::Inner(_))));
    }
    assert!(
        matches!(succeed(&b).await, Err(Error::Rejected(Rejected { state: State::Open, .. }))),
        "the local breaker tripped"
    );
    let h = b.health().await.unwrap();
    assert_eq!(h.store, StoreStatus::RedisDown);
    assert_eq!(h.degraded_mode, "local");
    assert!(b.flush().await.is_err(), "flush reports that Redis is unreachable");
}

/// A permit says whether the fleet's state granted it or this process alone did: the first
/// acquire that meets an outage already counts as local (the client does not yet count Redis
/// as down), as do FailOpen's grants and an in-memory client's.
#[tokio::test]
async fn a_permit_says_whether_the_fleet_or_this_process_granted_it() {
    let mut redis = support::private_redis().await;
    let config = ClientConfig::builder()
        .cache_ttl(Duration::from_millis(50))
        .op_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let b = client.breaker(&support::unique("local-permit"), Config::default()).unwrap();
    let permit = b.acquire().await.unwrap();
    assert!(!permit.is_local(), "Redis granted it");
    permit.success().await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(80)).await; // the snapshot is no longer fresh
    let permit = b.acquire().await.unwrap();
    assert_eq!(client.store_status(), StoreStatus::Redis, "one error: Redis is not yet counted down");
    assert!(permit.is_local(), "the in-process breaker granted it");
    permit.success().await;
    let open = down_client(Degraded::FailOpen).await.breaker("fo-permit", Config::default()).unwrap();
    assert!(open.acquire().await.unwrap().is_local(), "fail-open");
    let memory = Client::in_memory().breaker("mem-permit", Config::default()).unwrap();
    assert!(memory.acquire().await.unwrap().is_local(), "in memory");
}

#[tokio::test]
async fn fail_open_allows_and_fail_closed_rejects_while_redis_is_down() {
    let open = down_client(Degraded::FailOpen).await.breaker("fo", Config::default()).unwrap();
    for _ in 0..20 {
        assert!(matches!(fail(&open).await, Err(Error::Inner(_))), "fail-open runs every call");
    }
    let closed = down_client(Degraded::FailClosed).await.breaker("fc", Config::default()).unwrap();
    let mut ran = false;
    let r = closed
        .execute(|| async {
            ran = true;
            Ok::<(), &str>(())
        })
        .await;
    assert!(matches!(r, Err(Error::Rejected(_))), "{r:?}");
    assert!(!ran);
}

#[tokio::test]
async fn control_operations_report_that_redis_is_unreachable() {
    let b = down_client(Degraded::Local).await.breaker("ops", Config::default()).unwrap();
    let err = b.force_open(None).await.expect_err("an operator's command is not applied locally");
    assert!(err.is_outage(), "{err}");
    assert!(err.to_string().starts_with("redis"), "{err}");
}

#[tokio::test]
async fn a_bad_url_is_a_config_error_that_does_not_echo_the_password() {
    let err = Client::connect("rediss://user:hunter2@[::1").await.expect_err("unparseable");
    let text = err.to_string();
    assert!(text.contains("url"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let client = Client::connect("redis://:hunter2@127.0.0.1:1").await.unwrap();
    assert!(!format!("{client:?}").contains("hunter2"));
}

/// Degraded `Local` starts from what the process knew: a breaker it saw open stays open until
/// the deadline it saw, instead of one store error letting a call through.
#[tokio::test]
async fn degraded_local_continues_from_the_last_snapshot_not_from_closed() {
    let mut redis = support::private_redis().await;
    let config = ClientConfig::builder()
        .cache_ttl(Duration::from_millis(50))
        .op_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = support::unique("seeded");
    let b = client
        .breaker(&name, Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(30)).build().unwrap())
        .unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
    redis.kill();
    tokio::time::sleep(Duration::from_millis(80)).await; // the snapshot is no longer fresh
    let mut ran = false;
    let r = b
        .execute(|| async {
            ran = true;
            Ok::<(), &str>(())
        })
        .await;
    match r {
        Err(Error::Rejected(r)) if r.state == State::Open && r.retry_after().is_some() => {
            let d = r.retry_after().unwrap();
            assert!(d > Duration::from_secs(20) && d <= Duration::from_secs(33), "the deadline Redis gave: {d:?}")
        }
        other => panic!("the breaker the process saw open let a call through: {other:?}"),
    }
    assert!(!ran);
    assert_eq!(b.state(), State::Open, "state() shows what decides the calls");
}

/// `state()` tells the truth when the process decides: in memory, and in degraded `Local`.
#[tokio::test]
async fn state_shows_the_in_process_breaker_that_decides() {
    let b = Client::in_memory().breaker("mem", Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.status().await.unwrap().state, State::Open);

    let b = down_client(Degraded::Local)
        .await
        .breaker("down-mem", Config::builder().failure_threshold(1).build().unwrap())
        .unwrap();
    fail(&b).await.unwrap_err();
    assert!(matches!(succeed(&b).await, Err(Error::Rejected(_))));
    assert_eq!(b.state(), State::Open, "state() agrees with the rejections");
}
