//! `redis-breaker serve` as a service operators deploy: health and readiness, a scrape that
//! answers through a Redis outage, a clean stop on SIGTERM and SIGINT, the environment, the
//! headers on every answer, `--breakers`, one read of Redis however many watch, the incident
//! fields of the list, and bad input.

use super::console::{Console, TOKEN, console, eventually, http, library, listed, raw_request, spawn_console};
use redis_breaker::{Config, State};
use redis_breaker_test_support::*;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of an unlabelled series in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(c: &Console) -> String {
    let m = http(c, "GET", "/metrics", None).await;
    assert_eq!(m.status, 200, "{}", m.body);
    m.body
}

#[tokio::test]
async fn readiness_and_the_scrape_follow_redis_through_an_outage_and_health_stays_ok() {
    let mut redis = private_redis().await;
    let client = library(&redis).await;
    let name = unique("svc-kept");
    client.breaker(&name, Config::default()).unwrap().force_open(None).await.unwrap();
    let c = console(&redis, None, &[]);

    let health = http(&c, "GET", "/healthz", None).await;
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("ok")));
    let ready = http(&c, "GET", "/readyz", None).await;
    assert_eq!((ready.status, ready.json()["status"].as_str()), (200, Some("ready")), "{}", ready.body);
    assert!(ready.json()["read_at_ms"].as_u64().unwrap() > 0, "{}", ready.body);
    let kept = format!(r#"redis_breaker_fleet_state{{breaker="{name}",state="forced_open"}}"#);
    assert_eq!(value(&scrape(&c).await, &kept), Some(1.0));

    redis.kill();
    let unready = eventually(async || {
        let a = http(&c, "GET", "/readyz", None).await;
        if a.status == 503 { Ok(a) } else { Err(format!("{} {}", a.status, a.body)) }
    })
    .await;
    assert!(unready.json()["error"].as_str().unwrap().starts_with("redis unreachable"), "{}", unready.body);
    assert_eq!(http(&c, "GET", "/healthz", None).await.status, 200, "the process still answers");
    // The scrape answers 200: Redis down, the last values kept, their age growing.
    let first = scrape(&c).await;
    assert_eq!(value(&first, "redis_breaker_console_redis_up"), Some(0.0), "{first}");
    assert_eq!(value(&first, &kept), Some(1.0), "the last read's values are kept: {first}");
    assert!(value(&first, "redis_breaker_console_scrape_duration_seconds").is_some(), "{first}");
    assert!(value(&first, "redis_breaker_console_read_duration_seconds").is_some(), "{first}");
    let age = value(&first, "redis_breaker_console_read_age_seconds").unwrap();
    eventually(async || {
        let later = value(&scrape(&c).await, "redis_breaker_console_read_age_seconds").unwrap();
        if later >= age + 1.0 { Ok(()) } else { Err(format!("the read age stays at {later} (was {age})")) }
    })
    .await;

    redis.restart();
    eventually(async || {
        let a = http(&c, "GET", "/readyz", None).await;
        if a.status == 200 { Ok(()) } else { Err(format!("{} {}", a.status, a.body)) }
    })
    .await;
    assert_eq!(value(&scrape(&c).await, "redis_breaker_console_redis_up"), Some(1.0));
}

/// Opens an event stream and reads its head.
async fn event_stream(c: &Console) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.port)).await.unwrap();
    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");
    s
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_console_with_status_0_while_an_event_stream_is_open() {
    let redis = private_redis().await;
    for signal in ["-TERM", "-INT"] {
        let mut c = console(&redis, None, &[]);
        let mut stream = event_stream(&c).await;
        let sent = Command::new("kill").args([signal, &c.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let status =
            eventually(async || c.child.try_wait().unwrap().ok_or_else(|| format!("still running after {signal}")))
                .await;
        assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
        // The stream ended: what is left to read ends in EOF.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_))), "{signal}: the stream was closed, not reset: {read:?}");
    }
}

#[tokio::test]
async fn the_environment_gives_the_listen_address_and_the_prefix_and_the_port_is_19187() {
    let redis = private_redis().await;
    let client = redis_breaker::Client::connect_with(
        &redis.url,
        redis_breaker::ClientConfig::builder().prefix("ops").build().unwrap(),
    )
    .await
    .unwrap();
    let name = unique("svc-env");
    client.breaker(&name, Config::default()).unwrap().force_open(None).await.unwrap();
    let port = unused_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_redis-breaker"));
    serve
        .env("REDIS_URL", &redis.url)
        .env_remove("REDIS_BREAKER_TOKEN")
        .env("REDIS_BREAKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("REDIS_BREAKER_PREFIX", "ops")
        .arg("serve");
    let c = spawn_console(serve);
    assert_eq!(c.port, port);
    assert_eq!(http(&c, "GET", "/api/info", None).await.json()["prefix"], "ops");
    assert_eq!(listed(&c, &name).await["state"], "forced_open");

    let help = Command::new(env!("CARGO_BIN_EXE_redis-breaker")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("127.0.0.1:19187") && help.contains("REDIS_BREAKER_LISTEN"), "{help}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_errors_included() {
    let redis = private_redis().await;
    let c = console(&redis, Some(TOKEN), &[]);
    let request = |method: &str, path: &str, host: &str, extra: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n")
    };
    let cases = [
        (200, request("GET", "/api/breakers", "127.0.0.1", "")),
        (200, request("GET", "/", "127.0.0.1", "")),
        (404, request("GET", "/no/such/route", "127.0.0.1", "")),
        (405, request("DELETE", "/api/breakers", "127.0.0.1", "")),
        (413, request("POST", "/api/breakers/x/open", "127.0.0.1", "Content-Length: 4096\r\n")),
        (421, request("GET", "/api/breakers", "evil.example", "")),
        (400, request("GET", "/api/breakers/a%20b", "127.0.0.1", "")),
        (401, request("POST", "/api/breakers/x/open", "127.0.0.1", "Content-Length: 0\r\n")),
    ];
    for (status, req) in cases {
        let a = raw_request(&c, &req).await;
        let said = req.lines().next().unwrap();
        assert_eq!(a.status, status, "{said}: {}", a.body);
        for (header, expected) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
        ] {
            assert_eq!(a.headers.get(header).map(String::as_str), Some(expected), "{said}: {:?}", a.headers);
        }
        let csp = a.headers.get("content-security-policy").unwrap_or_else(|| panic!("{said}: {:?}", a.headers));
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{said}: {csp}");
    }
}

#[tokio::test]
async fn breakers_globs_restrict_the_list_the_scrape_the_alerts_and_the_api() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    for name in ["pay-cards", "pay-bank", "orders", "inv1", "inv22"] {
        client.breaker(name, Config::default()).unwrap().force_open(None).await.unwrap();
    }
    let c = console(&redis, None, &["--breakers", "pay-*", "--breakers", "inv?"]);
    let list = http(&c, "GET", "/api/breakers", None).await.json();
    let mut names: Vec<&str> =
        list["breakers"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["inv1", "pay-bank", "pay-cards"], "{list}");
    assert_eq!(list["counts"]["forced_open"], 3, "{list}");

    let m = scrape(&c).await;
    assert!(!m.contains("orders") && !m.contains("inv22"), "{m}");
    assert_eq!(value(&m, "redis_breaker_console_breakers"), Some(3.0), "{m}");
    // The series per breaker that docs/console.md counts: 18, and one per alert that holds.
    let of_one: Vec<&str> = m.lines().filter(|l| l.contains(r#"breaker="inv1""#)).collect();
    let alerts = of_one.iter().filter(|l| l.starts_with("redis_breaker_console_alert{")).count();
    assert_eq!((of_one.len() - alerts, alerts), (18, 1), "{of_one:#?}");

    let alerts = http(&c, "GET", "/api/alerts", None).await.json();
    let alerted: Vec<&str> =
        alerts["alerts"].as_array().unwrap().iter().map(|a| a["breaker"].as_str().unwrap()).collect();
    assert_eq!(alerted.len(), 3, "{alerts}");
    assert!(!alerted.contains(&"orders"), "{alerts}");
    for path in ["/api/breakers/orders", "/api/breakers/orders/history"] {
        assert_eq!(http(&c, "GET", path, None).await.status, 404, "{path}");
    }
    assert_eq!(http(&c, "GET", "/api/breakers/pay-bank/history", None).await.status, 200);
}

/// The console's last read of Redis (changes once per shared read).
async fn read_at(c: &Console) -> u64 {
    let ready = http(c, "GET", "/readyz", None).await;
    ready.json()["read_at_ms"].as_u64().unwrap_or_else(|| panic!("{}", ready.body))
}

/// Answers `n` requests, spread over `viewers` concurrent viewers cycling through the list, the
/// scrape, the alerts and one breaker; each must be a 200.
async fn view(c: &Console, viewers: usize, n: usize) {
    let tasks: Vec<_> = (0..viewers)
        .map(|v| {
            let port = c.port;
            let mine = n / viewers + usize::from(v < n % viewers);
            tokio::spawn(async move {
                let paths = ["/api/breakers", "/metrics", "/api/alerts", "/api/breakers/svc-view-1"];
                for path in paths.iter().cycle().take(mine) {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
                    s.write_all(req.as_bytes()).await.unwrap();
                    let mut answer = Vec::new();
                    let read = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut answer)).await;
                    assert!(matches!(read, Ok(Ok(_))), "{path}: {read:?}");
                    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The answers come from the shared read: the Redis commands made while a fixed number of
/// requests is answered are those of the shared reads in that time, however fast or slow the
/// machine, and far fewer than one read per answer (what every answer reading Redis would cost).
#[tokio::test]
async fn reads_of_redis_do_not_grow_with_viewers() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    for i in 0..5 {
        client.breaker(&format!("svc-view-{i}"), Config::default()).unwrap().force_open(None).await.unwrap();
    }
    drop(client);
    let c = console(&redis, None, &[]);
    assert_eq!(http(&c, "GET", "/readyz", None).await.status, 200);
    // No viewer: what a shared read costs, from the console's own figure (its read time changes
    // once per read), measured over three reads from just after one, and per second.
    let mut last = read_at(&c).await;
    eventually(async || if read_at(&c).await != last { Ok(()) } else { Err("no new read".into()) }).await;
    last = read_at(&c).await;
    let (idle_from, idle_start) = (redis.total_calls().await, Instant::now());
    let mut reads = 0;
    while reads < 3 {
        let now = eventually(async || {
            let now = read_at(&c).await;
            if now != last { Ok(now) } else { Err("no new read".into()) }
        })
        .await;
        (last, reads) = (now, reads + 1);
    }
    let idle = (redis.total_calls().await - idle_from) as f64;
    let per_read = idle / f64::from(reads);
    let per_second = idle / idle_start.elapsed().as_secs_f64();

    // Twelve viewers, 300 answers, however long they take.
    let (busy_from, busy_start) = (redis.total_calls().await, Instant::now());
    let answers = 300;
    view(&c, 12, answers).await;
    let busy = (redis.total_calls().await - busy_from) as f64;
    let elapsed = busy_start.elapsed().as_secs_f64();
    let said = format!(
        "{busy} commands for {answers} answers in {elapsed:.1}s; a shared read costs {per_read:.1} \
         ({per_second:.1}/s while idle)"
    );
    // What the shared reads make in that time (twice over), and a few reads more or less by
    // where the ticks fall: nothing per answer.
    assert!(busy <= 2.0 * per_second * elapsed + 3.0 * per_read, "{said}");
    // Every answer reading Redis would cost a read per answer (about 55 commands each with these
    // five breakers): this is a small fraction of that.
    assert!(busy < answers as f64 * per_read / 4.0, "{said}");
}

#[tokio::test]
async fn the_list_says_how_long_open_the_forced_note_and_the_failure_rate_of_the_last_5_minutes() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    let (rated, tripped, noted) = (unique("svc-rated"), unique("svc-tripped"), unique("svc-noted"));
    let two = Config::builder().failure_threshold(2).build().unwrap();
    let r = client.breaker(&rated, two).unwrap();
    r.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    let one = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(300)).build().unwrap();
    let t = client.breaker(&tripped, one).unwrap();
    let _ = t.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(t.state(), State::Open);
    client.flush().await.unwrap();
    let c = console(&redis, Some(TOKEN), &["--sample-every", "1s"]);
    // Calls made before the console sampled are not in its 5-minute rate.
    assert_eq!(listed(&c, &rated).await["failure_rate_5m"]["calls"], 0);
    for _ in 0..3 {
        r.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    }
    let _ = r.execute(|| async { Err::<(), _>("down") }).await;
    client.flush().await.unwrap();
    let rate = eventually(async || {
        let rate = listed(&c, &rated).await["failure_rate_5m"].clone();
        if rate["calls"] == 4 { Ok(rate) } else { Err(rate.to_string()) }
    })
    .await;
    assert_eq!((rate["failures"].as_u64(), rate["rate"].as_f64()), (Some(1), Some(0.25)), "{rate}");
    let over = rate["over_ms"].as_u64().unwrap();
    assert!(over > 0 && over <= 300_000, "{rate}");

    let open = listed(&c, &tripped).await;
    assert_eq!(open["state"], "open");
    assert!(open["open_for_ms"].as_u64().is_some() && open["state_for_ms"].as_u64().is_some(), "{open}");
    assert!(open["opened_at_ms"].as_u64().unwrap() > 0, "{open}");
    assert_eq!(listed(&c, &rated).await["open_for_ms"], serde_json::Value::Null);

    // A note written through the console, and one written by the CLI (read from the history).
    let path = format!("/api/breakers/{noted}/open?for=10m&note=deploy%204711%20rollback");
    let forced = http(&c, "POST", &path, Some(TOKEN)).await;
    assert_eq!((forced.status, forced.json()["note"].as_str()), (200, Some("deploy 4711 rollback")), "{}", forced.body);
    let row = listed(&c, &noted).await;
    assert_eq!(row["note"], "deploy 4711 rollback", "{row}");
    let until = row["forced_until_ms"].as_u64().unwrap_or_else(|| panic!("{row}"));
    assert!(until > row["changed_at_ms"].as_u64().unwrap() + 590_000, "{row}");
    r.force_close_noted(None, "db migration").await.unwrap();
    let closed = eventually(async || {
        let row = listed(&c, &rated).await;
        if row["note"] == "db migration" { Ok(row) } else { Err(row.to_string()) }
    })
    .await;
    assert_eq!(
        (closed["state"].as_str(), &closed["forced_until_ms"]),
        (Some("forced_closed"), &serde_json::Value::Null)
    );
    let one = http(&c, "GET", &format!("/api/breakers/{noted}"), None).await.json();
    assert_eq!(one["note"], "deploy 4711 rollback", "{one}");
    assert!(one["open_for_ms"].as_u64().is_some(), "{one}");

    let list = http(&c, "GET", "/api/breakers", None).await.json();
    let counts = &list["counts"];
    assert_eq!(
        [&counts["open"], &counts["forced_open"], &counts["forced_closed"], &counts["closed"], &counts["half_open"]],
        [1, 1, 1, 0, 0].map(serde_json::Value::from).each_ref(),
        "{list}"
    );
    assert!(list["read_at_ms"].as_u64().unwrap() > 0, "{list}");
}

#[tokio::test]
async fn a_huge_note_duration_or_name_is_a_400_with_the_reason_and_event_streams_are_capped() {
    let redis = private_redis().await;
    let c = console(&redis, Some(TOKEN), &[]);
    let name = unique("svc-huge");
    let huge = "n".repeat(16 * 1024);
    for (path, reason) in [
        (format!("/api/breakers/{name}/open?note={huge}"), "at most 200 bytes"),
        (format!("/api/breakers/{name}/open?for={}d", "9".repeat(5000)), "bad duration"),
        (format!("/api/breakers/{name}/open?for=100000000d"), "duration"),
        (format!("/api/breakers/{huge}/open"), "16384 bytes long"),
    ] {
        let a = http(&c, "POST", &path, Some(TOKEN)).await;
        assert_eq!(a.status, 400, "{}", a.body);
        let said = a.json()["error"].as_str().unwrap().to_string();
        assert!(said.contains(reason) && said.len() < 300, "{said}");
        assert_eq!(a.headers.get("x-content-type-options").map(String::as_str), Some("nosniff"));
    }
    for path in [format!("/api/breakers/{huge}"), format!("/api/breakers/{huge}/history")] {
        assert_eq!(http(&c, "GET", &path, None).await.status, 400);
    }
    assert!(state_hash(&redis, &name).await.is_empty(), "nothing written");

    // Event streams: 64 at once, the next one is refused; one closed makes room.
    let mut streams = Vec::new();
    for _ in 0..64 {
        streams.push(event_stream(&c).await);
    }
    let refused = http(&c, "GET", "/api/events", None).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains("too many event streams"));
    drop(streams.pop());
    eventually(async || {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.port)).await.unwrap();
        s.write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        let mut head = vec![0u8; 64];
        let n = s.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        if head.starts_with("HTTP/1.1 200") { Ok(()) } else { Err(head) }
    })
    .await;
}

/// The connections subscribed to the events channel (the console's and any library client's).
async fn subscribers(redis: &TestRedis) -> u64 {
    let (_, n): (String, u64) = redis_breaker::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("breaker:events")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    n
}

/// A loopback receiver of notifications: answers 200 to every POST and hands on each body.
async fn receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    let _ = tx.send(serde_json::from_str(&body[..length]).unwrap_or_default());
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                    return;
                }
            });
        }
    });
    (port, rx)
}

/// `serve --notify` is wired: a fleet transition and an alert raised reach the receiver, for the
/// breakers `--breakers` names only, and the console still stops with status 0 on SIGTERM.
#[tokio::test]
async fn notifications_follow_the_shared_read_and_the_breakers_globs() {
    let redis = private_redis().await;
    let (port, mut got) = receiver().await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let before = subscribers(&redis).await;
    let mut c = console(&redis, None, &["--notify", &url, "--breakers", "pay-*"]);
    // The console subscribes when it starts: no transition made after it listens is missed.
    eventually(async || {
        let now = subscribers(&redis).await;
        if now > before { Ok(()) } else { Err(format!("{now} subscribers to breaker:events, {before} before")) }
    })
    .await;
    let client = library(&redis).await;
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(300)).build().unwrap();
    for name in ["orders", "pay-cards"] {
        let b = client.breaker(name, trips.clone()).unwrap();
        let _ = b.execute(|| async { Err::<(), _>("down") }).await;
        assert_eq!(b.state(), State::Open);
    }
    client.breaker("pay-bank", Config::default()).unwrap().force_open(None).await.unwrap();
    client.breaker("orders-db", Config::default()).unwrap().force_open(None).await.unwrap();

    let mut seen: Vec<(String, String)> = Vec::new();
    let wanted = [("transition", "pay-cards"), ("alert_raised", "pay-bank")];
    let started = Instant::now();
    while !wanted.iter().all(|(k, b)| seen.iter().any(|(sk, sb)| sk == k && sb == b)) {
        assert!(started.elapsed() < Duration::from_secs(30), "notifications so far: {seen:?}");
        if let Ok(Some(doc)) = tokio::time::timeout(Duration::from_millis(200), got.recv()).await {
            let field = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
            seen.push((field("kind"), field("breaker")));
        }
    }
    // Whatever came meanwhile names no breaker outside the globs.
    while let Ok(doc) = got.try_recv() {
        seen.push((
            doc["kind"].as_str().unwrap_or_default().into(),
            doc["breaker"].as_str().unwrap_or_default().into(),
        ));
    }
    assert!(seen.iter().all(|(_, b)| b.starts_with("pay-")), "{seen:?}");
    let m = scrape(&c).await;
    assert!(value(&m, "redis_breaker_console_notifications_sent_total").is_some_and(|n| n >= 2.0), "{m}");

    let sent = Command::new("kill").args(["-TERM", &c.child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = eventually(async || c.child.try_wait().unwrap().ok_or_else(|| "still running".to_string())).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}
