//! Redis Sentinel (feature `sentinel`): one primary, one replica and three sentinels on
//! loopback ports. A breaker trips, the primary is killed with SIGKILL, the sentinels promote
//! the replica; the client finds the new primary, the replicated state and the event stream
//! come back, and no call waits on Redis for longer than its deadline meanwhile.

use crate::support;
use crate::support::server::{Server, free_port, server_said, spawn_on_free_port, wait_until_ours};
use crate::support::{
    a_trip_reaches_the_other, breaker_subscribed, conn_on, eventually, eventually_within, until_rejected,
};
use redis_breaker::{Client, ClientConfig, Config, Error, SentinelOptions, State, StoreError, StoreStatus};
use std::process::Command;
use std::time::{Duration, Instant};

const OP_TIMEOUT: Duration = Duration::from_millis(200);

fn sentinel(primary: u16) -> Server {
    sentinel_with(primary, "")
}

/// A sentinel as [`sentinel`], with `extra` lines in its configuration file.
fn sentinel_with(primary: u16, extra: &str) -> Server {
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
                 sentinel parallel-syncs mymaster 1\n{extra}",
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

/// Makes the sentinel on `sentinel` name the primary on `new` (as after a failover), and the
/// primary on `old` drop its clients of one type (`normal`, as a failover's CLIENT KILL does, or
/// `pubsub`).
async fn name_another_primary(sentinel: u16, new: u16, old: u16, clients: &str) {
    let mut sc = conn_on(sentinel).await;
    let _: () = redis::cmd("SENTINEL").arg("REMOVE").arg("mymaster").query_async(&mut sc).await.unwrap();
    let _: () = redis::cmd("SENTINEL")
        .arg("MONITOR")
        .arg("mymaster")
        .arg("127.0.0.1")
        .arg(new)
        .arg(1)
        .query_async(&mut sc)
        .await
        .unwrap();
    let _: i64 =
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg(clients).query_async(&mut conn_on(old).await).await.unwrap();
}

/// How many connections listen on the events channel of the default prefix on `port`.
async fn event_subscribers(port: u16) -> i64 {
    let counts: Vec<redis::Value> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg("breaker:events").query_async(&mut conn_on(port).await).await.unwrap();
    match counts.as_slice() {
        [_, redis::Value::Int(n)] => *n,
        other => panic!("PUBSUB NUMSUB answered {other:?}"),
    }
}

async fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query_async(&mut conn_on(port).await).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).map(|v| v.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_a_sentinel_failover_with_its_state_and_events() {
    let mut primary = spawn_on_free_port(|_| Vec::new()).expect("a primary");
    let p = primary.port;
    let replica =
        spawn_on_free_port(|_| vec!["--replicaof".into(), "127.0.0.1".into(), p.to_string()]).expect("a replica");
    let r = replica.port;
    eventually("the replica synced", async || {
        info_field(r, "replication", "master_link_status").await.as_deref() == Some("up")
    })
    .await;
    let sentinels: Vec<Server> = (0..3).map(|_| sentinel(p)).collect();
    // The sentinels know the replica and one another (hello messages every 2s).
    for s in &sentinels {
        eventually_within("the sentinels found each other and the replica", Duration::from_secs(20), async || {
            let master: Vec<String> = redis::cmd("SENTINEL")
                .arg("master")
                .arg("mymaster")
                .query_async(&mut conn_on(s.port).await)
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

    let urls: Vec<String> = sentinels.iter().map(Server::url).collect();
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
    let _: i64 = redis::cmd("WAIT").arg(1).arg(2000).query_async(&mut conn_on(p).await).await.unwrap();

    let _ = primary.child.kill();
    let _ = primary.child.wait();
    let killed = Instant::now();
    // Calls keep being decided (the open snapshot, then the degraded mode) and none waits on
    // Redis beyond its deadline, until the promoted replica answers with the replicated state.
    let mut longest = Duration::ZERO;
    let back = eventually_within("the client reached the promoted replica", Duration::from_secs(30), async || {
        let started = Instant::now();
        let _ = ba.execute(|| async { Ok::<(), ()>(()) }).await;
        longest = longest.max(started.elapsed());
        matches!(ba.status().await, Ok(s) if s.state == State::Open)
    })
    .await;
    assert_eq!(info_field(r, "replication", "role").await.as_deref(), Some("master"), "the replica was promoted");
    assert!(longest < OP_TIMEOUT * 3, "a call waited {longest:?} (op_timeout {OP_TIMEOUT:?})");
    // Writes go to the new primary, and the other client's event stream moved with it.
    breaker_subscribed(&bb).await;
    let mut events = bb.subscribe();
    ba.force_close(None).await.expect("a write on the new primary");
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event").unwrap();
    assert_eq!(e.to, State::ForcedClosed);
    let state: String = redis::cmd("HGET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg("state")
        .query_async(&mut conn_on(r).await)
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
    let url = s.url();
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).build().unwrap();
    let client = Client::connect_sentinel(&[url.as_str()], "no-such-service", config).await.unwrap();
    let b = client.breaker(&support::unique("sentinel-unknown"), Config::default()).unwrap();
    let err = b.force_open(None).await.expect_err("no primary to write to");
    assert!(err.is_outage(), "{err:?}");
    assert!(err.to_string().contains("sentinel"), "{err}");
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("calls flow on the degraded mode");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("breaker:*").query_async(&mut conn_on(primary.port).await).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert!(Client::connect_sentinel(&[], "x", ClientConfig::default()).await.is_err(), "an empty list is refused");
    println!("figures: unknown service: {err}");
}

/// Issue 22, item 11 (Sentinel): the command connection and the event subscription each asked
/// the sentinels on their own, so after the sentinels named another node (a failover whose old
/// primary still runs and serves, until the sentinels reach it to demote it) the commands
/// could go to the new primary while the subscription stayed on the old one: transitions made
/// on the new primary never reached the client, and its replies kept the long bound (the
/// subscription was live). Now the two follow one node: when the commands move, the
/// subscription is made again on their node (every snapshot asks Redis again meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_subscription_follows_the_commands_to_the_node_the_sentinels_name() {
    const CACHE_TTL: Duration = Duration::from_millis(500);
    let old = spawn_on_free_port(|_| Vec::new()).expect("a primary");
    let new = spawn_on_free_port(|_| Vec::new()).expect("another primary");
    let s = sentinel(old.port);
    let url = s.url();
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).cache_ttl(CACHE_TTL).build().unwrap();
    let a = Client::connect_sentinel(&[url.as_str()], "mymaster", config.clone()).await.unwrap();
    let name = support::unique("sentinel-moved");
    let trips = Config::builder().failure_threshold(3).base_recovery(Duration::from_secs(60)).build().unwrap();
    let held = a.breaker(&name, trips.clone()).unwrap();
    breaker_subscribed(&held).await;
    held.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();

    // The sentinels now name `new` (as after a failover); `old` still runs, and drops the
    // client's command connection (a failover sends CLIENT KILL TYPE normal to the old primary)
    // but not its subscription.
    name_another_primary(s.port, new.port, old.port, "normal").await;
    // The client's next requests reach `new`.
    eventually("the commands reached the node the sentinels name", async || {
        held.health().await.is_ok() && held.force_close(None).await.is_ok() && held.reset().await.is_ok()
    })
    .await;
    let on_new: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("breaker:{{{name}}}:state"))
        .query_async(&mut conn_on(new.port).await)
        .await
        .unwrap();
    assert!(!on_new.is_empty(), "the client's writes go to the node the sentinels name");
    held.health().await.unwrap();

    // Another process opens the breaker there.
    let b = Client::connect_sentinel(&[url.as_str()], "mymaster", config).await.unwrap();
    b.breaker(&name, trips).unwrap().force_open(None).await.expect("a write on the new primary");
    let (admitted, rejected_after) =
        until_rejected(&held, CACHE_TTL + Duration::from_secs(3), "a breaker opened on the primary the sentinels name")
            .await;
    assert!(rejected_after <= CACHE_TTL + Duration::from_secs(1), "rejected only after {rejected_after:?}");
    eventually("both clients listen on the new primary, none on the old", async || {
        event_subscribers(new.port).await == 2 && event_subscribers(old.port).await == 0
    })
    .await;
    println!(
        "figures: sentinels named another node; after an open there the client admitted {admitted} calls and rejected after {rejected_after:?}"
    );
}

/// The password of the default user of the protected primaries below (also the sentinels'
/// `auth-pass`), and of the ACL user `breaker` (the README's minimal ACL, with `+role`).
const PASSWORD: &str = "default-pw-7c1e";
const BREAKER_PASSWORD: &str = "breaker-pw-93ad";

/// A primary that wants a password: `requirepass`, and the user `breaker` with the README's
/// minimal ACL plus `+role` (a Sentinel client asks the node its role).
async fn protected_primary() -> Server {
    let primary = spawn_on_free_port(|_| Vec::new()).expect("a primary");
    let mut c = conn_on(primary.port).await;
    let acl = format!(
        "breaker on >{BREAKER_PASSWORD} ~breaker:* resetchannels &breaker:events +evalsha +script|load +time +type +hmget +hgetall +hset +hsetnx +hincrby +hdel +del +pexpire +persist +pttl +zrange +zadd +zcount +zscore +zremrangebyscore +zrem +xadd +xrevrange +publish +subscribe +scan +ping +hello +role"
    );
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER");
    for word in acl.split_whitespace() {
        setuser.arg(word);
    }
    let _: () = setuser.query_async(&mut c).await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(PASSWORD).query_async(&mut c).await.unwrap();
    primary
}

async fn authenticated(port: u16) -> redis::aio::MultiplexedConnection {
    support::admin_connection(&format!("redis://:{PASSWORD}@127.0.0.1:{port}")).await
}

/// A sentinel of `primary` that knows its password.
async fn sentinel_of_protected(primary: u16) -> Server {
    // The password is in the sentinel's configuration from the start: a sentinel that first
    // met the primary without it got NOAUTH, flagged it `s_down`, and clients skip a primary so
    // flagged (Redis 6.2's sentinel kept the flag after `SENTINEL SET auth-pass`).
    let s = sentinel_with(primary, &format!("sentinel auth-pass mymaster {PASSWORD}\n"));
    // Until its first PING is answered the sentinel may still say `disconnected`.
    let started = Instant::now();
    loop {
        let flags = sentinel_flags(s.port).await;
        if flags == "master" {
            return s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the sentinel still flags the primary: {flags}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `flags` field of `SENTINEL MASTER mymaster` on the sentinel at `port`.
async fn sentinel_flags(port: u16) -> String {
    let fields: Vec<String> =
        redis::cmd("SENTINEL").arg("MASTER").arg("mymaster").query_async(&mut conn_on(port).await).await.unwrap();
    fields.chunks(2).find(|kv| kv[0] == "flags").map(|kv| kv[1].clone()).unwrap_or_default()
}

/// Issue 22, item 5: the primary's username and password reach it, for the commands and the
/// events. Before, `connect_sentinel` gave the primary no credentials: with `requirepass` every
/// script call got NOAUTH, `store_status()` said Redis, and nothing was ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_behind_a_password_or_an_acl_user_is_reached_with_the_credentials_given() {
    let primary = protected_primary().await;
    let s = sentinel_of_protected(primary.port).await;
    let url = s.url();
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).build().unwrap();
    let cases = [
        ("requirepass", SentinelOptions::new().password(PASSWORD)),
        ("an ACL user", SentinelOptions::new().username("breaker").password(BREAKER_PASSWORD)),
    ];
    for (what, options) in cases {
        let a =
            Client::connect_sentinel_with(&[url.as_str()], "mymaster", config.clone(), options.clone()).await.unwrap();
        let b = Client::connect_sentinel_with(&[url.as_str()], "mymaster", config.clone(), options).await.unwrap();
        let name = support::unique("sentinel-auth");
        let ba = a_trip_reaches_the_other(&a, &b, &name, what).await;
        let state: String = redis::cmd("HGET")
            .arg(format!("breaker:{{{name}}}:state"))
            .arg("state")
            .query_async(&mut authenticated(primary.port).await)
            .await
            .unwrap();
        assert_eq!(state, "open", "{what}: the state is written in the primary");
        assert_eq!(a.store_status(), StoreStatus::Redis, "{what}");
        assert_eq!(ba.health().await.unwrap().store, StoreStatus::Redis, "{what}");
    }
}

/// Issue 22, item 5: credentials the primary refuses are an authentication error, in the
/// error, in `store_status()` and in `health()`, and Redis is treated as down at once (the
/// degraded mode decides, no call waits on it), never a per-call refusal; nothing is written
/// and no password is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_an_authentication_error_not_a_refusal_per_call() {
    let primary = protected_primary().await;
    let s = sentinel_of_protected(primary.port).await;
    let url = s.url();
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).build().unwrap();
    let cases = [
        ("no password (NOAUTH)", SentinelOptions::new()),
        ("a wrong password (WRONGPASS)", SentinelOptions::new().password("wrong-pw-5f0b")),
        ("an ACL user with a wrong password", SentinelOptions::new().username("breaker").password("wrong-pw-5f0b")),
    ];
    for (what, options) in cases {
        let client = Client::connect_sentinel_with(&[url.as_str()], "mymaster", config.clone(), options).await.unwrap();
        let b = client.breaker(&support::unique("sentinel-refused"), Config::default()).unwrap();
        let err = b.force_open(None).await.expect_err("the credentials are refused");
        assert!(matches!(err, StoreError::Auth(_)), "{what}: {err:?}");
        assert!(err.is_outage(), "{what}");
        let said = format!("{err} {err:?}");
        assert!(!said.contains("wrong-pw") && !said.contains(PASSWORD), "{what}: a password in {said}");
        assert_eq!(client.store_status(), StoreStatus::AuthFailed, "{what}: after one operation");
        let started = Instant::now();
        b.execute(|| async { Ok::<(), ()>(()) }).await.expect("calls flow on the degraded mode");
        assert!(started.elapsed() < OP_TIMEOUT, "{what}: a call waited on Redis");
        assert_eq!(b.health().await.unwrap().store, StoreStatus::AuthFailed, "{what}");
        println!("figures: {what}: {err}");
    }
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("breaker:*").query_async(&mut authenticated(primary.port).await).await.unwrap();
    assert!(keys.is_empty(), "nothing was written: {keys:?}");
    let shown = format!("{:?}", SentinelOptions::new().username("breaker").password("hidden-pw-42"));
    assert!(shown.contains("breaker") && !shown.contains("hidden-pw-42"), "{shown}");
}

/// Issue 22, item 11 (Sentinel), the other way round: the subscription drops first (its node
/// closed pub/sub connections), asks the sentinels, and finds they name another node; the
/// commands, whose connection to the old node still works, move with it. Before, they stayed
/// on the old node while the events came from the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_follow_the_event_subscription_to_the_node_the_sentinels_name() {
    let old = spawn_on_free_port(|_| Vec::new()).expect("a primary");
    let new = spawn_on_free_port(|_| Vec::new()).expect("another primary");
    let s = sentinel(old.port);
    let url = s.url();
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).build().unwrap();
    let a = Client::connect_sentinel(&[url.as_str()], "mymaster", config).await.unwrap();
    let name = support::unique("sentinel-events-moved");
    let held = a.breaker(&name, Config::default()).unwrap();
    breaker_subscribed(&held).await;
    name_another_primary(s.port, new.port, old.port, "pubsub").await;
    eventually("the subscription moved to the node the sentinels name", async || {
        event_subscribers(new.port).await == 1
    })
    .await;
    eventually_within("a write", Duration::from_secs(5), async || held.force_open(None).await.is_ok()).await;
    let written = |port: u16| {
        let name = name.clone();
        async move {
            let n: i64 = redis::cmd("EXISTS")
                .arg(format!("breaker:{{{name}}}:state"))
                .query_async(&mut conn_on(port).await)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(
        (written(old.port).await, written(new.port).await),
        (0, 1),
        "the write went to the node the events come from"
    );
}

/// The same classification for a client of one Redis (`Client::connect_with`): a URL without
/// the password of a `requirepass` server, or with a wrong one, is an authentication error in
/// `store_status()`, not a refusal per call; with the right one the client works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_with_refused_credentials_says_so_too() {
    let primary = protected_primary().await;
    let config = ClientConfig::builder().op_timeout(OP_TIMEOUT).build().unwrap();
    for url in
        [format!("redis://127.0.0.1:{}", primary.port), format!("redis://:wrong-pw-5f0b@127.0.0.1:{}", primary.port)]
    {
        let client = Client::connect_with(&url, config.clone()).await.unwrap();
        let b = client.breaker(&support::unique("plain-refused"), Config::default()).unwrap();
        let err = b.force_open(None).await.expect_err("the credentials are refused");
        assert!(matches!(err, StoreError::Auth(_)), "{err:?}");
        assert!(!err.to_string().contains("wrong-pw"), "{err}");
        assert_eq!(client.store_status(), StoreStatus::AuthFailed);
        b.execute(|| async { Ok::<(), ()>(()) }).await.expect("calls flow on the degraded mode");
    }
    let url = format!("redis://breaker:{BREAKER_PASSWORD}@127.0.0.1:{}", primary.port);
    let client = Client::connect_with(&url, config).await.unwrap();
    let b = client.breaker(&support::unique("plain-accepted"), Config::default()).unwrap();
    b.force_open(None).await.expect("the ACL user's credentials are accepted");
    assert_eq!(client.store_status(), StoreStatus::Redis);
}
