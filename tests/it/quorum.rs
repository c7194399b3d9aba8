//! The quorum rule with separate `Client`s on one Redis (each client given its own reporter id
//! is one host to the fleet): one failing process opens for itself only; the quorum-th opens
//! the fleet once; reporters expire with the window and withdraw when they recover or shut
//! down; clients of one identity (a process restarted) are one reporter. The same with 8 OS
//! processes and a broken network path, and a process restarted: `tests/multi_process.rs`.

use crate::support::*;
use redis_breaker::{Client, ClientConfig, Config, Error, EventKind, State};
use std::collections::HashMap;
use std::time::Duration;

fn quorum(q: u32) -> redis_breaker::ConfigBuilder {
    Config::builder()
        .failure_threshold(2)
        .success_threshold(1)
        .quorum(q)
        .base_recovery(Duration::from_millis(300))
        .max_recovery(Duration::from_millis(300))
        .jitter(0.0)
}

/// `n` clients, each a host of its own to the quorum (reporter ids `host-0`, `host-1`, ...).
async fn clients(redis: &TestRedis, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(host(redis, &format!("host-{i}"), ClientConfig::DEFAULT_FLUSH_INTERVAL).await);
    }
    out
}

/// A client that is the host `id` to the quorum, its background flush every `flush_interval`
/// (otherwise as `support::client` with snapshots of 5s).
async fn host(redis: &TestRedis, id: &str, flush_interval: Duration) -> Client {
    let config = ClientConfig::builder()
        .reporter_id(id)
        .cache_ttl(Duration::from_secs(5))
        .subscribed_cache_ttl(Duration::from_secs(5))
        .flush_interval(flush_interval)
        .metrics_interval(flush_interval)
        .op_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    Client::connect_with(&redis.url, config).await.unwrap()
}

/// The reporters key's entries (not its bookkeeping member ' window', scored below 0).
async fn reporters(redis: &TestRedis, name: &str) -> HashMap<String, u64> {
    let mut conn = redis.conn().await;
    redis::cmd("ZRANGE")
        .arg(key(name, "reporters"))
        .arg(0)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_process_opens_for_itself_and_the_quorum_th_opens_the_fleet_once() {
    let redis = redis().await;
    let name = unique("quorum");
    let config = quorum(3).build().unwrap();
    let clients = clients(&redis, 4).await;
    let b: Vec<_> = clients.iter().map(|c| c.breaker(&name, config.clone()).unwrap()).collect();
    let mut events = b[0].subscribe();

    // Process 0 fails twice (its own threshold): it opens for itself only.
    fail(&b[0]).await.unwrap_err();
    fail(&b[0]).await.unwrap_err();
    match fail(&b[0]).await {
        Err(Error::Rejected(r)) => {
            assert!(r.own, "rejected by its own breaker: {r}");
            assert_eq!(r.state, State::Open);
            assert!(r.to_string().contains("in this process"), "{r}");
        }
        other => panic!("process 0 should reject its own calls, got {other:?}"),
    }
    let opened = loop {
        let e = tokio::time::timeout(Duration::from_secs(2), events.recv()).await.expect("an event").expect("open");
        if e.kind == EventKind::OwnOpen {
            break e;
        }
    };
    assert_eq!((opened.from, opened.to, opened.caused_here), (Some(State::Closed), State::Open, true));
    let health = b[0].health().await.unwrap();
    assert_eq!((health.quorum, health.own_state, health.reporting), (3, Some(State::Open), true));
    assert_eq!(health.snapshot.state, State::Closed, "the fleet stays closed");
    // The others are not held back, and the fleet is closed with one reporter: process 0.
    for other in &b[1..] {
        succeed(other).await.unwrap();
    }
    let status = b[1].status().await.unwrap();
    assert_eq!((status.state, status.epoch, status.quorum), (State::Closed, 0, 3));
    let ids: Vec<&str> = status.reporters.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [clients[0].reporter_id()]);
    assert!(status.ttl_ms.reporters.is_some_and(|t| t > 0 && t <= 60_000), "{:?}", status.ttl_ms);
    assert_eq!(b[1].health().await.unwrap().own_state, Some(State::Closed));

    // Process 1 is the second reporter: still below the quorum.
    fail(&b[1]).await.unwrap_err();
    fail(&b[1]).await.unwrap_err();
    assert_eq!(reporters(&redis, &name).await.len(), 2);
    assert_eq!(state_hash(&redis, &name).await["state"], "closed");
    succeed(&b[3]).await.unwrap();

    // The third opens the fleet: one epoch, one backoff draw, the reporters folded into it.
    fail(&b[2]).await.unwrap_err();
    fail(&b[2]).await.unwrap_err();
    let state = state_hash(&redis, &name).await;
    assert_eq!((state["state"].as_str(), state["epoch"].as_str(), state["trips"].as_str()), ("open", "1", "1"));
    assert_eq!(state["reason"], "failing processes 3 >= quorum 3");
    assert_eq!(state["quorum"], "3");
    assert!(reporters(&redis, &name).await.is_empty(), "the reporters fold into the fleet's trip");
    // Every process is now held by the fleet (once the trip's event reached it); process 0's
    // own breaker folded into it.
    let started = std::time::Instant::now();
    while b.iter().any(|breaker| breaker.state() != State::Open) {
        assert!(started.elapsed() < Duration::from_secs(10), "the trip never reached every process");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (i, breaker) in b.iter().enumerate() {
        match succeed(breaker).await {
            Err(Error::Rejected(r)) => assert!(!r.own, "process {i} is rejected by the fleet: {r}"),
            other => panic!("process {i}: expected a fleet rejection, got {other:?}"),
        }
    }
    let health = b[0].health().await.unwrap();
    assert_eq!((health.own_state, health.reporting), (Some(State::Closed), false));
    let history = b[0].history(5).await.unwrap();
    assert_eq!(history.len(), 1, "one transition: {history:?}");
    assert_eq!(history[0].origin, clients[2].id(), "caused by the quorum-th reporter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_process_withdraws_its_report_and_old_reports_do_not_count() {
    let redis = redis().await;
    let name = unique("quorum-recover");
    let config = quorum(2).build().unwrap();
    let clients = clients(&redis, 2).await;
    let b: Vec<_> = clients.iter().map(|c| c.breaker(&name, config.clone()).unwrap()).collect();

    fail(&b[0]).await.unwrap_err();
    fail(&b[0]).await.unwrap_err();
    assert_eq!(reporters(&redis, &name).await.keys().collect::<Vec<_>>(), [clients[0].reporter_id()]);
    // After its own backoff, its own probe succeeds: it closes and withdraws its report.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let permit = b[0].acquire().await.expect("its own probe");
    assert!(permit.is_probe());
    permit.success().await;
    assert_eq!(b[0].health().await.unwrap().own_state, Some(State::Closed));
    assert!(reporters(&redis, &name).await.is_empty(), "the report was withdrawn");
    // So one more failing process is the only reporter, below the quorum of 2.
    fail(&b[1]).await.unwrap_err();
    fail(&b[1]).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await["state"], "closed");

    // A process that reported 10 minutes ago does not count now (the window is 60s): the
    // fleet stays closed, and the old report is swept.
    let name = unique("quorum-old");
    let mut conn = redis.conn().await;
    let (now, _): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let ten_minutes_ago = now * 1000 - 600_000;
    let _: () = redis::cmd("ZADD")
        .arg(key(&name, "reporters"))
        .arg(ten_minutes_ago)
        .arg("gone-process")
        .query_async(&mut conn)
        .await
        .unwrap();
    let b0 = clients[0].breaker(&name, config.clone()).unwrap();
    fail(&b0).await.unwrap_err();
    fail(&b0).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await.get("state").map(String::as_str), Some("closed"));
    assert_eq!(reporters(&redis, &name).await.keys().collect::<Vec<_>>(), [clients[0].reporter_id()]);
    // A report within the window does count: a second process opens the fleet.
    let b1 = clients[1].breaker(&name, config).unwrap();
    fail(&b1).await.unwrap_err();
    fail(&b1).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await["state"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_one_is_todays_shared_rule() {
    let redis = redis().await;
    let name = unique("quorum-one");
    let config = quorum(1).build().unwrap();
    let clients = clients(&redis, 2).await;
    let b: Vec<_> = clients.iter().map(|c| c.breaker(&name, config.clone()).unwrap()).collect();
    // Failures of two processes add up: the fleet opens on the second.
    fail(&b[0]).await.unwrap_err();
    fail(&b[1]).await.unwrap_err();
    let state = state_hash(&redis, &name).await;
    assert_eq!(state["state"], "open");
    assert!(!state.contains_key("quorum"), "no quorum field without a quorum");
    assert!(reporters(&redis, &name).await.is_empty());
    let health = b[0].health().await.unwrap();
    assert_eq!((health.quorum, health.own_state, health.reporting), (1, None, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reset_clears_the_reporters() {
    let redis = redis().await;
    let name = unique("quorum-reset");
    let clients = clients(&redis, 1).await;
    let b = clients[0].breaker(&name, quorum(3).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(reporters(&redis, &name).await.len(), 1);
    b.reset().await.unwrap();
    assert!(reporters(&redis, &name).await.is_empty());
    // Every operator's command folds the reports: a process that reported before a forced
    // state does not count afterwards.
    let name = unique("quorum-forced");
    let b = clients[0].breaker(&name, quorum(3).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(reporters(&redis, &name).await.len(), 1);
    b.force_open(Some(Duration::from_secs(60))).await.unwrap();
    assert!(reporters(&redis, &name).await.is_empty());
}

/// Redis commands (all of them, those scripts run included; not INFO, nor the event
/// subscription's keepalive PING, which runs on its own clock) that `f` costs.
async fn commands<F: std::future::Future<Output = ()>>(redis: &TestRedis, f: F) -> u64 {
    let total = |s: &std::collections::BTreeMap<String, u64>| {
        s.iter().filter(|(c, _)| *c != "info" && *c != "ping").map(|(_, n)| n).sum::<u64>()
    };
    let before = total(&redis.commandstats().await);
    f.await;
    total(&redis.commandstats().await) - before
}

/// A quorum adds nothing to the healthy path and nothing to a failure's round trip: healthy
/// calls cost the same commands with quorum 3 as with 1 (batched, one flush), a failure below
/// its own threshold no more, and the failure that opens a process's own breaker carries its
/// report in the same script call. Prints the figures (`-- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_costs_nothing_on_the_healthy_path_and_no_round_trip_per_failure() {
    let redis = private_redis().await;
    let client = client_flushing_every(&redis, Duration::from_secs(60), Duration::from_secs(600)).await;
    let mut figures = Vec::new();
    for q in [1, 3] {
        // (a window of 2h: the background flush, every 10m here, must fit ten times in it)
        let config = quorum(q).failure_threshold(3).window(Duration::from_secs(7200)).build().unwrap();
        let b = client.breaker(&unique("quorum-cost"), config).unwrap();
        succeed(&b).await.unwrap();
        client.flush().await.unwrap();
        let healthy = commands(&redis, async {
            for _ in 0..1000 {
                succeed(&b).await.unwrap();
            }
            client.flush().await.unwrap();
        })
        .await;
        let scripts_before = redis.script_calls().await;
        let failure = commands(&redis, async { assert!(fail(&b).await.is_err()) }).await;
        let _ = commands(&redis, async { assert!(fail(&b).await.is_err()) }).await;
        let opening = commands(&redis, async { assert!(fail(&b).await.is_err()) }).await;
        assert_eq!(redis.script_calls().await - scripts_before, 3, "one script call per failure");
        figures.push((q, healthy, failure, opening));
    }
    let [(_, healthy_1, failure_1, opening_1), (_, healthy_3, failure_3, opening_3)] = figures[..] else {
        unreachable!()
    };
    assert_eq!(healthy_3, healthy_1, "1000 healthy calls and a flush");
    assert!(failure_3 <= failure_1, "a failure below the threshold: {failure_3} vs {failure_1}");
    eprintln!(
        "commands: 1000 healthy calls + flush {healthy_1} (quorum 1) / {healthy_3} (quorum 3); a failure {failure_1} / {failure_3}; \
         the failure that opens (quorum 1: the fleet; quorum 3: the process itself, with its report) {opening_1} / {opening_3}"
    );
}

/// With a quorum fraction, the processes that recorded calls within the window set how many
/// reports open the fleet: 0.5 of four active processes is two, though `quorum` is 1. (A
/// fraction is decided once the processes key has collected for a fifth of the window.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_fraction_scales_with_the_active_processes() {
    let redis = redis().await;
    let name = unique("quorum-fraction");
    let config = quorum(1).quorum_fraction(0.5).window(Duration::from_secs(1)).build().unwrap();
    let (clients, b) = active_hosts(&redis, &name, &config).await;
    assert_eq!(b[0].status().await.unwrap().processes, 4);
    // One failing process of four: it opens for itself only (1 < ceil(0.5 * 4)).
    fail(&b[0]).await.unwrap_err();
    fail(&b[0]).await.unwrap_err();
    let third = succeed(&b[0]).await;
    assert!(matches!(third, Err(Error::Rejected(r)) if r.own), "{third:?} {:?}", state_hash(&redis, &name).await);
    assert_eq!(state_hash(&redis, &name).await["state"], "closed");
    // The second of four is half: the fleet opens.
    fail(&b[1]).await.unwrap_err();
    fail(&b[1]).await.unwrap_err();
    let state = state_hash(&redis, &name).await;
    assert_eq!((state["state"].as_str(), state["reason"].as_str()), ("open", "failing processes 2 >= quorum 2"));
    assert_eq!(state["quorum"], "1:0.5");
    let status = b[0].status().await.unwrap();
    assert_eq!((status.quorum, status.quorum_fraction), (1, Some(0.5)), "{status:?}");
    drop(clients);
}

/// Four hosts (flushing every 100ms) whose breaker `name` made a call and said it is active,
/// a fifth of the window (1s) ago: the processes key knows them.
async fn active_hosts(redis: &TestRedis, name: &str, config: &Config) -> (Vec<Client>, Vec<redis_breaker::Breaker>) {
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(host(redis, &format!("host-{i}"), Duration::from_millis(100)).await);
    }
    let b: Vec<_> = clients.iter().map(|c| c.breaker(name, config.clone()).unwrap()).collect();
    for (breaker, client) in b.iter().zip(&clients) {
        succeed(breaker).await.unwrap();
        client.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    (clients, b)
}

/// This process's own breaker backs off and probes on the client's clock, with the same
/// recovery rules as the shared one: rejected for `base_recovery` with the time left, then one
/// own probe whose success closes it (on a fake clock, in memory: a fleet of one process
/// below a quorum of 3).
#[tokio::test]
async fn the_own_breaker_backs_off_and_probes_on_the_clients_clock() {
    let clock = redis_breaker::FakeClock::new(1_000_000);
    let client = Client::in_memory_with_clock(clock.clone());
    let config =
        quorum(3).base_recovery(Duration::from_secs(30)).max_recovery(Duration::from_secs(30)).build().unwrap();
    let b = client.breaker("own", config).unwrap();
    let mut events = b.subscribe();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    match succeed(&b).await {
        Err(Error::Rejected(r)) => {
            assert!(r.own);
            assert_eq!(r.retry_after(), Some(Duration::from_secs(30)));
        }
        other => panic!("expected its own rejection, got {other:?}"),
    }
    clock.advance(Duration::from_secs(29));
    assert!(
        matches!(succeed(&b).await, Err(Error::Rejected(r)) if r.own && r.retry_after() == Some(Duration::from_secs(1)))
    );
    clock.advance(Duration::from_secs(1));
    let probe = b.acquire().await.expect("its own probe");
    assert!(probe.is_probe());
    // While its probe is out, it rejects its other calls (one probe at a time).
    assert!(matches!(b.acquire().await, Err(r) if r.own && r.state == State::HalfOpen));
    probe.success().await;
    succeed(&b).await.unwrap();
    let health = b.health().await.unwrap();
    assert_eq!(
        (health.own_state, health.reporting, health.snapshot.state),
        (Some(State::Closed), false, State::Closed)
    );
    let mut kinds = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
        kinds.push((e.kind, e.from, e.to));
    }
    assert_eq!(
        kinds,
        [
            (EventKind::OwnOpen, Some(State::Closed), State::Open),
            (EventKind::OwnHalfOpen, Some(State::Open), State::HalfOpen),
            (EventKind::OwnClosed, Some(State::HalfOpen), State::Closed),
        ],
        "its own transitions, and no fleet transition"
    );
}

/// With a quorum fraction, a process with calls to report says it is active about ten times
/// per window through its background flush, though its metrics wait `metrics_interval` (30s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_says_it_is_active_within_a_tenth_of_the_window() {
    let redis = redis().await;
    let config = ClientConfig::builder()
        .flush_interval(Duration::from_millis(50))
        .metrics_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("quorum-active");
    let config = quorum(2).quorum_fraction(0.5).window(Duration::from_secs(2)).build().unwrap();
    let b = client.breaker(&name, config).unwrap();
    let mut conn = redis.conn().await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        succeed(&b).await.unwrap();
        let started = std::time::Instant::now();
        let at = loop {
            let at: Option<u64> = redis::cmd("ZSCORE")
                .arg(key(&name, "processes"))
                .arg(client.reporter_id())
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(at) = at.filter(|at| !seen.contains(at)) {
                break at;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "not said active before metrics_interval (30s)");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        seen.push(at);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(seen[1] >= seen[0] + 200, "said again a tenth of the window later: {seen:?}");
}

/// A report made while Redis is down (the degraded mode decides the calls) waits in the process
/// and reaches the reporters key once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_made_while_redis_is_down_reaches_it_when_it_is_back() {
    let mut redis = private_redis().await;
    let config = ClientConfig::builder()
        .op_timeout(Duration::from_millis(100))
        .cache_ttl(Duration::from_millis(50))
        .subscribed_cache_ttl(Duration::from_millis(50))
        .flush_interval(Duration::from_millis(50))
        .store_failure_threshold(1)
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("quorum-outage");
    let b = client.breaker(&name, quorum(3).build().unwrap()).unwrap();
    succeed(&b).await.unwrap();
    client.flush().await.unwrap();

    redis.kill();
    let start = std::time::Instant::now();
    while client.store_status() != redis_breaker::StoreStatus::RedisDown {
        assert!(start.elapsed() < Duration::from_secs(10), "the client never saw Redis down");
        let _ = b.health().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(fail(&b).await, Err(Error::Inner(_))), "served while Redis is down");
    assert!(matches!(fail(&b).await, Err(Error::Inner(_))), "served while Redis is down");
    assert!(matches!(succeed(&b).await, Err(Error::Rejected(r)) if r.own), "its own breaker opened");
    assert!(b.health().await.unwrap().reporting);

    redis.restart(); // empty
    let start = std::time::Instant::now();
    loop {
        if reporters(&redis, &name).await.contains_key(client.reporter_id()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the report never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The window of the tests of a process that stays open for itself.
const WINDOW: Duration = Duration::from_secs(1);

/// A quorum of 2 over `WINDOW` whose own breaker backs off for 60s: a process stays open for
/// itself for many windows.
fn long_own_backoff() -> Config {
    quorum(2)
        .window(WINDOW)
        .base_recovery(Duration::from_secs(60))
        .max_recovery(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A client that is the host `id` to the quorum, whose background flush (the repeats of its
/// reports) runs every 50ms.
async fn flushing_often(redis: &TestRedis, id: &str) -> Client {
    let config = ClientConfig::builder().reporter_id(id).flush_interval(Duration::from_millis(50)).build().unwrap();
    Client::connect_with(&redis.url, config).await.unwrap()
}

/// A process open for itself may wait longer than a window for its next own probe (its backoff
/// grows to `max_recovery`): it says its report again every quarter window, so it counts for as
/// long as it stays open; a process that went away stops counting once its last report is a
/// window old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_open_for_itself_keeps_counting_and_a_gone_one_stops() {
    let redis = redis().await;
    let (window, config) = (WINDOW, long_own_backoff());
    let connect = |id| flushing_often(&redis, id);

    // Process a opens for itself, then makes no call for three windows (its backoff is 60s).
    let name = unique("quorum-stays-open");
    let a = connect("host-a").await;
    let ba = a.breaker(&name, config.clone()).unwrap();
    fail(&ba).await.unwrap_err();
    fail(&ba).await.unwrap_err();
    let first = reporters(&redis, &name).await[a.reporter_id()];
    tokio::time::sleep(window * 3).await;
    let last = reporters(&redis, &name).await.get(a.reporter_id()).copied();
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut redis.conn().await).await.unwrap();
    let now = s * 1000 + us / 1000;
    let last = last.unwrap_or_else(|| panic!("process a is still open for itself but no longer a reporter"));
    assert!(last > first && now - last < 1000, "said again within the window: first {first}, last {last}, now {now}");
    assert!(ba.health().await.unwrap().reporting);
    // So a second failing process makes the quorum of 2 three windows after the first report.
    let b = connect("host-b").await;
    let bb = b.breaker(&name, config.clone()).unwrap();
    fail(&bb).await.unwrap_err();
    fail(&bb).await.unwrap_err();
    let state = state_hash(&redis, &name).await;
    assert_eq!(state["state"], "open", "{state:?}");
    assert!(state["reason"].contains("failing processes 2 >= quorum 2"), "{state:?}");

    // Process c opens for itself and goes away: a window later it no longer counts.
    let name = unique("quorum-gone");
    let c = connect("host-c").await;
    let bc = c.breaker(&name, config.clone()).unwrap();
    fail(&bc).await.unwrap_err();
    fail(&bc).await.unwrap_err();
    let gone = c.reporter_id().to_string();
    drop(bc);
    drop(c);
    tokio::time::sleep(window + Duration::from_millis(300)).await;
    let bb = b.breaker(&name, config).unwrap();
    fail(&bb).await.unwrap_err();
    fail(&bb).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await["state"], "closed", "a gone process's report counted");
    let left = reporters(&redis, &name).await;
    assert!(!left.contains_key(&gone) && left.contains_key(b.reporter_id()), "the gone report was swept: {left:?}");
}

/// A process open for itself that makes no more calls (drained by its load balancer, a queue
/// worker with nothing to do) folds into the fleet's trip when it hears of it, and does not
/// vote again once the fleet is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_no_calls_folds_into_the_fleets_trip_and_votes_no_more() {
    let redis = redis().await;
    let (window, config) = (WINDOW, long_own_backoff());
    let (a, b) = (flushing_often(&redis, "host-a").await, flushing_often(&redis, "host-b").await);
    let name = unique("quorum-idle");
    let ba = a.breaker(&name, config.clone()).unwrap();
    let mut events = ba.subscribe();
    fail(&ba).await.unwrap_err();
    fail(&ba).await.unwrap_err();
    let bb = b.breaker(&name, config).unwrap();
    let mut b_events = bb.subscribe();
    fail(&bb).await.unwrap_err();
    fail(&bb).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await["state"], "open", "the quorum of 2 opened the fleet");

    // Neither process makes another call: each folds when it hears of the trip (process a by
    // the event, process b by its own trip's reply).
    for (process, events) in [("a", &mut events), ("b", &mut b_events)] {
        let folded = async {
            loop {
                let e = events.recv().await.expect("events");
                if e.kind == EventKind::OwnClosed {
                    break e.reason;
                }
            }
        };
        let reason = tokio::time::timeout(Duration::from_secs(5), folded)
            .await
            .unwrap_or_else(|_| panic!("process {process} never folded"));
        assert!(reason.contains("folded"), "{reason}");
    }

    // An operator closes the fleet; process a, still idle, does not report itself again.
    bb.reset().await.unwrap();
    tokio::time::sleep(window * 2).await;
    let left = reporters(&redis, &name).await;
    assert!(
        left.is_empty(),
        "an idle process voted after the fleet closed: {left:?} (a {}, b {})",
        a.reporter_id(),
        b.reporter_id()
    );
    assert_eq!(state_hash(&redis, &name).await["state"], "closed");
}

/// One host is one reporter across restarts (issue 22, 1): a failing process that restarts
/// (a crash loop: each run a new `Client` with the default config, dropped without
/// `shutdown`) reports under the same identity, the host's name, so `quorum` restarts within
/// one window leave the fleet closed with one reporter. Each run still has its own client id
/// (the events it causes name it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_restarted_quorum_times_within_a_window_is_one_reporter_and_the_fleet_stays_closed() {
    let redis = redis().await;
    let name = unique("quorum-restarts");
    let config = quorum(3).base_recovery(Duration::from_secs(300)).max_recovery(Duration::from_secs(300)).build();
    let config = config.unwrap();
    let (mut ids, mut identities) = (Vec::new(), Vec::new());
    for run in 0..3 {
        let process = client(&redis, Duration::from_secs(5)).await;
        let b = process.breaker(&name, config.clone()).unwrap();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        let own = succeed(&b).await;
        assert!(matches!(own, Err(Error::Rejected(ref r)) if r.own), "run {run} is not open for itself: {own:?}");
        ids.push(process.id().to_string());
        identities.push(process.reporter_id().to_string());
        drop(b);
        drop(process); // a crash: no shutdown
    }
    let state = state_hash(&redis, &name).await;
    assert_eq!(
        state.get("state").map(String::as_str),
        Some("closed"),
        "3 runs of one host opened the fleet: {state:?}"
    );
    let left = reporters(&redis, &name).await;
    assert_eq!(left.keys().collect::<Vec<_>>(), [&identities[0]], "one reporter: {left:?}");
    assert!(identities.iter().all(|id| *id == identities[0]), "one identity across runs: {identities:?}");
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "each run has its own client id: {ids:?}");
    // Two other failing hosts make the quorum of 3 with it.
    for host_id in ["other-host-1", "other-host-2"] {
        let other = host(&redis, host_id, ClientConfig::DEFAULT_FLUSH_INTERVAL).await;
        let b = other.breaker(&name, config.clone()).unwrap();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
    }
    let state = state_hash(&redis, &name).await;
    assert_eq!((state["state"].as_str(), state["reason"].as_str()), ("open", "failing processes 3 >= quorum 3"));
}

/// `Client::shutdown` withdraws this process's reports from every breaker it reported to
/// before it returns (issue 22, 1): a process that leaves no longer counts toward a quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_withdraws_the_processs_reports_from_every_breaker() {
    let redis = redis().await;
    let names = [unique("quorum-leave-a"), unique("quorum-leave-b")];
    let config = quorum(2).base_recovery(Duration::from_secs(300)).max_recovery(Duration::from_secs(300)).build();
    let config = config.unwrap();
    let leaving = host(&redis, "leaving-host", ClientConfig::DEFAULT_FLUSH_INTERVAL).await;
    let healthy = leaving.breaker(&unique("quorum-leave-healthy"), config.clone()).unwrap();
    succeed(&healthy).await.unwrap();
    for name in &names {
        let b = leaving.breaker(name, config.clone()).unwrap();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(reporters(&redis, name).await.keys().collect::<Vec<_>>(), ["leaving-host"]);
    }
    leaving.shutdown().await.unwrap();
    for name in &names {
        assert!(reporters(&redis, name).await.is_empty(), "{name}: the report outlived shutdown()");
    }
    // It no longer counts: another failing host is alone, below the quorum of 2.
    let other = host(&redis, "other-host", ClientConfig::DEFAULT_FLUSH_INTERVAL).await;
    let b = other.breaker(&names[0], config).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(state_hash(&redis, &names[0]).await["state"], "closed");
    // Nor does the leaving process say it again while it lives on (its repeats stop).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reporters(&redis, &names[1]).await.len(), 0);
}

/// A breaker whose own breaker is open stays in the client's registry when no handle holds it
/// (issue 22, 4): named again, it still rejects its own calls for the rest of its own backoff
/// (300s) instead of starting closed and calling the broken downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_open_for_itself_is_not_evicted_and_named_again_still_rejects() {
    let redis = redis().await;
    let config = ClientConfig::builder()
        .reporter_id("evicting-host")
        .cache_ttl(Duration::from_millis(20))
        .subscribed_cache_ttl(Duration::from_millis(20))
        .flush_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("quorum-evict");
    let open_for_itself =
        quorum(2).base_recovery(Duration::from_secs(300)).max_recovery(Duration::from_secs(300)).build().unwrap();
    let b = client.breaker(&name, open_for_itself.clone()).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    drop(b);
    // A breaker nobody holds whose snapshot expired leaves within a flush round or two; one
    // that is closed for itself does (the eviction works), the one open for itself must not.
    let closed = unique("quorum-evict-closed");
    drop(client.breaker(&closed, open_for_itself.clone()).unwrap());
    let start = std::time::Instant::now();
    while client.local_breakers().contains(&closed) {
        assert!(start.elapsed() < Duration::from_secs(5), "an idle breaker was never evicted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(client.local_breakers().contains(&name), "evicted while open for itself: {:?}", client.local_breakers());
    let b = client.breaker(&name, open_for_itself).unwrap();
    let called = std::sync::atomic::AtomicBool::new(false);
    let result = b
        .execute(|| async {
            called.store(true, std::sync::atomic::Ordering::SeqCst);
            Err::<(), _>("still down")
        })
        .await;
    assert!(matches!(result, Err(Error::Rejected(r)) if r.own), "{result:?}");
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst), "the downstream was called during the own backoff");
    assert_eq!(b.health().await.unwrap().own_state, Some(State::Open));
}

/// `Client::flush` sends a report that waits in the process though nothing else is pending
/// (issue 22, 11): here the repeat of a process open for itself, which failed to reach a Redis
/// that went down and came back empty. `flush()` (and `shutdown()`, and the flush when Redis
/// answers again) used to pick only breakers with pending counts, leaving the report to a
/// later background flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_a_waiting_report_though_nothing_else_is_pending() {
    let mut redis = private_redis().await;
    let config = ClientConfig::builder()
        .reporter_id("waiting-host")
        .op_timeout(Duration::from_millis(100))
        .flush_interval(Duration::from_millis(100))
        .store_failure_threshold(1)
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("quorum-waiting");
    let b = client.breaker(&name, long_own_backoff()).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(reporters(&redis, &name).await.keys().collect::<Vec<_>>(), ["waiting-host"]);
    // Redis goes: the repeat of the report (every quarter window, 250ms) fails to reach it, and
    // waits; no call is made, so nothing else is pending.
    redis.kill();
    let start = std::time::Instant::now();
    while client.store_status() != redis_breaker::StoreStatus::RedisDown {
        assert!(start.elapsed() < Duration::from_secs(5), "the repeat never found redis down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.restart(); // empty
    // (The first command after the restart may meet the dropped connection.)
    let start = std::time::Instant::now();
    while let Err(e) = client.flush().await {
        assert!(start.elapsed() < Duration::from_secs(3), "no flush reached the restarted redis: {e}");
    }
    assert_eq!(
        reporters(&redis, &name).await.keys().collect::<Vec<_>>(),
        ["waiting-host"],
        "flush() left the waiting report behind"
    );
}

/// Issue 22, 11: with `quorum_fraction` and a quorum of 1, a Redis that lost the processes key
/// (a restart, a failover to a replica that lacked it) must not let one failing process of
/// four open the fleet: the fraction is of the processes active within the window, which the
/// key no longer knows. A report then waits until the key has collected for a fifth of the
/// window; after that the fraction decides again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_processes_key_does_not_let_one_process_meet_a_fraction() {
    let redis = redis().await;
    let name = unique("quorum-fraction-lost");
    let config = quorum(1).quorum_fraction(0.5).window(Duration::from_secs(1)).build().unwrap();
    let (clients, b) = active_hosts(&redis, &name, &config).await;
    assert_eq!(b[0].status().await.unwrap().processes, 4);
    let _: () = redis::cmd("DEL").arg(key(&name, "processes")).query_async(&mut redis.conn().await).await.unwrap();
    fail(&b[0]).await.unwrap_err();
    fail(&b[0]).await.unwrap_err();
    let state = state_hash(&redis, &name).await;
    let state = state.get("state").map(String::as_str);
    assert_eq!(state, Some("closed"), "one process of four opened the fleet");
    assert_eq!(reporters(&redis, &name).await.len(), 1, "its report waits");
    // The healthy processes say again that they are active; a fifth of the window later the
    // second failing process of four is half of them.
    for (breaker, client) in b[1..].iter().zip(&clients[1..]) {
        succeed(breaker).await.unwrap();
        client.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    fail(&b[1]).await.unwrap_err();
    fail(&b[1]).await.unwrap_err();
    let state = state_hash(&redis, &name).await;
    assert_eq!((state["state"].as_str(), state["reason"].as_str()), ("open", "failing processes 2 >= quorum 2"));
}

/// Issue 22, 11: a process whose `window` is shorter (a rolling deploy changing it) must not
/// sweep the reports of processes with a longer one while those still count for them.
/// The reporters key remembers the longest window of its writers, and nobody sweeps younger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_window_does_not_sweep_the_reports_of_a_longer_one() {
    let redis = redis().await;
    let name = unique("quorum-windows");
    let open_for = |window| {
        quorum(3)
            .window(window)
            .base_recovery(Duration::from_secs(300))
            .max_recovery(Duration::from_secs(300))
            .build()
            .unwrap()
    };
    let (long, short) = (open_for(Duration::from_secs(60)), open_for(Duration::from_secs(1)));
    let a = host(&redis, "host-a", ClientConfig::DEFAULT_FLUSH_INTERVAL).await;
    let ba = a.breaker(&name, long.clone()).unwrap();
    fail(&ba).await.unwrap_err();
    fail(&ba).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Host b, on a 1s window, reports: host a's report (1.2s old) no longer counts for b, but
    // still does for a process with a 60s window.
    let b = host(&redis, "host-b", Duration::from_millis(100)).await;
    let bb = b.breaker(&name, short).unwrap();
    fail(&bb).await.unwrap_err();
    fail(&bb).await.unwrap_err();
    let c = host(&redis, "host-c", ClientConfig::DEFAULT_FLUSH_INTERVAL).await;
    let bc = c.breaker(&name, long).unwrap();
    fail(&bc).await.unwrap_err();
    fail(&bc).await.unwrap_err();
    let state = state_hash(&redis, &name).await;
    assert_eq!(state.get("state").map(String::as_str), Some("open"), "hosts a, b and c reported within c's window");
}

/// What a quorum means for probes (issue 22, 11): the quorum decides when the fleet opens; its
/// half-open probes are the fleet's, as without a quorum. Any process may take one, one whose
/// own calls failed included (its own breaker folded into the fleet's trip), and a failed probe
/// reopens the fleet with the next backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_quorum_any_process_may_take_the_fleets_probe_and_a_failed_one_reopens_it() {
    let redis = redis().await;
    let name = unique("quorum-probe");
    let config = quorum(2).build().unwrap(); // backoff 300ms
    let (a, b) = (
        host(&redis, "host-a", ClientConfig::DEFAULT_FLUSH_INTERVAL).await,
        host(&redis, "host-b", ClientConfig::DEFAULT_FLUSH_INTERVAL).await,
    );
    let (ba, bb) = (a.breaker(&name, config.clone()).unwrap(), b.breaker(&name, config).unwrap());
    for breaker in [&ba, &bb] {
        fail(breaker).await.unwrap_err();
        fail(breaker).await.unwrap_err();
    }
    assert_eq!(state_hash(&redis, &name).await["trips"], "1", "the quorum of 2 opened the fleet");
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Host a, whose own calls failed, calls first: it takes the fleet's probe, which fails.
    let probe = ba.acquire().await.expect("the fleet's probe");
    assert!(probe.is_probe());
    probe.failure().await;
    let state = state_hash(&redis, &name).await;
    assert_eq!((state["state"].as_str(), state["trips"].as_str()), ("open", "2"), "{state:?}");
}
