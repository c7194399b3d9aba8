//! Redis Sentinel (feature `sentinel`): one primary, one replica and three sentinels on
//! loopback ports. A breaker trips, the primary is killed with SIGKILL, the sentinels promote
//! the replica; the client finds the new primary, the replicated state and the event stream
//! come back, and no call waits on Redis for longer than its deadline meanwhile.
#![cfg(feature = "sentinel")]

mod support;

use redis_breaker::{Client, ClientConfig, Config, Error, State};
use std::process::Command;
use std::time::{Duration, Instant};
use support::server::{Server, free_port, server_said, spawn_on_free_port, wait_until_ours};

const OP_TIMEOUT: Duration = Duration::from_millis(200);

fn sentinel(primary: u16) -> Server {
    let mut last = String::new();
    for _ in 0..10 {
        let port = free_port().unwrap();
        let dir = std::env::temp_dir().join(format!("redis-breaker-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds mymaster 400\nsentinel failover-timeout mymaster 3000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.display()
            ),
        )
        .unwrap();
        let out = std::fs::File::create(dir.join("server.out")).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("redis-server --sentinel; install redis-server (apt-get install -y redis-server)");
        let mut server = Server { child, port, dir };
        if wait_until_ours(&mut server, Duration::from_secs(5)) {
            return server;
        }
        last = server_said(&server.dir);
    }
    panic!("a sentinel did not start: {last}");
}

async fn conn(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query_async(&mut conn(port).await).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).map(|v| v.trim().to_string())
}

async fn eventually(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < within, "{what}: still not true after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_a_sentinel_failover_with_its_state_and_events() {
    let mut primary = spawn_on_free_port(|_| Vec::new()).expect("a primary");
    let p = primary.port;
    let replica =
        spawn_on_free_port(|_| vec!["--replicaof".into(), "127.0.0.1".into(), p.to_string()]).expect("a replica");
    let r = replica.port;
    eventually("the replica synced", Duration::from_secs(10), async || {
        info_field(r, "replication", "master_link_status").await.as_deref() == Some("up")
    })
    .await;
    let sentinels: Vec<Server> = (0..3).map(|_| sentinel(p)).collect();
    // The sentinels know the replica and one another (hello messages every 2s).
    for s in &sentinels {
        eventually("the sentinels found each other and the replica", Duration::from_secs(20), async || {
            let master: Vec<String> = redis::cmd("SENTINEL")
                .arg("master")
                .arg("mymaster")
                .query_async(&mut conn(s.port).await)
                .await
                .unwrap_or_default();
            let field = |name: &str| {
                master
                    .iter()
                    .position(|f| f == name)
                    .and_then(|i| master.get(i + 1))
                    .and_then(|v| v.parse::<u32>().ok())
            };
            field("num-other-sentinels").unwrap_or(0) >= 2 && field("num-slaves").unwrap_or(0) >= 1
        })
        .await;
    }

    let urls: Vec<String> = sentinels.iter().map(|s| format!("redis://127.0.0.1:{}", s.port)).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).build().unwrap();
    let (a, b) = (
        Client::connect_sentinel(&urls, "mymaster", config.clone()).await.unwrap(),
        Client::connect_sentinel(&urls, "mymaster", config).await.unwrap(),
    );
    let name = support::unique("sentinel");
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(60)).build().unwrap();
    let (ba, bb) = (a.breaker(&name, trips.clone()).unwrap(), b.breaker(&name, trips).unwrap());
    bb.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    assert!(matches!(ba.execute(|| async { Err::<(), _>("down") }).await, Err(Error::Inner(_))));
    assert_eq!(ba.status().await.unwrap().state, State::Open);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(2000).query_async(&mut conn(p).await).await.unwrap();

    let _ = primary.child.kill();
    let _ = primary.child.wait();
    let killed = Instant::now();
    // Calls keep being decided (the open snapshot, then the degraded mode) and none waits on
    // Redis beyond its deadline, until the promoted replica answers with the replicated state.
    let mut longest = Duration::ZERO;
    let back = eventually("the client reached the promoted replica", Duration::from_secs(30), async || {
        let started = Instant::now();
        let _ = ba.execute(|| async { Ok::<(), ()>(()) }).await;
        longest = longest.max(started.elapsed());
        matches!(ba.status().await, Ok(s) if s.state == State::Open)
    })
    .await;
    assert_eq!(info_field(r, "replication", "role").await.as_deref(), Some("master"), "the replica was promoted");
    assert!(longest < OP_TIMEOUT * 3, "a call waited {longest:?} (op_timeout {OP_TIMEOUT:?})");
    // Writes go to the new primary, and the other client's event stream moved with it.
    eventually("the event subscription moved", Duration::from_secs(10), async || {
        bb.health().await.is_ok_and(|h| h.events_subscribed)
    })
    .await;
    let mut events = bb.subscribe();
    ba.force_close(None).await.expect("a write on the new primary");
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event").unwrap();
    assert_eq!(e.to, State::ForcedClosed);
    let state: String = redis::cmd("HGET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg("state")
        .query_async(&mut conn(r).await)
        .await
        .unwrap();
    assert_eq!(state, "forced_closed");
    println!(
        "figures: sentinel failover followed {:.1?} after SIGKILL (state replicated: open); longest call meanwhile {longest:?}",
        killed.elapsed().min(back + Duration::from_millis(1))
    );
}

/// A service the sentinels do not monitor: one clear error at the first operation (an outage:
/// calls are decided by the degraded mode), nothing written anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_the_sentinels_do_not_know_is_an_outage_with_a_clear_error() {
    let primary = spawn_on_free_port(|_| Vec::new()).expect("a primary");
    let s = sentinel(primary.port);
    let url = format!("redis://127.0.0.1:{}", s.port);
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).build().unwrap();
    let client = Client::connect_sentinel(&[url.as_str()], "no-such-service", config).await.unwrap();
    let b = client.breaker(&support::unique("sentinel-unknown"), Config::default()).unwrap();
    let err = b.force_open(None).await.expect_err("no primary to write to");
    assert!(err.is_outage(), "{err:?}");
    assert!(err.to_string().contains("sentinel"), "{err}");
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("calls flow on the degraded mode");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("breaker:*").query_async(&mut conn(primary.port).await).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert!(Client::connect_sentinel(&[], "x", ClientConfig::default()).await.is_err(), "an empty list is refused");
    println!("figures: unknown service: {err}");
}
