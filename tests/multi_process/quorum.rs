//! The quorum scenarios of `multi_process.rs`: a loopback TCP downstream, a loopback proxy to it
//! that stops forwarding (one process's broken network path), the workers' `downstream`,
//! `crash` and `leave` commands, and the three scenarios.

use super::{Fleet, PROCESSES, Worker, field, ready_then_wait, support, unix_micros};
use redis_breaker::{Client, Config, Error};
use std::time::{Duration, Instant};

/// A worker's `downstream NAME ADDR QUORUM MILLIS GAP GO` (`args` in that order).
pub async fn calls(client: &Client, control: &mut redis::aio::MultiplexedConnection, args: [&str; 6]) -> String {
    let [name, addr, quorum, millis, gap, go] = args;
    // Calls a loopback TCP downstream at `addr` (ping, pong) for `millis`, one
    // every `gap` ms, under a quorum; counts how each call ended, and when the
    // fleet first rejected one.
    let config = Config::builder()
        .failure_threshold(3)
        .success_threshold(1)
        .quorum(quorum.parse().unwrap())
        .call_timeout(Duration::from_millis(150))
        .probe_lease(Duration::from_millis(200))
        .base_recovery(Duration::from_secs(30))
        .max_recovery(Duration::from_secs(30))
        .jitter(0.0)
        .build()
        .unwrap();
    let b = client.breaker(name, config).unwrap();
    ready_then_wait(control, go).await;
    let until = Instant::now() + Duration::from_millis(millis.parse().unwrap());
    let gap = Duration::from_millis(gap.parse().unwrap());
    let (mut ok, mut failed, mut own, mut fleet, mut first_fleet_us) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while Instant::now() < until {
        match b.execute(|| ping(addr)).await {
            Ok(()) => ok += 1,
            Err(Error::Rejected(r)) if r.own => own += 1,
            Err(Error::Rejected(_)) => {
                if fleet == 0 {
                    first_fleet_us = unix_micros();
                }
                fleet += 1;
            }
            Err(_) => failed += 1,
        }
        tokio::time::sleep(gap).await;
    }
    client.flush().await.unwrap();
    format!("ok={ok} failed={failed} own={own} fleet={fleet} first_fleet_us={first_fleet_us}")
}

/// One call of the loopback downstream: connect, send `ping`, read `pong`.
pub async fn ping(addr: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"ping\n").await?;
    let mut answer = [0u8; 5];
    conn.read_exact(&mut answer).await?;
    if &answer == b"pong\n" { Ok(()) } else { Err(std::io::Error::other("not a pong")) }
}

/// The downstream of the quorum scenarios, on loopback: answers `pong` to each `ping`; and a
/// loopback proxy to it that stops forwarding (a broken network path: connections are taken
/// and never answered). Answers both addresses.
fn downstream(rt: &tokio::runtime::Runtime) -> (String, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    rt.block_on(async {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((conn, _)) = server.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = conn.into_split();
                    let mut line = String::new();
                    if tokio::io::BufReader::new(read).read_line(&mut line).await.is_ok() && line == "ping\n" {
                        let _ = write.write_all(b"pong\n").await;
                    }
                });
            }
        });
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap().to_string();
        let forward = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let forwarding = forward.clone();
        let upstream = addr.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = proxy.accept().await {
                let (forward, upstream) = (forwarding.load(std::sync::atomic::Ordering::Relaxed), upstream.clone());
                tokio::spawn(async move {
                    if forward {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                        }
                    } else {
                        let mut sink = [0u8; 64];
                        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                });
            }
        });
        // Through the proxy the downstream answers; then the path breaks.
        ping(&proxy_addr).await.expect("the proxy forwards");
        forward.store(false, std::sync::atomic::Ordering::Relaxed);
        (addr, proxy_addr)
    })
}

/// What a breaker's keys say after a quorum round: its state hash, metrics and reporters.
fn quorum_keys(
    rt: &tokio::runtime::Runtime,
    redis: &support::TestRedis,
    name: &str,
) -> (std::collections::HashMap<String, String>, std::collections::HashMap<String, u64>, u64) {
    rt.block_on(async {
        let mut conn = redis.conn().await;
        let key = |s: &str| format!("breaker:{{{name}}}:{s}");
        redis::pipe()
            .hgetall(key("state"))
            .hgetall(key("metrics"))
            .zcount(key("reporters"), 0, "+inf")
            .query_async(&mut conn)
            .await
            .unwrap()
    })
}

/// One round: every process calls the downstream under `quorum` for 1.5s, one call every
/// `gap_ms`, the first `failing` of them through the broken path; answers what each counted.
fn round(
    rt: &tokio::runtime::Runtime,
    fleet: &mut Fleet,
    name: &str,
    (direct, broken): (&str, &str),
    failing: usize,
    quorum: u32,
    gap_ms: u32,
) -> Vec<String> {
    rt.block_on(fleet.round(0..PROCESSES, |i, go| {
        let addr = if i < failing { broken } else { direct };
        format!("downstream {name} {addr} {quorum} 1500 {gap_ms} {go}")
    }))
}

pub fn one_bad_node(rt: &tokio::runtime::Runtime, redis: &support::TestRedis, fleet: &mut Fleet) -> String {
    let (direct, broken) = downstream(rt);
    let mut figures = Vec::new();
    for quorum in [3, 1] {
        let name = support::unique("mp-bad-node");
        let answers = round(rt, fleet, &name, (&direct, &broken), 1, quorum, 5);
        let (state, metrics, reporters) = quorum_keys(rt, redis, &name);
        let healthy_ok: u64 = answers[1..].iter().map(|a| field(a, "ok")).sum();
        let healthy_calls: u64 = answers[1..]
            .iter()
            .map(|a| field(a, "ok") + field(a, "failed") + field(a, "own") + field(a, "fleet"))
            .sum();
        let bad = &answers[0];
        if quorum == 3 {
            // Process 0 opened for itself after its threshold; the fleet never tripped, and the
            // seven healthy processes ran every call.
            assert_eq!(state["state"], "closed", "{state:?}");
            assert_eq!(metrics.get("opened"), None, "the fleet never opened: {metrics:?}");
            assert_eq!((field(bad, "failed"), field(bad, "fleet")), (3, 0), "process 0: {bad}");
            assert!(field(bad, "own") > 0, "process 0 rejects its own calls: {bad}");
            assert_eq!(reporters, 1, "process 0 is the one reporter");
            for a in &answers[1..] {
                assert_eq!((field(a, "failed"), field(a, "own"), field(a, "fleet")), (0, 0, 0), "{a}");
            }
            assert_eq!(healthy_ok, healthy_calls);
        } else {
            // Today's shared rule: process 0's failures alone open the breaker for everyone.
            assert_eq!(state["state"], "open", "{state:?}");
            assert!(answers[1..].iter().map(|a| field(a, "fleet")).sum::<u64>() > 0, "{answers:?}");
        }
        figures.push(format!(
            "quorum {quorum}: the 7 healthy processes ran {healthy_ok} of {healthy_calls} calls ({:.1}%), process 0 {}",
            100.0 * healthy_ok as f64 / healthy_calls.max(1) as f64,
            bad
        ));
    }
    format!("[{}]", figures.join("; "))
}

pub fn of_three(rt: &tokio::runtime::Runtime, redis: &support::TestRedis, fleet: &mut Fleet) -> String {
    let (direct, broken) = downstream(rt);
    let mut latencies: Vec<u64> = Vec::new();
    let rounds = 4;
    for _ in 0..rounds {
        let name = support::unique("mp-quorum");
        let answers = round(rt, fleet, &name, (&direct, &broken), 3, 3, 2);
        let (state, metrics, reporters) = quorum_keys(rt, redis, &name);
        assert_eq!(state["state"], "open", "{state:?} {answers:?}");
        assert_eq!((state["epoch"].as_str(), state["trips"].as_str()), ("1", "1"), "one trip, one epoch: {state:?}");
        assert_eq!(state["reason"], "failing processes 3 >= quorum 3");
        assert_eq!(metrics["opened"], 1);
        assert_eq!(reporters, 0, "the reporters folded into the trip");
        // From the quorum-th report (the trip, on Redis's clock) to each healthy process's first
        // rejection by the fleet.
        let tripped_us = state["changed_at"].parse::<u64>().unwrap() * 1000;
        for a in &answers[3..] {
            assert!(field(a, "fleet") > 0, "a healthy process is held by the fleet: {a}");
            latencies.push(field(a, "first_fleet_us").saturating_sub(tripped_us));
        }
    }
    // Two failing processes stay below the quorum: no trip.
    let name = support::unique("mp-quorum-two");
    let answers = round(rt, fleet, &name, (&direct, &broken), 2, 3, 5);
    let (state, metrics, reporters) = quorum_keys(rt, redis, &name);
    assert_eq!(state["state"], "closed", "{state:?}");
    assert_eq!(metrics.get("opened"), None);
    assert_eq!(reporters, 2);
    for a in &answers[2..] {
        assert_eq!((field(a, "failed"), field(a, "own"), field(a, "fleet")), (0, 0, 0), "{a}");
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "[3 of 8 failing: 1 trip per round ({rounds} rounds); quorum-th report to a fleet rejection in the 5 healthy processes: p50 {}µs, p99 {}µs over {} samples (calls 2ms apart); 2 of 8 failing: no trip]",
        pct(0.5),
        pct(0.99),
        latencies.len()
    )
}

/// The config of the restart scenario: a quorum of 3; a process opens for itself at its second
/// failure and backs off for 300s.
fn restarting() -> Config {
    Config::builder()
        .failure_threshold(2)
        .quorum(3)
        .base_recovery(Duration::from_secs(300))
        .max_recovery(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// A worker's `crash NAME` and `leave NAME`: fails twice (its own breaker opens and reports),
/// checks that its next call is rejected by its own breaker, answers its client id and
/// identity, then exits: `crash` at once (no shutdown, as a crash), `leave` after
/// `Client::shutdown`.
pub async fn open_for_itself_then_exit(client: &Client, name: &str, how: &str) -> String {
    let b = client.breaker(name, restarting()).unwrap();
    for _ in 0..2 {
        let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    }
    let third = b.execute(|| async { Ok::<(), &str>(()) }).await;
    let own = u8::from(matches!(third, Err(Error::Rejected(ref r)) if r.own));
    if how == "leave" {
        client.shutdown().await.unwrap();
    }
    println!("{how} own={own} id={} identity={}", client.id(), client.reporter_id());
    std::process::exit(0);
}

/// A process that crash-loops (three runs, each a new OS process with this host's default
/// identity, each opening for itself and exiting without shutdown) is one reporter: with a
/// quorum of 3 the fleet stays closed. A run that shuts down withdraws the report.
pub fn restarts(rt: &tokio::runtime::Runtime, redis: &support::TestRedis, _fleet: &mut Fleet) -> String {
    let name = support::unique("mp-restarts");
    let run = |how: &str| {
        let mut worker = Worker::spawn(&redis.url, None);
        worker.send(&format!("{how} {name}"));
        let line = worker.line();
        let _ = worker.child.wait();
        line
    };
    let word = |line: &str, key: &str| support::line_field(line, key).to_string();
    let mut ids = Vec::new();
    for i in 0..3 {
        let answer = run("crash");
        assert_eq!(word(&answer, "own"), "1", "run {i} opened for itself, the fleet did not: {answer}");
        ids.push((word(&answer, "id"), word(&answer, "identity")));
    }
    let (state, _, reporters) = quorum_keys(rt, redis, &name);
    assert_eq!(state.get("state").map(String::as_str), Some("closed"), "three runs of one host opened the fleet");
    assert_eq!(reporters, 1, "one reporter: {ids:?}");
    assert!(ids.iter().all(|(_, identity)| *identity == ids[0].1), "one identity across runs: {ids:?}");
    assert!(ids[0].0 != ids[1].0 && ids[1].0 != ids[2].0, "a client id of its own in each run: {ids:?}");
    let answer = run("leave");
    assert_eq!(word(&answer, "own"), "1", "{answer}");
    let (state, _, reporters) = quorum_keys(rt, redis, &name);
    assert_eq!((state.get("state").map(String::as_str), reporters), (Some("closed"), 0), "shutdown() withdrew it");
    format!("[3 crashed runs of host {:?}: 1 reporter, fleet closed; a 4th run's shutdown(): 0 reporters]", ids[0].1)
}
