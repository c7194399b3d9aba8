//! Redis failing under load: killed, restarted empty, slow, blackholed, flushed, or refusing
//! permissions. Nothing panics, nothing hangs, no breaker is wedged. Each test prints the
//! figures it measured (run with `--nocapture` to see them).

use crate::support;
use crate::support::*;
use redis_breaker::{Client, ClientConfig, Config, Degraded, Error, EventKind, State, StoreStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OP_TIMEOUT: Duration = Duration::from_millis(100);

async fn faulty_client(url: &str, mode: Degraded) -> Client {
    client_with_timeout(url, mode, OP_TIMEOUT).await
}

/// For tests that are not about timeouts: a deadline a loaded machine cannot miss.
async fn patient_client(url: &str, mode: Degraded) -> Client {
    client_with_timeout(url, mode, Duration::from_secs(2)).await
}

/// Snapshots live 50ms, subscribed or not: these tests are about what calls that reach Redis do.
async fn client_with_timeout(url: &str, mode: Degraded, op_timeout: Duration) -> Client {
    let config = ClientConfig::builder()
        .op_timeout(op_timeout)
        .cache_ttl(Duration::from_millis(50))
        .subscribed_cache_ttl(Duration::from_millis(50))
        .degraded(mode)
        .build()
        .unwrap();
    Client::connect_with(url, config).await.unwrap()
}

async fn wait_for_status(client: &Client, want: StoreStatus, within: Duration) -> Duration {
    let start = Instant::now();
    while client.store_status() != want {
        assert!(start.elapsed() < within, "the client never became {want:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// Load from several tasks: counts outcomes and the longest `execute` since `measure` was set.
struct Load {
    stop: Arc<AtomicBool>,
    measure: Arc<AtomicBool>,
    longest_us: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(breakers: &[redis_breaker::Breaker], failing: Arc<AtomicBool>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let measure = Arc::new(AtomicBool::new(false));
        let longest_us = Arc::new(AtomicU64::new(0));
        let rejected = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for b in breakers {
            for _ in 0..3 {
                let (b, stop, measure, longest, rejected, failing) =
                    (b.clone(), stop.clone(), measure.clone(), longest_us.clone(), rejected.clone(), failing.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let fail = failing.load(Ordering::Relaxed);
                        let measured = measure.load(Ordering::Relaxed);
                        let started = Instant::now();
                        let r = b.execute(|| async move { if fail { Err("down") } else { Ok(()) } }).await;
                        if measured {
                            longest.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                        if matches!(r, Err(Error::Rejected(_))) {
                            rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }));
            }
        }
        Load { stop, measure, longest_us, rejected, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("no load task panicked");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_then_restart_falls_back_locally_and_returns_to_redis() {
    let mut redis = private_redis().await;
    let name = unique("sigkill");
    let config = Config::builder().failure_threshold(5).base_recovery(Duration::from_secs(30)).build().unwrap();
    let clients = [faulty_client(&redis.url, Degraded::Local).await, faulty_client(&redis.url, Degraded::Local).await];
    let breakers: Vec<_> = clients.iter().map(|c| c.breaker(&name, config.clone()).unwrap()).collect();
    let failing = Arc::new(AtomicBool::new(false));

    // While Redis is up, every outcome reaches it.
    let (mut made, mut failed) = (0u64, 0u64);
    for i in 0..60 {
        let b = &breakers[i % 2];
        let fail = i % 7 == 0;
        let _ = b.execute(|| async move { if fail { Err("down") } else { Ok(()) } }).await;
        made += 1;
        failed += u64::from(fail);
    }
    for c in &clients {
        c.flush().await.unwrap();
    }
    let metrics: std::collections::HashMap<String, u64> = metrics_hash(&redis, &name).await;
    assert_eq!((metrics["calls"], metrics["failures"]), (made, failed), "no outcome lost while Redis was up");

    let load = Load::start(&breakers, failing.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut down_events = breakers[0].subscribe();
    redis.kill();
    let mut detected = Duration::ZERO;
    for c in &clients {
        detected = detected.max(wait_for_status(c, StoreStatus::RedisDown, Duration::from_secs(10)).await);
    }
    load.measure.store(true, Ordering::Relaxed);
    failing.store(true, Ordering::Relaxed); // the downstream fails during the outage too
    tokio::time::sleep(Duration::from_millis(600)).await;
    let longest = Duration::from_micros(load.longest_us.load(Ordering::Relaxed));
    // Generous for a loaded machine: the proxy test below is the one where waiting would show.
    assert!(longest < OP_TIMEOUT * 2, "after detection no call waits on Redis: longest execute {longest:?}");
    assert!(load.rejected.load(Ordering::Relaxed) > 0, "the local breakers tripped on the failures");
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), down_events.recv()).await.unwrap().unwrap();
        if e.kind == EventKind::StoreDown {
            assert!(e.reason.contains("local"), "{}", e.reason);
            break;
        }
    }

    failing.store(false, Ordering::Relaxed);
    redis.restart();
    let restarted = Instant::now();
    for c in &clients {
        wait_for_status(c, StoreStatus::Redis, Duration::from_secs(10)).await;
    }
    let back = restarted.elapsed();
    load.stop().await;
    for c in &clients {
        c.flush().await.unwrap();
    }
    let calls = metric(&redis, &name, "calls").await;
    assert!(calls > 0, "the calls decided locally reach the restarted Redis's metrics");
    assert_eq!(breakers[0].state(), State::Closed, "the restarted (empty) Redis decides again: closed");

    // The event subscriptions came back by themselves: a trip in one client reaches the other.
    let start = Instant::now();
    while !breakers[1].health().await.unwrap().events_subscribed {
        assert!(start.elapsed() < Duration::from_secs(10), "the subscription never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut events = breakers[1].subscribe();
    breakers[0].force_open(None).await.unwrap();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
        if e.kind == EventKind::Transition {
            assert_eq!(e.to, State::ForcedOpen);
            break;
        }
    }
    println!(
        "figures: outage detected after {detected:?}; longest execute after detection {longest:?}; back on Redis {back:?} after the restart; 0 of {made} outcomes lost while Redis was up"
    );
    assert!(back < Duration::from_secs(5), "back on Redis within 5s of the restart: {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_made_while_redis_is_down_serves_at_once_and_joins_redis_when_it_comes() {
    let port = unused_port();
    let client = faulty_client(&format!("redis://127.0.0.1:{port}"), Degraded::Local).await;
    let name = unique("cold-start");
    let b = client.breaker(&name, Config::builder().failure_threshold(2).build().unwrap()).unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        b.execute(|| async { Ok::<(), ()>(()) }).await.expect("served without Redis");
        assert!(started.elapsed() < OP_TIMEOUT * 2, "{:?}", started.elapsed());
    }
    wait_for_status(&client, StoreStatus::RedisDown, Duration::from_secs(5)).await;

    let redis = redis_on_port(port);
    let joined = wait_for_status(&client, StoreStatus::Redis, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(state_hash(&redis, &name).await["state"], "open", "the failures went to Redis");
    println!("figures: joined Redis {joined:?} after it started");
}

/// A loopback TCP proxy that can add latency to every chunk, or stop forwarding altogether.
struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    blackhole: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let blackhole = Arc::new(AtomicBool::new(false));
        let (d, bh) = (delay_ms.clone(), blackhole.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, d.clone(), bh.clone()));
                tokio::spawn(pipe(ro, wi, d.clone(), bh.clone()));
            }
        });
        Proxy { port, delay_ms, blackhole }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
    blackhole: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        while blackhole.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_timeout_holds_through_latency_and_a_blackhole() {
    let redis = private_redis().await;
    let upstream = redis.url.trim_start_matches("redis://").to_string();
    let proxy = Proxy::start(upstream).await;
    let client = faulty_client(&format!("redis://127.0.0.1:{}", proxy.port), Degraded::Local).await;
    let name = unique("slow");
    let b = client.breaker(&name, Config::default()).unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    assert_eq!(client.store_status(), StoreStatus::Redis);

    proxy.delay_ms.store(20, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(60)).await;
    b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    assert_eq!(client.store_status(), StoreStatus::Redis, "20ms of latency is within op_timeout");

    let mut longest = Duration::ZERO;
    for (delay, blackhole) in [(400, false), (0, true)] {
        proxy.delay_ms.store(delay, Ordering::Relaxed);
        proxy.blackhole.store(blackhole, Ordering::Relaxed);
        let phase = Instant::now();
        while phase.elapsed() < Duration::from_millis(700) {
            let started = Instant::now();
            b.execute(|| async { Ok::<(), ()>(()) }).await.expect("served by the local breaker");
            longest = longest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(client.store_status(), StoreStatus::RedisDown);
    }
    assert!(longest < OP_TIMEOUT * 3, "op_timeout bounds every call: longest {longest:?}");

    proxy.blackhole.store(false, Ordering::Relaxed);
    proxy.delay_ms.store(0, Ordering::Relaxed);
    let back = wait_for_status(&client, StoreStatus::Redis, Duration::from_secs(10)).await;
    b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    println!(
        "figures: longest execute through 400ms latency and a blackhole: {longest:?}; back {back:?} after the path healed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_and_flushall_under_load_wedge_nothing() {
    let redis = private_redis().await;
    let name = unique("flushes");
    let config = Config::builder().failure_threshold(3).build().unwrap();
    let client = patient_client(&redis.url, Degraded::FailClosed).await;
    let b = client.breaker(&name, config).unwrap();
    let load = Load::start(std::slice::from_ref(&b), Arc::new(AtomicBool::new(false)));
    let mut conn = redis.conn().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
    let rejected_under_load = load.rejected.load(Ordering::Relaxed);
    load.stop().await;
    assert_eq!(rejected_under_load, 0, "fail-closed never had to reject: every call reached Redis");
    assert_eq!(client.store_status(), StoreStatus::Redis);
    for _ in 0..3 {
        let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    }
    assert_eq!(b.state(), State::Open, "the breaker still trips after the flushes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_while_a_breaker_is_open_reads_as_closed() {
    let mut redis = private_redis().await;
    let name = unique("restart-open");
    let client = patient_client(&redis.url, Degraded::FailClosed).await;
    let b = client
        .breaker(&name, Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(60)).build().unwrap())
        .unwrap();
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(b.state(), State::Open);
    redis.kill();
    redis.restart();
    let start = Instant::now();
    loop {
        if b.execute(|| async { Ok::<(), ()>(()) }).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the breaker stayed wedged open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.state(), State::Closed, "an empty Redis has no state: closed");
}

#[tokio::test]
async fn a_user_without_evalsha_gets_an_error_naming_the_permission() {
    let redis = private_redis().await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "limited", "on", ">secret", "~*", "&*", "+@all", "-evalsha", "-eval"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = redis.url.replace("redis://", "redis://limited:secret@");
    let client = patient_client(&url, Degraded::Local).await;
    let b = client.breaker(&unique("acl"), Config::default()).unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("the call is decided by the degraded mode");
    let err = b.force_open(None).await.expect_err("the script is refused");
    let text = err.to_string();
    assert!(!err.is_outage(), "a missing permission is not an outage: {text}");
    assert!(text.to_lowercase().contains("noperm") && text.contains("evalsha"), "{text}");
    assert!(text.contains("breaker:{acl-"), "the error names the key: {text}");
    assert!(!text.contains("secret"));
    assert_eq!(client.store_status(), StoreStatus::Redis, "one refused breaker does not mark Redis down");
}

/// The minimal ACL the README documents is enough for every operation.
#[tokio::test]
async fn the_readme_minimal_acl_is_enough() {
    let redis = private_redis().await;
    let mut conn = redis.conn().await;
    let url = readme_acl_user(&redis).await;
    let client = patient_client(&url, Degraded::FailClosed).await;
    let watcher = patient_client(&url, Degraded::FailClosed).await;
    let name = unique("acl-min");
    let config = Config::builder()
        .failure_threshold(1)
        .base_recovery(Duration::from_millis(50))
        .max_recovery(Duration::from_millis(50))
        .build()
        .unwrap();
    let b = client.breaker(&name, config.clone()).unwrap();
    let w = watcher.breaker(&name, config).unwrap();
    let mut events = w.subscribe();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("allowed through Redis");
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(b.state(), State::Open);
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(e.to, State::Open, "events arrive under the minimal ACL");
    tokio::time::sleep(Duration::from_millis(60)).await;
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("a probe through Redis");
    b.force_open(None).await.unwrap();
    b.reset().await.unwrap();
    b.health().await.unwrap();
    assert_eq!(client.breakers().await.unwrap(), vec![name.clone()]);
    assert_eq!(client.store_status(), StoreStatus::Redis);
}

/// The README's ACL with the README's line for the Functions library (`+fcall +function|load`)
/// lets the client call the library (on servers with Functions) and every operation works; the
/// ACL without it sends the scripts with EVALSHA, as before.
#[tokio::test]
async fn the_readme_acl_with_its_functions_line_calls_the_library() {
    let redis = private_redis().await;
    let has_functions = redis.version().await >= (7, 0);
    let url = readme_acl_user(&redis).await;
    let plain = patient_client(&url, Degraded::FailClosed).await;
    let p = plain.breaker(&unique("acl-plain"), Config::default()).unwrap();
    p.execute(|| async { Ok::<(), ()>(()) }).await.expect("allowed through Redis");
    assert_eq!(p.health().await.unwrap().scripts, "evalsha", "the minimal ACL has no +fcall");

    let line = documented_line("ACL SETUSER breaker +fcall");
    let mut cmd = redis::cmd("ACL");
    for word in line.split_whitespace().skip(1) {
        cmd.arg(word);
    }
    let added: redis::RedisResult<()> = cmd.query_async(&mut redis.conn().await).await;
    if !has_functions {
        // Before 7.0 there is no FCALL: the server refuses the line, and EVALSHA is the way.
        let err = added.expect_err("a server without Functions knows no +fcall");
        assert!(err.to_string().contains("fcall"), "{err}");
        return;
    }
    added.unwrap();
    let client = patient_client(&url, Degraded::FailClosed).await;
    let name = unique("acl-functions");
    let b = client.breaker(&name, Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("allowed through Redis");
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(b.state(), State::Open);
    b.force_close(None).await.unwrap();
    b.reset().await.unwrap();
    assert_eq!(b.health().await.unwrap().scripts, "functions");
    assert_eq!(state_hash(&redis, &name).await["state"], "closed");
    assert_eq!(client.store_status(), StoreStatus::Redis);
    let fcalls = redis.commandstats().await.get("fcall").copied().unwrap_or(0);
    assert!(fcalls >= 5, "{fcalls} FCALL");
}

/// The README's ACL user, made on `redis`; answers its URL.
async fn readme_acl_user(redis: &TestRedis) -> String {
    documented_acl_user(redis, &[]).await
}

/// The README's ACL is enough for a rate rule's window (buckets written, expired ones deleted),
/// and the operators' status (PTTL); `cli/tests/it/cli.rs` runs every CLI command under it.
#[tokio::test]
async fn the_readme_minimal_acl_is_enough_for_rate_rules_and_status() {
    let redis = private_redis().await;
    let url = readme_acl_user(&redis).await;
    let config = ClientConfig::builder()
        .op_timeout(Duration::from_secs(2))
        .cache_ttl(Duration::ZERO)
        .flush_interval(Duration::from_millis(10))
        .metrics_interval(Duration::from_millis(10))
        .degraded(Degraded::FailClosed)
        .build()
        .unwrap();
    let client = Client::connect_with(&url, config).await.unwrap();
    let name = unique("acl-rate");
    let rule = Config::builder()
        .failure_threshold(0)
        .failure_rate(0.5)
        .minimum_calls(1000)
        .window(Duration::from_millis(100))
        .build()
        .unwrap();
    let b = client.breaker(&name, rule).unwrap();
    // Over three windows: buckets are written, and the expired ones deleted (HDEL).
    let until = Instant::now() + Duration::from_millis(350);
    let mut failures = 0;
    while Instant::now() < until {
        b.execute(|| async { Ok::<(), ()>(()) }).await.expect("allowed through Redis");
        let _ = b.execute(|| async { Err::<(), _>("down") }).await;
        failures += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.flush().await.unwrap();
    // Every failure reached the state, and the server refused nothing (a command refused inside
    // a script, after the state was written, shows only in its error statistics).
    assert_eq!(state_field(&redis, &name, "fseq").await, failures, "every failure was recorded by the scripts");
    let refused = refused_commands(&redis).await;
    assert!(refused.is_empty(), "the server refused commands to the README's ACL user: {refused:?}");
    let status = b.status().await.expect("status under the minimal ACL (PTTL, TYPE)");
    assert_eq!(status.state, State::Closed);
    assert_eq!(client.store_status(), StoreStatus::Redis, "no operation was refused");
    let window: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(key(&name, "window")).query_async(&mut redis.conn().await).await.unwrap();
    assert!(window.len() <= 2 * 11 + 1, "expired buckets were deleted: {} fields", window.len());
}

/// The commands the server refused (`INFO commandstats` lines with rejected calls). A command
/// the ACL denies (inside a script too) counts in its rejected_calls; CLIENT SETINFO, which the
/// redis crate sends when it connects and whose refusal it ignores, aside.
async fn refused_commands(redis: &TestRedis) -> Vec<String> {
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut redis.conn().await).await.unwrap();
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_client") && !l.contains("rejected_calls=0,"))
        .map(str::to_string)
        .collect()
}

/// A breaker under a quorum (with a fraction) works under the README's ACL: reports, the
/// processes' key, the fleet's trip. Without the quorum's commands (a user made before them)
/// a report is refused before anything is written, and other breakers are unaffected.
#[tokio::test]
async fn the_readme_acl_is_enough_for_a_quorum_and_without_its_commands_a_report_writes_nothing() {
    // (A window of 1s: a fraction is decided once the processes key has collected for a fifth
    // of it.)
    let config = Config::builder()
        .failure_threshold(1)
        .quorum(2)
        .quorum_fraction(0.5)
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    let redis = private_redis().await;
    let url = readme_acl_user(&redis).await;
    // Two hosts: a quorum counts distinct identities (one host is one reporter).
    let host = |id: &str| {
        let config = ClientConfig::builder()
            .flush_interval(Duration::from_millis(100))
            .op_timeout(Duration::from_secs(2))
            .cache_ttl(Duration::from_millis(50))
            .subscribed_cache_ttl(Duration::from_millis(50))
            .degraded(Degraded::FailClosed)
            .reporter_id(id)
            .build()
            .unwrap();
        Client::connect_with(&url, config)
    };
    let (a, b) = (host("host-a").await.unwrap(), host("host-b").await.unwrap());
    let name = unique("acl-quorum");
    let (ba, bb) = (a.breaker(&name, config.clone()).unwrap(), b.breaker(&name, config.clone()).unwrap());
    for (breaker, client) in [(&ba, &a), (&bb, &b)] {
        breaker.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
        client.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let _ = ba.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(state_hash(&redis, &name).await["state"], "closed", "one report of two needed");
    let _ = bb.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(state_hash(&redis, &name).await["state"], "open", "the second report opens the fleet");
    assert!(ba.status().await.unwrap().processes >= 2);
    assert_eq!(refused_commands(&redis).await, Vec::<String>::new());

    let redis = private_redis().await;
    let url = documented_acl_user(&redis, &["+zcount", "+zscore", "+zremrangebyscore", "+zrem"]).await;
    let client = patient_client(&url, Degraded::FailClosed).await;
    let plain =
        client.breaker(&unique("acl-no-quorum"), Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    let _ = plain.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(plain.state(), State::Open, "a breaker without a quorum needs none of them");
    let name = unique("acl-quorum-refused");
    let config = Config::builder().failure_threshold(1).quorum(2).quorum_fraction(0.5).build().unwrap();
    let quorum = client.breaker(&name, config).unwrap();
    quorum.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    client.flush().await.unwrap();
    let fseq_before = state_field(&redis, &name, "fseq").await;
    let _ = quorum.execute(|| async { Err::<(), _>("down") }).await;
    // (Redis 6.2 counts no rejected calls; there the unchanged state shows it.)
    if redis.version().await >= (7, 0) {
        let refused = refused_commands(&redis).await;
        assert!(refused.iter().any(|l| l.starts_with("cmdstat_zcount")), "{refused:?}");
    }
    assert_eq!(state_field(&redis, &name, "fseq").await, fseq_before, "the refused report wrote nothing");
    assert_eq!(client.store_status(), StoreStatus::Redis, "a refused report does not mark Redis down");
    // A refused report is not sent again (it would be refused again): the next flush goes.
    let _ = quorum.execute(|| async { Ok::<(), ()>(()) }).await;
    client.flush().await.expect("a flush after a refused report");
}
/// A provider without pub/sub (no `+subscribe`, no channel): calls are decided correctly and
/// a snapshot is trusted only for the short `cache_ttl`, since no event can correct it.
#[tokio::test]
async fn without_pub_sub_calls_are_decided_and_snapshots_live_cache_ttl() {
    let redis = private_redis().await;
    let url = documented_acl_user(&redis, &["+subscribe", "&breaker:events"]).await;
    let config = ClientConfig::builder()
        .op_timeout(Duration::from_secs(2))
        .cache_ttl(Duration::from_millis(100))
        .build()
        .unwrap();
    let (client, other) =
        (Client::connect_with(&url, config.clone()).await.unwrap(), Client::connect_with(&url, config).await.unwrap());
    let name = unique("no-pubsub");
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(60)).build().unwrap();
    let (b, o) = (client.breaker(&name, trips.clone()).unwrap(), other.breaker(&name, trips).unwrap());
    o.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!o.health().await.unwrap().events_subscribed, "the subscription is refused");
    o.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    assert!(o.snapshot().fresh);
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    // No event: the other process sees the trip when its snapshot expires (cache_ttl, 100ms).
    let start = Instant::now();
    while o.execute(|| async { Ok::<(), ()>(()) }).await.is_ok() {
        assert!(start.elapsed() < Duration::from_secs(5), "the trip was never seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(o.state(), State::Open);
    assert_eq!(client.store_status(), StoreStatus::Redis, "a refused subscription is not an outage");
    println!("figures: without pub/sub a trip reached the other client after {:?} (cache_ttl 100ms)", start.elapsed());
}

/// A provider that forbids SCRIPT LOAD: once the scripts are not cached (a restart, SCRIPT
/// FLUSH), each script call is refused with the permission named, decided by the degraded
/// mode, and nothing is written.
#[tokio::test]
async fn without_script_load_the_error_names_it_and_calls_are_decided() {
    let redis = private_redis().await;
    let url = documented_acl_user(&redis, &["+script|load"]).await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut redis.conn().await).await.unwrap();
    let client = patient_client(&url, Degraded::Local).await;
    let b = client.breaker(&unique("no-script-load"), Config::default()).unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("decided by the degraded mode");
    let err = b.force_open(None).await.expect_err("the script cannot be loaded");
    let text = err.to_string();
    assert!(!err.is_outage(), "{text}");
    assert!(text.to_lowercase().contains("noperm") && text.contains("script"), "{text}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("breaker:*").query_async(&mut redis.conn().await).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    println!("figures: without SCRIPT LOAD: {text}");
}

/// An ACL that lacks one command the scripts run (here HDEL, for expired window buckets) is
/// found before the first script call (Redis >= 7.0): one error naming it, nothing written,
/// calls decided by the degraded mode, and the client recovers once the ACL is fixed.
#[tokio::test]
async fn an_acl_missing_one_command_is_named_before_anything_is_written() {
    let redis = private_redis().await;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut redis.conn().await).await.unwrap();
    let major: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .unwrap();
    let url = documented_acl_user(&redis, &["+hdel"]).await;
    let client = patient_client(&url, Degraded::Local).await;
    let name = unique("acl-missing-hdel");
    let b = client.breaker(&name, Config::default()).unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("decided by the degraded mode");
    let result = b.force_open(None).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("breaker:*").query_async(&mut redis.conn().await).await.unwrap();
    if major < 7 {
        // No redis.acl_check_cmd before 7.0: the scripts run, and HDEL is refused only when a
        // rate rule's bucket expires (the README's line has it).
        result.expect("before 7.0 the permissions are not checked ahead");
        println!("figures: Redis {major}: permissions not checked ahead (no redis.acl_check_cmd)");
        return;
    }
    let err = result.expect_err("refused before the first write");
    assert!(matches!(&err, redis_breaker::StoreError::Denied { commands, .. } if commands == &["hdel"]), "{err:?}");
    assert!(err.to_string().contains("hdel") && err.to_string().contains("nothing was written"), "{err}");
    assert!(!err.is_outage());
    assert!(keys.is_empty(), "nothing was written: {keys:?}");
    // The ACL is fixed: within the recheck (10s) the client uses Redis again.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("breaker")
        .arg("+hdel")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let fixed = Instant::now();
    while b.force_open(None).await.is_err() {
        assert!(fixed.elapsed() < Duration::from_secs(30), "the fixed ACL was never noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("figures: {err}; the fixed ACL was used {:.1?} later", fixed.elapsed());
}

/// A demoted master answers READONLY: the client treats it as an outage, replaces its
/// connection, and works again once the node is a master.
#[tokio::test]
async fn readonly_from_a_demoted_master_replaces_the_connection() {
    let master = private_redis().await;
    let replica = private_redis().await;
    let master_port = master.port().expect("a spawned master");
    let mut rconn = replica.conn().await;
    let _: () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg(master_port).query_async(&mut rconn).await.unwrap();
    let client = patient_client(&replica.url, Degraded::FailClosed).await;
    let b = client.breaker(&unique("readonly"), Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    // The ids of the client's connections to the replica (not this test's, not the link from
    // the replica to its master).
    let own: u64 = redis::cmd("CLIENT").arg("ID").query_async(&mut rconn).await.unwrap();
    let ids = async || {
        connections_of_clients(&replica.url)
            .await
            .iter()
            .filter(|l| !line_field(l, "flags").contains('M'))
            .filter_map(|l| line_field(l, "id").parse::<u64>().ok())
            .filter(|id| *id != own)
            .collect::<std::collections::BTreeSet<u64>>()
    };
    let _ = b.status().await;
    let before = ids().await;
    assert!(!before.is_empty(), "the client is connected");
    let err = b.force_open(None).await.expect_err("a replica refuses the write");
    assert!(err.is_outage(), "READONLY counts as an outage: {err}");
    assert!(err.to_string().contains("read only replica"), "{err}");
    // The connection that met READONLY is let go and the next operation makes another (the
    // event subscription may make it first).
    let _ = b.force_open(None).await;
    eventually("the connection that met READONLY replaced", async || {
        let now = ids().await;
        !now.is_empty() && now.is_disjoint(&before)
    })
    .await;

    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query_async(&mut rconn).await.unwrap();
    let start = Instant::now();
    while b.force_open(None).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the promoted node never took the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.state(), State::ForcedOpen);
}

/// A server that answers but serves nobody (here a replica cut off from its primary, with
/// `replica-serve-stale-data no`: MASTERDOWN; a restarted server loading its data answers
/// LOADING the same way) is an outage, not a refusal: the degraded mode decides, the counts are
/// kept, and they reach Redis once the node serves again (promoted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_its_primary_is_an_outage_and_keeps_the_counts() {
    let replica = private_redis().await;
    let mut conn = replica.conn().await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed again
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("replica-serve-stale-data").arg("no").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg(gone).query_async(&mut conn).await.unwrap();
    let said = redis::cmd("GET").arg("k").query_async::<Option<String>>(&mut conn).await.expect_err("MASTERDOWN");
    assert_eq!(said.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown), "{said}");

    let client = patient_client(&replica.url, Degraded::Local).await;
    let name = unique("masterdown");
    let b = client.breaker(&name, Config::builder().failure_threshold(3).build().unwrap()).unwrap();
    for _ in 0..4 {
        succeed(&b).await.expect("decided by the local breaker");
    }
    assert!(matches!(fail(&b).await, Err(Error::Inner(_))), "the call ran");
    assert!(matches!(fail(&b).await, Err(Error::Inner(_))), "the call ran");
    wait_for_status(&client, StoreStatus::RedisDown, Duration::from_secs(5)).await;
    let health = b.health().await.expect("health while redis serves nobody");
    assert_eq!(health.store, StoreStatus::RedisDown);

    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query_async(&mut conn).await.unwrap();
    wait_for_status(&client, StoreStatus::Redis, Duration::from_secs(10)).await;
    let (counts, m) = counts_after_flush(&client, &replica, &name).await;
    assert_eq!(counts, (6, 4, 2), "the calls decided while the node served nobody reached it afterwards: {m:?}");
}

/// A subscription that stays connected but carries nothing (a blackholed path) is noticed by
/// its keepalive: the client says it is not subscribed, snapshots stop being trusted, and it
/// subscribes again when the path heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_subscription_is_noticed_and_snapshots_go_stale() {
    let redis = private_redis().await;
    let proxy = Proxy::start(redis.url.trim_start_matches("redis://").to_string()).await;
    // The default bounds: a snapshot Redis answered is fresh 30s while the subscription lives.
    let config = ClientConfig::builder()
        .op_timeout(Duration::from_millis(100))
        .events_keepalive(Duration::from_millis(200))
        .build()
        .unwrap();
    let client = Client::connect_with(&format!("redis://127.0.0.1:{}", proxy.port), config).await.unwrap();
    let b = client.breaker(&unique("keepalive"), Config::default()).unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    let start = Instant::now();
    while !client.events_subscribed() {
        assert!(start.elapsed() < Duration::from_secs(5), "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    assert!(b.snapshot().fresh);

    proxy.blackhole.store(true, Ordering::Relaxed);
    let start = Instant::now();
    while client.events_subscribed() {
        assert!(start.elapsed() < Duration::from_secs(10), "the dead subscription was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = start.elapsed();
    // Marked stale when the drop is noticed; a reply that lands meanwhile (a background flush)
    // may make it fresh again, but only for the short bound, cache_ttl (1s).
    let start = Instant::now();
    while b.snapshot().fresh {
        assert!(
            start.elapsed() < ClientConfig::DEFAULT_CACHE_TTL + Duration::from_millis(500),
            "a snapshot no event can correct is trusted beyond cache_ttl"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    proxy.blackhole.store(false, Ordering::Relaxed);
    let start = Instant::now();
    while !client.events_subscribed() {
        assert!(start.elapsed() < Duration::from_secs(10), "never subscribed again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("figures: a blackholed subscription noticed after {noticed:?} (keepalive 200ms + op_timeout 100ms)");
}

// Outcomes exactly once (issue 22, item 10): a batch whose reply was lost (a timeout, a dropped
// connection) is sent again, as it was, under its id, until Redis answers; the scripts count a
// batch id once. Each test makes outcomes while Redis is up, across the fault, and right after
// Redis is back, and finds each of them in the metrics hash once.

/// A client with the default bounds but the default `op_timeout` (100ms) or `op_timeout`.
async fn exact_client(url: &str, op_timeout: Duration) -> Client {
    let config = ClientConfig::builder().op_timeout(op_timeout).degraded(Degraded::Local).build().unwrap();
    Client::connect_with(url, config).await.unwrap()
}

/// Sends `sig` (STOP, CONT, KILL) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The process id of the server behind `conn`.
async fn server_pid(conn: &mut redis::aio::MultiplexedConnection) -> u32 {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("process_id:")).unwrap().trim().parse().unwrap()
}

/// (calls, successes, failures) of breaker `name` on the server at `url`, and the whole hash.
async fn counts_at(url: &str, name: &str) -> ((u64, u64, u64), std::collections::HashMap<String, u64>) {
    let mut conn = support::admin_connection(url).await;
    let m: std::collections::HashMap<String, u64> =
        redis::cmd("HGETALL").arg(key(name, "metrics")).query_async(&mut conn).await.unwrap();
    let got = |f: &str| m.get(f).copied().unwrap_or(0);
    ((got("calls"), got("successes"), got("failures")), m)
}

/// Flushes `client` until Redis takes it (within 10s), then answers `counts_at`.
async fn flushed_counts(
    client: &Client,
    url: &str,
    name: &str,
) -> ((u64, u64, u64), std::collections::HashMap<String, u64>) {
    let start = Instant::now();
    while let Err(e) = client.flush().await {
        assert!(start.elapsed() < Duration::from_secs(10), "no flush reached redis: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counts_at(url, name).await
}

/// Makes `successes` successes and `failures` failures through `b` (their outcomes, whatever
/// decided the calls: every call runs, the trip rule is far away).
async fn outcomes(b: &redis_breaker::Breaker, successes: u64, failures: u64) {
    for _ in 0..successes {
        succeed(b).await.expect("the call runs");
    }
    for _ in 0..failures {
        assert!(matches!(fail(b).await, Err(Error::Inner(_))), "the call runs");
    }
}

fn far_trip() -> Config {
    Config::builder().failure_threshold(1000).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_across_a_pause_longer_than_op_timeout_count_once() {
    let redis = private_redis().await;
    let pid = server_pid(&mut redis.conn().await).await;
    let client = exact_client(&redis.url, OP_TIMEOUT).await;
    let name = unique("exact-pause");
    let b = client.breaker(&name, far_trip()).unwrap();
    outcomes(&b, 3, 1).await;
    assert_eq!(flushed_counts(&client, &redis.url, &name).await.0, (4, 3, 1));

    // Stopped longer than op_timeout: the flush and the failure records time out, and the
    // server runs them (and every attempt sent again meanwhile) when it resumes.
    signal(pid, "STOP");
    outcomes(&b, 4, 0).await;
    let flushed = client.flush().await;
    outcomes(&b, 0, 2).await;
    tokio::time::sleep(OP_TIMEOUT * 3).await;
    signal(pid, "CONT");
    assert!(flushed.is_err(), "the flush timed out");
    wait_for_status(&client, StoreStatus::Redis, Duration::from_secs(10)).await;
    outcomes(&b, 1, 0).await; // right after Redis came back
    let (counts, m) = flushed_counts(&client, &redis.url, &name).await;
    assert_eq!(counts, (11, 8, 3), "each outcome counted once: {m:?}");
    // What the client sends afterwards counts as usual (the lanes moved on).
    outcomes(&b, 2, 1).await;
    assert_eq!(flushed_counts(&client, &redis.url, &name).await.0, (14, 10, 4));
}

/// A server of its own with an append-only file synced on every write: killed and restarted,
/// it comes back with every write it answered (the counts and the batch ids), or, started
/// without it, empty.
async fn outcomes_across_a_sigkill_and_restart(keep_data: bool) -> ((u64, u64, u64), (u64, u64, u64)) {
    let aof = |_| ["--appendonly", "yes", "--appendfsync", "always"].map(String::from).to_vec();
    let mut server = support::server::spawn_on_free_port(aof).unwrap();
    let url = server.url();
    let client = exact_client(&url, OP_TIMEOUT).await;
    let name = unique("exact-kill");
    let b = client.breaker(&name, far_trip()).unwrap();
    outcomes(&b, 3, 1).await;
    let before = flushed_counts(&client, &url, &name).await.0;

    // Stopped, then killed: the flush and the failure record that timed out never ran.
    signal(server.child.id(), "STOP");
    outcomes(&b, 4, 0).await;
    assert!(client.flush().await.is_err(), "the flush timed out");
    outcomes(&b, 0, 2).await;
    let _ = server.child.kill();
    let _ = server.child.wait();
    let restart = if keep_data { aof(0) } else { Vec::new() };
    server.child = support::server::start_server(server.port, &server.dir, &restart).unwrap();
    assert!(support::server::wait_until_ours(&mut server, Duration::from_secs(10)), "restarted");
    wait_for_status(&client, StoreStatus::Redis, Duration::from_secs(10)).await;
    outcomes(&b, 1, 0).await; // right after Redis came back
    let (after, m) = flushed_counts(&client, &url, &name).await;
    println!("figures: across a SIGKILL and a restart (data kept: {keep_data}): {before:?} then {after:?}: {m:?}");
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_across_a_sigkill_and_a_restart_with_its_data_count_once() {
    let (before, after) = outcomes_across_a_sigkill_and_restart(true).await;
    assert_eq!(before, (4, 3, 1));
    assert_eq!(after, (11, 8, 3), "the batch and the failure whose requests died with the server count once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_across_a_sigkill_and_an_empty_restart_count_once_in_the_new_metrics() {
    let (before, after) = outcomes_across_a_sigkill_and_restart(false).await;
    assert_eq!(before, (4, 3, 1));
    // The counts of before went with the data; those whose fate was unknown reach the new server.
    assert_eq!(after, (7, 5, 2), "the outcomes of the outage and after, once");
}

/// A loopback proxy whose connections can be cut, that can swallow the requests (Redis never
/// sees them) or hold the replies (Redis runs the requests, the client never hears).
struct CutProxy {
    port: u16,
    mode: Arc<AtomicU64>,
    pipes: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

const FORWARD: u64 = 0;
const SWALLOW_REQUESTS: u64 = 1;
const HOLD_REPLIES: u64 = 2;

impl CutProxy {
    async fn start(upstream: String) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU64::new(FORWARD));
        let pipes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, p) = (mode.clone(), pipes.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let requests = tokio::spawn(cut_pipe(ri, wo, m.clone(), true));
                let replies = tokio::spawn(cut_pipe(ro, wi, m.clone(), false));
                p.lock().unwrap().extend([requests.abort_handle(), replies.abort_handle()]);
            }
        });
        CutProxy { port, mode, pipes }
    }

    fn set(&self, mode: u64) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// Closes every connection made so far (the client sees them drop).
    fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

async fn cut_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU64>,
    requests: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if requests && mode.load(Ordering::SeqCst) == SWALLOW_REQUESTS {
            continue;
        }
        while !requests && mode.load(Ordering::SeqCst) == HOLD_REPLIES {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_across_dropped_connections_and_swallowed_requests_count_once() {
    let redis = private_redis().await;
    let proxy = CutProxy::start(redis.url.trim_start_matches("redis://").to_string()).await;
    // As the README's ACL user: sending a batch again needs nothing more.
    let user = readme_acl_user(&redis).await;
    let url = user.replace(&format!(":{}", redis.port().unwrap()), &format!(":{}", proxy.port));
    // Long enough that the connection drops before the request times out.
    let client = exact_client(&url, Duration::from_millis(500)).await;
    let name = unique("exact-drop");
    let b = client.breaker(&name, far_trip()).unwrap();
    outcomes(&b, 3, 1).await;
    assert_eq!(flushed_counts(&client, &redis.url, &name).await.0, (4, 3, 1));

    // Applied, and the connection drops before the reply: the batch is sent again, counted once.
    outcomes(&b, 4, 0).await;
    proxy.set(HOLD_REPLIES);
    let flushing = {
        let client = client.clone();
        tokio::spawn(async move { client.flush().await })
    };
    let start = Instant::now();
    while counts_at(&redis.url, &name).await.0 != (8, 7, 1) {
        assert!(start.elapsed() < Duration::from_secs(5), "the held flush never reached redis");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    proxy.set(FORWARD);
    proxy.cut();
    let _ = flushing.await.unwrap();
    let (counts, m) = flushed_counts(&client, &redis.url, &name).await;
    assert_eq!(counts, (8, 7, 1), "applied once though its reply was lost: {m:?}");

    // Swallowed: Redis never sees the flush nor the failure's record; both time out.
    proxy.set(SWALLOW_REQUESTS);
    outcomes(&b, 2, 1).await;
    assert!(client.flush().await.is_err(), "the flush timed out");
    proxy.set(FORWARD);
    proxy.cut();
    outcomes(&b, 1, 0).await;
    let (counts, m) = flushed_counts(&client, &redis.url, &name).await;
    assert_eq!(counts, (12, 10, 2), "what Redis never saw is sent again and counted once: {m:?}");
    assert_eq!(refused_commands(&redis).await, Vec::<String>::new());
}
