//! `redis-breaker serve --notify URL`, run as an operator would, against a real Redis and
//! receivers written here (loopback HTTP/1.1 servers that answer chosen statuses and keep what
//! they were sent): one notification per fleet transition, retries, giving up, a receiver that
//! hangs, a hostile breaker name in Slack's text, alerts, the minimum interval and bad URLs.

use redis_breaker::redis;
use redis_breaker_test_support as support;

use super::console::{Console, spawn_console};
use redis_breaker::{Client, Config, State};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "notify-test-token-0123456789";

/// Starts the console on a free loopback port with `extra` options, then waits until its
/// client listens to the events channel (so that no transition made after this is missed).
async fn console(redis: &TestRedis, extra: &[&str]) -> Console {
    console_with(redis, extra, &[]).await
}

/// [`console`] with environment variables.
async fn console_with(redis: &TestRedis, extra: &[&str], env: &[(&str, &std::path::Path)]) -> Console {
    let before = subscribers(&mut redis.conn().await).await;
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-breaker"));
    c.envs(env.iter().copied())
        .env("REDIS_URL", &redis.url)
        .env("REDIS_BREAKER_TOKEN", TOKEN)
        .env_remove("REDIS_BREAKER_NOTIFY")
        .env_remove("REDIS_BREAKER_PREFIX")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra);
    let console = spawn_console(c);
    let conn = redis.conn().await;
    eventually("the console subscribes to breaker:events", || {
        let mut conn = conn.clone();
        async move { subscribers(&mut conn).await > before }
    })
    .await;
    console
}

/// The connections subscribed to the events channel (the console's and the library clients').
async fn subscribers(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (_, n): (String, u64) =
        redis::cmd("PUBSUB").arg("NUMSUB").arg("breaker:events").query_async(conn).await.unwrap();
    n
}

/// Waits until `check` holds, for up to a minute (a generous deadline: nothing here is timed).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET to the console: status and body.
async fn get(c: &Console, path: &str) -> (u16, String) {
    request(c, "GET", path, "").await
}

/// One request to the console (`headers`: extra header lines, each ending in CRLF).
async fn request(c: &Console, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.port)).await.expect("connect to the console");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        wire::dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// A sample of the console's /metrics (0 when the series is absent).
async fn metric(c: &Console, name: &str) -> u64 {
    let (status, text) = get(c, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or_else(|_| panic!("{name}: {v}")) as u64)
}

/// What a receiver was sent: each request's target, headers (lower-case names) and JSON body.
#[derive(Debug, Clone)]
struct Request {
    target: String,
    headers: Vec<(String, String)>,
    body: Value,
}

/// A loopback receiver. Connection `i` gets `statuses[i]` (the last one repeated); a status
/// of 0 accepts the request and never answers.
struct Receiver {
    url: String,
    connections: Arc<Mutex<usize>>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    async fn start(statuses: &[u16]) -> Receiver {
        Receiver::start_on(statuses, None).await
    }

    /// With `tls`, an https:// receiver.
    async fn start_on(statuses: &[u16], tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/services/T0/B0/SECRET-TOKEN?key=SECRET-KEY", listener.local_addr().unwrap());
        let (connections, requests) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(Vec::new())));
        let statuses = statuses.to_vec();
        let (counted, kept) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { return };
                let status = {
                    let mut n = counted.lock().unwrap();
                    *n += 1;
                    statuses[(*n - 1).min(statuses.len() - 1)]
                };
                let (kept, tls) = (kept.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(s) = tls.accept(s).await {
                                answer(s, status, kept).await;
                            }
                        }
                        None => answer(s, status, kept).await,
                    }
                });
            }
        });
        Receiver { url, connections, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// The documents about `breaker`.
    fn about(&self, breaker: &str) -> Vec<Value> {
        self.requests().into_iter().map(|r| r.body).filter(|b| b["breaker"] == breaker).collect()
    }
}

/// Reads one request from `s`, keeps it, and answers `status` (0: never).
async fn answer<S>(mut s: S, status: u16, kept: Arc<Mutex<Vec<Request>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while !wire::complete(&raw) {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    kept.lock().unwrap().push(parse_request(&raw));
    if status == 0 {
        return std::future::pending::<()>().await;
    }
    let answer = format!("HTTP/1.1 {status} Chosen\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn parse_request(raw: &[u8]) -> Request {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a request");
    let mut lines = head.lines();
    let request_line = lines.next().expect("request line");
    let mut parts = request_line.split(' ');
    assert_eq!(parts.next(), Some("POST"), "{request_line}");
    let target = parts.next().expect("target").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON body ({e}): {body}"));
    Request { target, headers, body }
}

async fn library(redis: &TestRedis) -> Client {
    Client::connect(&redis.url).await.unwrap()
}

/// Forces `name` open for 10 minutes (with `note`), then resets it: two fleet transitions, and
/// no alert.
async fn force_open_then_reset(client: &Client, name: &str, note: &str) {
    let b = client.breaker(name, Config::default()).unwrap();
    b.force_open_noted(Some(Duration::from_secs(600)), note).await.unwrap();
    b.reset().await.unwrap();
}

#[tokio::test]
async fn a_trip_seen_by_three_processes_is_notified_once() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[200]).await;
    let c = console(&redis, &["--notify", &receiver.url, "--notify-min-interval", "0"]).await;
    let name = unique("notify-trip");
    let config = Config::builder().failure_threshold(3).build().unwrap();
    let mut processes = Vec::new();
    for _ in 0..3 {
        let client = library(&redis).await;
        let b = client.breaker(&name, config.clone()).unwrap();
        processes.push((client, b));
    }
    for (_, b) in &processes {
        let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    }
    for (_, b) in &processes {
        let mut events = b.subscribe();
        if b.state() != State::Open {
            while events.recv().await.is_some_and(|e| e.to != State::Open) {}
        }
        assert_eq!(b.state(), State::Open, "each process sees the trip");
    }
    // A later transition of the same breaker: once it has arrived, everything before has.
    processes[0].1.reset().await.unwrap();
    eventually("the reset is notified", || async { receiver.about(&name).iter().any(|d| d["to"] == "closed") }).await;
    let docs = receiver.about(&name);
    let opened: Vec<&Value> = docs.iter().filter(|d| d["to"] == "open").collect();
    assert_eq!(opened.len(), 1, "one notification for the fleet's trip: {docs:#?}");
    let d = opened[0];
    assert_eq!((d["kind"].as_str(), d["from"].as_str()), (Some("transition"), Some("closed")));
    assert!(d["reason"].as_str().unwrap().contains('3'), "the reason: {d}");
    assert!(d["epoch"].as_u64().unwrap() > 0 && d["incarnation"].as_u64().unwrap() > 0, "{d}");
    assert!(d["origin"].is_string() && d["at_ms"].as_u64().unwrap() > 0, "{d}");
    assert!(d["text"].as_str().unwrap().contains(&name) && !d["text"].as_str().unwrap().contains('\n'), "{d}");
    assert_eq!(docs.len(), 2, "the trip and the reset, nothing else: {docs:#?}");
    // A transition the console makes itself (an operator's click) reaches its subscription
    // twice: from its own call and from the events channel.
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, body) = request(&c, "POST", &format!("/api/breakers/{name}/open?for=10m"), &auth).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(&c, "POST", &format!("/api/breakers/{name}/reset"), &auth).await;
    assert_eq!(status, 200, "{body}");
    eventually("the console's reset is notified", || async {
        receiver.about(&name).iter().filter(|d| d["to"] == "closed").count() >= 2
    })
    .await;
    let docs = receiver.about(&name);
    assert_eq!(docs.iter().filter(|d| d["to"] == "forced_open").count(), 1, "{docs:#?}");
    assert_eq!(docs.len(), 4, "{docs:#?}");
    let request = &receiver.requests()[0];
    assert_eq!(request.target, "/services/T0/B0/SECRET-TOKEN?key=SECRET-KEY", "the URL's path and query");
    assert!(request.headers.contains(&("content-type".into(), "application/json".into())), "{request:?}");
    assert!(c.logs().iter().all(|l| !l.contains("SECRET")), "no secret logged");
    assert_eq!(metric(&c, "redis_breaker_console_notifications_sent_total").await, 4);
}

#[tokio::test]
async fn a_500_is_retried_and_then_delivered() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[500, 200]).await;
    let c =
        console(&redis, &["--notify", &receiver.url, "--notify-min-interval", "0", "--notify-backoff", "100ms"]).await;
    let name = unique("notify-retry");
    let b = library(&redis).await.breaker(&name, Config::default()).unwrap();
    b.force_open(Some(Duration::from_secs(600))).await.unwrap();
    eventually("the notification is sent", || async {
        metric(&c, "redis_breaker_console_notifications_sent_total").await == 1
    })
    .await;
    let docs = receiver.about(&name);
    assert_eq!(docs.len(), 2, "the same document twice: {docs:#?}");
    assert_eq!(docs[0], docs[1]);
    assert_eq!(docs[0]["to"], "forced_open");
    assert_eq!(metric(&c, "redis_breaker_console_notifications_retries_total").await, 1);
    assert_eq!(metric(&c, "redis_breaker_console_notifications_failed_total").await, 0);
}

#[tokio::test]
async fn a_receiver_that_always_fails_is_given_up_after_n_attempts() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[503]).await;
    let c = console(
        &redis,
        &["--notify", &receiver.url, "--notify-min-interval", "0", "--notify-backoff", "50ms", "--notify-retries", "3"],
    )
    .await;
    let name = unique("notify-give-up");
    let b = library(&redis).await.breaker(&name, Config::default()).unwrap();
    b.force_open(Some(Duration::from_secs(600))).await.unwrap();
    eventually("the notification is given up", || async {
        metric(&c, "redis_breaker_console_notifications_failed_total").await == 1
    })
    .await;
    assert_eq!(receiver.connections(), 4, "one attempt and 3 retries");
    assert_eq!(metric(&c, "redis_breaker_console_notifications_retries_total").await, 3);
    assert_eq!(metric(&c, "redis_breaker_console_notifications_sent_total").await, 0);
}

#[tokio::test]
async fn a_refused_notification_is_not_retried_and_its_url_not_logged() {
    let redis = private_redis().await;
    let refusing = Receiver::start(&[404]).await;
    let c =
        console(&redis, &["--notify", &refusing.url, "--notify-backoff", "50ms", "--notify-retries", "3", "-v"]).await;
    let b = library(&redis).await.breaker(&unique("notify-refused"), Config::default()).unwrap();
    b.force_open(Some(Duration::from_secs(600))).await.unwrap();
    eventually("the refused notification is given up", || async {
        metric(&c, "redis_breaker_console_notifications_failed_total").await == 1
    })
    .await;
    assert_eq!(refusing.connections(), 1);
    assert_eq!(metric(&c, "redis_breaker_console_notifications_retries_total").await, 0);
    let logs = c.logs().join("\n");
    assert!(logs.contains("refused") && logs.contains("http://127.0.0.1:"), "{logs}");
    assert!(!logs.contains("SECRET") && !logs.contains("/services"), "only scheme, host and port are logged: {logs}");
}

#[tokio::test]
async fn a_receiver_that_hangs_delays_nothing() {
    let redis = private_redis().await;
    let (hanging, answering) = (Receiver::start(&[0]).await, Receiver::start(&[200]).await);
    let c = console(
        &redis,
        &["--notify", &hanging.url, "--notify", &answering.url, "--notify-min-interval", "0", "--notify-timeout", "1h"],
    )
    .await;
    let client = library(&redis).await;
    let names: Vec<String> = (0..3).map(|i| unique(&format!("notify-hang-{i}"))).collect();
    for name in &names {
        force_open_then_reset(&client, name, "maintenance").await;
    }
    eventually("the answering receiver gets all six", || async { names.iter().all(|n| answering.about(n).len() == 2) })
        .await;
    assert_eq!((hanging.requests().len(), hanging.connections()), (1, 1), "the hanging one still holds the first");
    let (status, body) = get(&c, "/api/breakers").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&c, "/metrics").await.0, 200);
}

#[tokio::test]
async fn the_slack_text_escapes_a_hostile_breaker_name_and_note() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[200]).await;
    let _c = console(&redis, &["--notify", &receiver.url]).await;
    let hostile = format!("<!channel>&<https://evil.example|click>-{}", unique("n"));
    let note = "<!here> & <@U123> rollback";
    let b = library(&redis).await.breaker(&hostile, Config::default()).unwrap();
    b.force_open_noted(Some(Duration::from_secs(600)), note).await.unwrap();
    eventually("the forced open is notified", || async { !receiver.about(&hostile).is_empty() }).await;
    let d = &receiver.about(&hostile)[0];
    let text = d["text"].as_str().unwrap();
    assert!(!text.contains('<') && !text.contains('>') && !text.contains('\n'), "{text}");
    assert!(text.contains("&lt;!channel&gt;&amp;&lt;https://evil.example|click&gt;"), "{text}");
    assert!(text.contains("note: &lt;!here&gt; &amp; &lt;@U123&gt; rollback"), "the note too: {text}");
    assert_eq!(d["breaker"], hostile.as_str(), "the fields hold the facts as they are");
    assert_eq!((d["to"].as_str(), d["note"].as_str()), (Some("forced_open"), Some(note)));
}

#[tokio::test]
async fn an_alert_is_notified_when_raised_and_when_cleared() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[200]).await;
    let _c = console(&redis, &["--notify", &receiver.url]).await;
    let name = unique("notify-alert");
    let b = library(&redis).await.breaker(&name, Config::default()).unwrap();
    b.force_open_noted(None, "no end").await.unwrap();
    let raised = |d: &Value| d["kind"] == "alert_raised" && d["alert"] == "forced_without_end";
    eventually("the alert is raised", || async { receiver.about(&name).iter().any(raised) }).await;
    b.reset().await.unwrap();
    let cleared = |d: &Value| d["kind"] == "alert_cleared" && d["alert"] == "forced_without_end";
    eventually("the alert is cleared", || async { receiver.about(&name).iter().any(cleared) }).await;
    let docs = receiver.about(&name);
    assert_eq!(docs.iter().filter(|d| raised(d)).count(), 1, "raised once while it held: {docs:#?}");
    let d = docs.iter().find(|d| raised(d)).unwrap();
    assert!(d["message"].as_str().unwrap().contains("no end"), "{d}");
    assert!(d["text"].as_str().unwrap().contains("forced_without_end"), "{d}");
}

#[tokio::test]
async fn a_flapping_breaker_is_notified_once_per_interval_with_its_last_state() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[200]).await;
    let c = console(&redis, &["--notify", &receiver.url, "--notify-min-interval", "5s"]).await;
    let name = unique("notify-flap");
    let client = library(&redis).await;
    for _ in 0..3 {
        force_open_then_reset(&client, &name, "flap").await;
    }
    let transitions = || receiver.about(&name).into_iter().filter(|d| d["kind"] == "transition").collect::<Vec<_>>();
    // Each document stands for itself and the transitions it says were not sent. On a machine
    // fast enough to make the six writes within one interval that is two documents; a slower
    // one may split them across intervals, and what follows holds either way.
    let told = |docs: &[Value]| docs.iter().map(|d| 1 + d["suppressed"].as_u64().unwrap()).sum::<u64>();
    eventually("all six transitions are accounted for", || async { told(&transitions()) >= 6 }).await;
    let docs = transitions();
    assert_eq!(told(&docs), 6, "six transitions, each sent or counted once: {docs:#?}");
    assert_eq!((docs[0]["to"].as_str(), docs[0]["suppressed"].as_u64()), (Some("forced_open"), Some(0)));
    let last = docs.last().unwrap();
    assert_eq!(last["to"].as_str(), Some("closed"), "the last state: {docs:#?}");
    let held = last["suppressed"].as_u64().unwrap();
    if held > 0 {
        let said = format!("{held} earlier transition{} not sent", if held == 1 { "" } else { "s" });
        assert!(last["text"].as_str().unwrap().contains(&said), "{last}");
    }
    let suppressed = 6 - docs.len() as u64;
    assert_eq!(metric(&c, "redis_breaker_console_notifications_suppressed_total").await, suppressed);
}

#[tokio::test]
async fn a_bad_notify_url_exits_2_with_the_reason() {
    let redis = private_redis().await;
    for (url, why) in [
        ("ftp://example.com/SECRET", "not an http:// or https:// URL"),
        ("hooks.example.com/services/SECRET", "not an http:// or https:// URL"),
        ("https://user:SECRET@example.com/hook", "a user or password in the URL is not supported"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
            .env("REDIS_URL", &redis.url)
            .env_remove("REDIS_BREAKER_NOTIFY")
            .args(["serve", "--listen", "127.0.0.1:0", "--notify", "http://127.0.0.1:9/fine", "--notify", url])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run redis-breaker serve");
        // A console that accepted the URL would run on: it is stopped, and the test fails.
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("--notify URL #2") && stderr.contains(why), "{url}: {stderr}");
        assert!(!stderr.contains("SECRET"), "the URL is not echoed: {stderr}");
    }
}

/// Sends SIGTERM to the console and waits (up to a generous minute) for it to exit.
async fn stop(c: &mut Console) -> Option<i32> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = c.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the console did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_sigterm_a_notification_being_retried_is_still_delivered() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[500, 200]).await;
    // A backoff far shorter than the 2 s drain: the retry is due long before the drain ends.
    let mut c = console(&redis, &["--notify", &receiver.url, "--notify-backoff", "20ms"]).await;
    let name = unique("notify-stop");
    let b = library(&redis).await.breaker(&name, Config::default()).unwrap();
    b.force_open(Some(Duration::from_secs(600))).await.unwrap();
    eventually("the first attempt is made", || async { receiver.connections() >= 1 }).await;
    assert_eq!(stop(&mut c).await, Some(0));
    let docs = receiver.about(&name);
    assert_eq!(docs.len(), 2, "the retry was made before the console exited: {docs:#?}");
}

#[tokio::test]
async fn on_sigterm_the_transition_held_back_by_the_interval_is_sent() {
    let redis = private_redis().await;
    let receiver = Receiver::start(&[200]).await;
    // An interval no test run outlasts: only the shutdown sends what it holds back.
    let mut c = console(&redis, &["--notify", &receiver.url, "--notify-min-interval", "1h"]).await;
    let name = unique("notify-stop-held");
    let client = library(&redis).await;
    for _ in 0..3 {
        force_open_then_reset(&client, &name, "flap").await;
    }
    eventually("the first transition is sent", || async { !receiver.about(&name).is_empty() }).await;
    // Four replaced, the sixth (closed) held: the console has followed all six.
    eventually("the console has followed all six transitions", || async {
        metric(&c, "redis_breaker_console_notifications_suppressed_total").await == 4
    })
    .await;
    assert_eq!(receiver.about(&name).len(), 1, "the rest is held back");
    assert_eq!(stop(&mut c).await, Some(0));
    let docs = receiver.about(&name);
    assert_eq!(docs.len(), 2, "{docs:#?}");
    let last = &docs[1];
    assert_eq!(
        (last["to"].as_str(), last["suppressed"].as_u64()),
        (Some("closed"), Some(4)),
        "the final state: {docs:#?}"
    );
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_the_console_on_sigterm() {
    let redis = private_redis().await;
    let hanging = Receiver::start(&[0]).await;
    let mut c = console(&redis, &["--notify", &hanging.url, "--notify-timeout", "1h"]).await;
    let b = library(&redis).await.breaker(&unique("notify-stop-hang"), Config::default()).unwrap();
    b.force_open(Some(Duration::from_secs(600))).await.unwrap();
    eventually("the receiver holds the notification", || async { hanging.requests().len() == 1 }).await;
    assert_eq!(stop(&mut c).await, Some(0), "stopped after the bounded drain, not the hour-long timeout");
}

/// A TLS acceptor with the server certificate (for 127.0.0.1) that test support makes with its
/// CA, and the CA's file.
fn tls_acceptor(certs: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("server.crt")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn an_https_receiver_is_reached_and_its_certificate_checked() {
    let redis = private_redis().await;
    let made = support::tls::tls_redis();
    let receiver = Receiver::start_on(&[200], Some(tls_acceptor(&made.certs))).await;
    let ca = made.certs.join("ca.crt");
    let trusting =
        console_with(&redis, &["--notify", &receiver.url, "--notify-retries", "0"], &[("SSL_CERT_FILE", &ca)]).await;
    let name = unique("notify-https");
    let b = library(&redis).await.breaker(&name, Config::default()).unwrap();
    b.force_open(Some(Duration::from_secs(600))).await.unwrap();
    eventually("the notification arrives over TLS", || async { !receiver.about(&name).is_empty() }).await;
    assert_eq!(receiver.about(&name)[0]["to"], "forced_open");
    drop(trusting);
    let conn = redis.conn().await;
    eventually("the first console is gone", || {
        let mut conn = conn.clone();
        async move { subscribers(&mut conn).await == 1 }
    })
    .await;
    // A console that does not trust the test's CA refuses the receiver's certificate.
    let other = made.certs.join("other-ca.crt");
    let c =
        console_with(&redis, &["--notify", &receiver.url, "--notify-retries", "0"], &[("SSL_CERT_FILE", &other)]).await;
    b.reset().await.unwrap();
    eventually("the notification fails", || async {
        metric(&c, "redis_breaker_console_notifications_failed_total").await == 1
    })
    .await;
    assert!(receiver.about(&name).iter().all(|d| d["to"] != "closed"), "nothing sent to an untrusted receiver");
    let logs = c.logs().join("\n");
    assert!(logs.contains("certificate") && logs.contains("https://127.0.0.1:"), "{logs}");
}

/// A transition made while the console's subscription is down (here: its user may no longer
/// listen on the events channel, so Redis dropped the subscription and refuses it again) is
/// still notified: the shared read sees the breaker's epoch move, and no event tells it.
#[tokio::test]
async fn a_transition_missed_by_the_subscription_is_notified_from_the_read() {
    let redis = private_redis().await;
    let mut admin = redis.conn().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "console", "on", ">secret", "~*", "&*", "+@all"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = redis.url.replace("redis://", "redis://console:secret@");
    let receiver = Receiver::start(&[200]).await;
    let before = subscribers(&mut admin).await;
    let _c = console(&redis, &["--url", &url, "--notify", &receiver.url, "--notify-min-interval", "0"]).await;
    let name = unique("notify-missed");
    let client = library(&redis).await;
    let b = client.breaker(&name, Config::default()).unwrap();
    b.force_open(None).await.unwrap();
    eventually("the forced open is notified", || async {
        receiver.about(&name).iter().any(|d| d["to"] == "forced_open")
    })
    .await;
    // Two reads of the console see the breaker forced open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _: () =
        redis::cmd("ACL").arg(&["SETUSER", "console", "resetchannels"][..]).query_async(&mut admin).await.unwrap();
    let conn = admin.clone();
    eventually("the console's subscription is dropped", || {
        let mut conn = conn.clone();
        async move { subscribers(&mut conn).await <= before + 1 }
    })
    .await;
    b.reset().await.unwrap();
    let epoch = b.status().await.unwrap().epoch;
    eventually("the reset no event told is notified", || async {
        receiver.about(&name).iter().any(|d| d["to"] == "closed")
    })
    .await;
    let docs = receiver.about(&name);
    let closed: Vec<&Value> = docs.iter().filter(|d| d["to"] == "closed").collect();
    assert_eq!(closed.len(), 1, "{docs:#?}");
    let d = closed[0];
    assert_eq!((d["kind"].as_str(), d["from"].as_str()), (Some("transition"), Some("forced_open")), "{d}");
    assert_eq!(d["epoch"].as_u64(), Some(epoch), "{d}");
    // No other transition was sent about it (the alert of a forced state without an end was
    // raised and cleared meanwhile).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let transitions = receiver.about(&name).into_iter().filter(|d| d["kind"] == "transition").count();
    assert_eq!(transitions, 2, "{:#?}", receiver.about(&name));
}
