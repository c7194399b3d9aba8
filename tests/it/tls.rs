//! TLS (feature `tls`): a `rediss://` server on loopback with certificates made for the test by
//! the `openssl` command: a CA, a server certificate for 127.0.0.1 and a client certificate
//! (the server asks for one). The server is `$RB_TLS_REDIS_SERVER`, else `redis-server` from
//! PATH; it must be built with TLS (Debian's is).

use crate::support;
use crate::support::a_trip_reaches_the_other;
use crate::support::tls::{TlsRedis, tls_redis};
use redis_breaker::{Client, ClientConfig, Config, State, StoreError, TlsOptions};
use std::time::Duration;

/// The client options that trust the test's CA and present its client certificate.
fn options(redis: &TlsRedis) -> TlsOptions {
    TlsOptions::new().ca_pem(redis.read("ca.crt")).client_pem(redis.read("client.crt"), redis.read("client.key"))
}

fn config() -> ClientConfig {
    ClientConfig::builder().op_timeout(Duration::from_secs(2)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_work_over_tls_with_a_ca_and_a_client_certificate_of_our_own() {
    let redis = tls_redis();
    let a = Client::connect_tls(&redis.url(), config(), options(&redis)).await.unwrap();
    let b = Client::connect_tls(&redis.url(), config(), options(&redis)).await.unwrap();
    let name = support::unique("tls");
    let ba = a_trip_reaches_the_other(&a, &b, &name, "over TLS").await;
    assert_eq!(ba.status().await.unwrap().state, State::Open, "the state is in the TLS server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_an_error_that_names_tls_and_calls_still_flow() {
    let redis = tls_redis();
    let wrong = TlsOptions::new()
        .ca_pem(redis.read("other-ca.crt"))
        .client_pem(redis.read("client.crt"), redis.read("client.key"));
    let client = Client::connect_tls(&redis.url(), config(), wrong).await.unwrap();
    let b = client.breaker(&support::unique("tls-wrong-ca"), Config::default()).unwrap();
    let err = b.force_open(None).await.expect_err("the handshake fails");
    assert!(matches!(err, StoreError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(err.is_outage(), "calls are decided by the degraded mode meanwhile");
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("calls flow without Redis");
    println!("figures: a wrong CA: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_wants_a_client_certificate_refuses_a_client_without_one() {
    let redis = tls_redis();
    let client =
        Client::connect_tls(&redis.url(), config(), TlsOptions::new().ca_pem(redis.read("ca.crt"))).await.unwrap();
    let b = client.breaker(&support::unique("tls-no-cert"), Config::default()).unwrap();
    let err = b.force_open(None).await.expect_err("the server wants a client certificate");
    assert!(err.is_outage(), "{err:?}");
    println!("figures: no client certificate: {err}");
}

#[tokio::test]
async fn bad_tls_input_is_refused_before_any_connection() {
    let tls = TlsOptions::new().ca_pem(b"not a certificate".to_vec());
    let plain = Client::connect_tls("redis://127.0.0.1:1", config(), tls.clone()).await;
    assert!(matches!(plain, Err(redis_breaker::ConfigError::Field { field: "url", .. })), "{plain:?}");
    let bad = Client::connect_tls("rediss://127.0.0.1:1", config(), tls).await;
    assert!(matches!(bad, Err(redis_breaker::ConfigError::Field { field: "tls", .. })), "{bad:?}");
    assert!(!format!("{:?}", TlsOptions::new().client_pem(b"c".to_vec(), b"secret".to_vec())).contains("secret"));
}

/// Issue 22, item 5: a Sentinel deployment whose data nodes speak TLS only to clients with a
/// certificate, and want a password. [`SentinelOptions`] carries both to the primary the
/// sentinel names, for the commands and the event subscription. The sentinel itself listens in
/// plain TCP and reaches the primary over TLS (`tls-replication yes`).
#[cfg(feature = "sentinel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_names_a_tls_primary_reached_with_the_certificates_and_the_password_given() {
    use redis_breaker::{SentinelOptions, StoreStatus};
    const PASSWORD: &str = "tls-sentinel-pw-1d2c";
    let redis = tls_redis();
    let plain = redis.plain_port();
    let mut admin = support::admin_connection(&format!("redis://127.0.0.1:{plain}")).await;
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(PASSWORD).query_async(&mut admin).await.unwrap();

    let sentinel = support::tls::tls_sentinel(&redis, PASSWORD);
    let url = format!("redis://127.0.0.1:{}", sentinel.port);
    let options = SentinelOptions::new().password(PASSWORD).tls(options(&redis));
    let a = Client::connect_sentinel_with(&[url.as_str()], "mymaster", config(), options.clone()).await.unwrap();
    let b = Client::connect_sentinel_with(&[url.as_str()], "mymaster", config(), options).await.unwrap();
    let name = support::unique("tls-sentinel");
    a_trip_reaches_the_other(&a, &b, &name, "over TLS").await;
    assert_eq!(a.store_status(), StoreStatus::Redis);
    let mut authed = support::admin_connection(&format!("redis://:{PASSWORD}@127.0.0.1:{plain}")).await;
    let state: String = redis::cmd("HGET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg("state")
        .query_async(&mut authed)
        .await
        .unwrap();
    assert_eq!(state, "open", "the state is in the TLS primary");
    // The commands and the events went over TLS: the plain port saw only this test's connections.
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut authed).await.unwrap();
    let over_plain = clients.lines().filter(|l| l.contains(&format!("laddr=127.0.0.1:{plain}"))).count();
    let over_tls = clients.lines().filter(|l| l.contains(&format!("laddr=127.0.0.1:{}", redis.tls_port))).count();
    assert!(over_tls >= 4, "both clients' commands and events over TLS: {clients}");
    println!(
        "figures: sentinel + TLS + password: {over_tls} connections over TLS, {over_plain} over plain TCP (the test's own)"
    );
}
