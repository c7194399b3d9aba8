//! `redis-breaker serve`, run as an operator would, against a real Redis: every endpoint's
//! shape, the token on writes, the live event stream, Prometheus, alerts, hostile names, and
//! Redis going away under the console.

use redis_breaker::redis;
use redis_breaker_test_support as support;

use redis_breaker::{Client, Config, State};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const TOKEN: &str = "console-test-token-0123456789";

/// A running `redis-breaker serve`; killed when dropped.
pub(crate) struct Console {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// What it wrote on stderr after the line that says where it listens.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Console {
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the console on a free loopback port (it says which on stderr), with the token or
/// without one.
pub(crate) fn console(redis: &TestRedis, token: Option<&str>, extra: &[&str]) -> Console {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-breaker"));
    c.env("REDIS_URL", &redis.url).env_remove("REDIS_BREAKER_TOKEN").env_remove("REDIS_BREAKER_PREFIX");
    if let Some(token) = token {
        c.env("REDIS_BREAKER_TOKEN", token);
    }
    c.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
    spawn_console(c)
}

/// Starts `serve` as `c` says and waits for the line that says where it listens.
pub(crate) fn spawn_console(mut c: Command) -> Console {
    c.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = c.spawn().expect("start redis-breaker serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    // With -v, log lines may come before the line that says where it listens.
    while !line.contains("console on") {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("the console's stderr") > 0, "the console stopped: {line}");
    }
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the console says where it listens: {line:?}"));
    assert!(line.contains("loopback only"), "{line}");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Console { child, port, logs }
}

/// One answer: status, headers (lower-case names), body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
pub(crate) async fn http(c: &Console, method: &str, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n{auth}\r\n");
    raw_request(c, &req).await
}

/// A request written as given (request line and headers, ending in an empty line); the
/// console closes the connection after its answer when the request says `Connection: close`
/// or is HTTP/1.0.
pub(crate) async fn raw_request(c: &Console, req: &str) -> Answer {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.port)).await.expect("connect to the console");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<HashMap<_, _>>();
    let body = if headers.get("transfer-encoding").is_some_and(|v| v == "chunked") {
        support::wire::dechunk(body)
    } else {
        body.to_string()
    };
    Answer { status, headers, body }
}

pub(crate) async fn library(redis: &TestRedis) -> Client {
    Client::connect(&redis.url).await.unwrap()
}

/// Tries `attempt` every 100 ms until it gives a value; fails with its last complaint after
/// a generous 20 s (the console reads Redis once a second: what a test changed shows within
/// about a second).
pub(crate) async fn eventually<T>(mut attempt: impl AsyncFnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(said) if started.elapsed() > Duration::from_secs(20) => panic!("never came: {said}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The breaker named `name` in `GET /api/breakers`, once the console's shared read has it.
pub(crate) async fn listed(c: &Console, name: &str) -> serde_json::Value {
    eventually(async || {
        let list = http(c, "GET", "/api/breakers", None).await;
        let found = list.json()["breakers"].as_array().and_then(|a| a.iter().find(|b| b["name"] == name).cloned());
        found.ok_or_else(|| format!("{name} in {}", list.body))
    })
    .await
}

#[tokio::test]
async fn every_endpoint_answers_in_its_shape_and_writes_need_the_token() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    let (open, healthy) = (unique("con-open"), unique("con-healthy"));
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(300)).build().unwrap();
    let o = client.breaker(&open, trips).unwrap();
    let _ = o.execute(|| async { Err::<(), _>("down") }).await;
    let h = client.breaker(&healthy, Config::default()).unwrap();
    h.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    client.flush().await.unwrap();
    let c = console(&redis, Some(TOKEN), &[]);

    let page = http(&c, "GET", "/", None).await;
    assert_eq!(page.status, 200);
    let csp = &page.headers["content-security-policy"];
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(page.body.contains(r#"<script src="/console.js">"#) && !page.body.contains("http"), "no external asset");
    assert_eq!(http(&c, "GET", "/console.js", None).await.status, 200);

    let info = http(&c, "GET", "/api/info", None).await.json();
    assert_eq!((info["read_only"].as_bool(), info["prefix"].as_str()), (Some(false), Some("breaker")));
    let list = http(&c, "GET", "/api/breakers", None).await.json();
    let names: Vec<&str> = list["breakers"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![open.as_str(), healthy.as_str()], "open breakers first");
    assert_eq!(list["breakers"][0]["state"], "open");
    assert_eq!(list["breakers"][0]["trips"], 1);
    let one = http(&c, "GET", &format!("/api/breakers/{healthy}"), None).await.json();
    assert_eq!((one["name"].as_str(), one["state"].as_str()), (Some(healthy.as_str()), Some("closed")));
    assert_eq!(one["metrics"]["calls"], 1);

    // Writes: no token, a wrong one, then the right one.
    let path = format!("/api/breakers/{healthy}/open?for=30s");
    let refused = http(&c, "POST", &path, None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["www-authenticate"], "Bearer");
    assert!(refused.json()["error"].as_str().unwrap().contains("token"));
    assert_eq!(http(&c, "POST", &path, Some("console-test-token-0123456788")).await.status, 401);
    assert_eq!(state_hash(&redis, &healthy).await.get("state").map(String::as_str), None, "nothing written");
    let forced = http(&c, "POST", &path, Some(TOKEN)).await;
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert_eq!(forced.json()["state"], "forced_open");
    assert!(forced.json().get("warning").is_none() && forced.json()["announced"] == true, "{}", forced.body);
    let stored = state_hash(&redis, &healthy).await;
    assert_eq!(stored["state"], "forced_open");
    assert!(stored["open_until"].parse::<u64>().unwrap() > 0, "for=30s has an end");
    assert_eq!(http(&c, "POST", &format!("/api/breakers/{open}/open"), Some(TOKEN)).await.status, 200);
    let alerts = http(&c, "GET", "/api/alerts", None).await.json();
    let alerts = alerts["alerts"].as_array().unwrap().clone();
    assert!(
        alerts.iter().any(|a| a["breaker"] == open.as_str() && a["kind"] == "forced_without_end"),
        "an operator's lock left on: {alerts:?}"
    );
    assert!(
        !alerts.iter().any(|a| a["breaker"] == healthy.as_str()),
        "a forced open with an end is no alert: {alerts:?}"
    );
    let reset = http(&c, "POST", &format!("/api/breakers/{healthy}/reset"), Some(TOKEN)).await;
    assert_eq!((reset.status, reset.json()["state"].as_str()), (200, Some("closed")));
    assert_eq!(state_hash(&redis, &healthy).await["state"], "closed");
    // A write to a breaker with no keys yet creates its state, as the CLI does.
    let fresh = unique("con-fresh");
    assert_eq!(http(&c, "POST", &format!("/api/breakers/{fresh}/close?for=1m"), Some(TOKEN)).await.status, 200);
    assert_eq!(state_hash(&redis, &fresh).await["state"], "forced_closed");

    // Bad input: one-line JSON errors.
    for (method, path, status) in [
        ("GET", "/api/breakers/a%20b", 400),
        ("POST", "/api/breakers/a%7Bb%7D/open", 400),
        ("POST", &format!("/api/breakers/{healthy}/open?for=soon"), 400),
        ("POST", &format!("/api/breakers/{healthy}/reset?for=1m"), 400),
        ("POST", &format!("/api/breakers/{healthy}/explode"), 404),
        ("GET", "/no/such/route", 404),
    ] {
        let a = http(&c, method, path, Some(TOKEN)).await;
        assert_eq!(a.status, status, "{method} {path}: {}", a.body);
        assert!(a.json()["error"].is_string() && !a.body.contains('\n'), "{method} {path}: {}", a.body);
    }

    // A breaker under a quorum of 2 that one process opened for itself: one reporter.
    let quorum = unique("con-quorum");
    let q = client.breaker(&quorum, Config::builder().failure_threshold(1).quorum(2).build().unwrap()).unwrap();
    let _ = q.execute(|| async { Err::<(), _>("down") }).await;
    let entry = listed(&c, &quorum).await;
    assert_eq!((entry["quorum"].clone(), entry["reporters"].clone()), (2.into(), 1.into()));

    // Prometheus: the OpenMetrics text, with each breaker's state and the fleet counters.
    let m = http(&c, "GET", "/metrics", None).await;
    assert_eq!(m.status, 200);
    assert!(m.headers["content-type"].starts_with("application/openmetrics-text"), "{:?}", m.headers);
    assert!(m.body.trim_end().ends_with("# EOF"));
    let series: HashMap<String, f64> = m
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {l}"));
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("a number: {l}")))
        })
        .collect();
    let get = |k: String| *series.get(&k).unwrap_or_else(|| panic!("{k} in {}", m.body));
    assert_eq!(get(format!(r#"redis_breaker_fleet_state{{breaker="{open}",state="forced_open"}}"#)), 1.0);
    assert_eq!(get(format!(r#"redis_breaker_fleet_state{{breaker="{open}",state="closed"}}"#)), 0.0);
    assert_eq!(get(format!(r#"redis_breaker_fleet_calls_total{{breaker="{open}",outcome="failure"}}"#)), 1.0);
    assert_eq!(get(format!(r#"redis_breaker_fleet_calls_total{{breaker="{open}",outcome="success"}}"#)), 0.0);
    assert_eq!(get(format!(r#"redis_breaker_fleet_opened_total{{breaker="{open}"}}"#)), 1.0);
    assert_eq!(get(format!(r#"redis_breaker_fleet_calls_total{{breaker="{healthy}",outcome="success"}}"#)), 1.0);
    assert_eq!(get(format!(r#"redis_breaker_console_alert{{breaker="{open}",kind="forced_without_end"}}"#)), 1.0);
    assert_eq!(get(format!(r#"redis_breaker_fleet_quorum_reporters{{breaker="{quorum}"}}"#)), 1.0);
    assert_eq!(get(format!(r#"redis_breaker_fleet_quorum_reporters{{breaker="{open}"}}"#)), 0.0);
    assert!(get(format!(r#"redis_breaker_fleet_state_changed_timestamp_seconds{{breaker="{open}"}}"#)) > 1.7e9);
    assert_eq!(get("redis_breaker_console_redis_up".into()), 1.0);
    assert_eq!(get("redis_breaker_console_breakers".into()), 4.0);
}

#[tokio::test]
async fn without_a_token_the_console_is_read_only_and_reads_can_need_it() {
    let redis = private_redis().await;
    let name = unique("con-ro");
    let c = console(&redis, None, &[]);
    assert_eq!(http(&c, "GET", "/api/info", None).await.json()["read_only"], true);
    let a = http(&c, "POST", &format!("/api/breakers/{name}/open"), Some(TOKEN)).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("read-only"));
    assert!(state_hash(&redis, &name).await.is_empty(), "nothing written");
    drop(c);

    let c = console(&redis, Some(TOKEN), &["--auth-reads"]);
    assert_eq!(http(&c, "GET", "/api/breakers", None).await.status, 401);
    assert_eq!(http(&c, "GET", "/metrics", Some("wrong-token-wrong-token")).await.status, 401);
    assert_eq!(http(&c, "GET", "/api/breakers", Some(TOKEN)).await.status, 200);
    assert_eq!(http(&c, "GET", "/api/info", None).await.json()["auth_reads"], true, "the page learns it must ask");

    let short = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
        .env("REDIS_URL", &redis.url)
        .env("REDIS_BREAKER_TOKEN", "short")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(2), "a short token is bad usage");
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16 bytes"));
}

#[tokio::test]
async fn transitions_stream_as_server_sent_events_and_hostile_names_stay_text() {
    let redis = private_redis().await;
    let c = console(&redis, Some(TOKEN), &[]);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.port)).await.unwrap();
    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");
    // The console subscribes when it starts: wait until its client is subscribed.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let hostile = "<img/src=x>";
    let client = library(&redis).await;
    let b = client.breaker(hostile, Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(b.state(), State::Open);
    let mut seen = String::new();
    let started = Instant::now();
    while !seen.contains("event: transition") || !seen.contains("\"to\":\"open\"") {
        assert!(started.elapsed() < Duration::from_secs(10), "no transition event: {seen}");
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    let data = seen.lines().find(|l| l.starts_with("data:") && l.contains("\"to\":\"open\"")).unwrap();
    let event: serde_json::Value = serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(event["name"], hostile, "the name travels as a JSON string");

    assert_eq!(listed(&c, hostile).await["state"], "open");
    let list = http(&c, "GET", "/api/breakers", None).await;
    assert_eq!(list.json()["breakers"][0]["name"], hostile);
    assert!(list.headers["content-type"].starts_with("application/json"), "never served as HTML");
    let one = http(&c, "GET", "/api/breakers/%3Cimg%2Fsrc%3Dx%3E", None).await;
    assert_eq!((one.status, one.json()["state"].as_str()), (200, Some("open")));
}

#[tokio::test]
async fn redis_down_answers_503_and_the_console_recovers() {
    let mut redis = private_redis().await;
    let c = console(&redis, Some(TOKEN), &[]);
    assert_eq!(http(&c, "GET", "/api/breakers", None).await.status, 200);
    redis.kill();
    let down = eventually(async || {
        let a = http(&c, "GET", "/api/breakers", None).await;
        if a.status == 503 { Ok(a) } else { Err(format!("{} {}", a.status, a.body)) }
    })
    .await;
    assert!(down.json()["error"].as_str().unwrap().contains("redis unreachable"), "{}", down.body);
    let m = http(&c, "GET", "/metrics", None).await;
    assert_eq!(m.status, 200, "the scrape is answered during the outage: {}", m.body);
    assert!(m.body.contains("\nredis_breaker_console_redis_up 0\n"), "{}", m.body);
    assert_eq!(http(&c, "GET", "/", None).await.status, 200, "the page itself is served");
    redis.restart();
    let started = Instant::now();
    loop {
        let a = http(&c, "GET", "/api/breakers", None).await;
        if a.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the console never recovered: {} {}", a.status, a.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn history_notes_and_flapping_alerts() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    let name = unique("con-flap");
    let flappy = Config::builder()
        .failure_threshold(1)
        .base_recovery(Duration::from_millis(10))
        .max_recovery(Duration::from_millis(10))
        .build()
        .unwrap();
    let b = client.breaker(&name, flappy).unwrap();
    // Seven opens: the first trip, then six failed probes.
    let mut opens = 0;
    while opens < 7 {
        match b.execute(|| async { Err::<(), _>("down") }).await {
            Err(redis_breaker::Error::Inner(_)) => opens += 1,
            _ => tokio::time::sleep(Duration::from_millis(12)).await,
        }
    }
    client.flush().await.unwrap();
    let c = console(&redis, Some(TOKEN), &["--alert-flaps", "5"]);
    let alerts = http(&c, "GET", "/api/alerts", None).await.json();
    let flapping: Vec<&serde_json::Value> =
        alerts["alerts"].as_array().unwrap().iter().filter(|a| a["kind"] == "flapping").collect();
    assert_eq!(flapping.len(), 1, "{alerts}");
    assert_eq!(flapping[0]["breaker"], name.as_str());
    assert!(flapping[0]["message"].as_str().unwrap().contains("opened 7 times in the last hour"), "{alerts}");

    let path = format!("/api/breakers/{name}/open?for=1m&note=deploy%204711%20rollback");
    assert_eq!(http(&c, "POST", &path, Some(TOKEN)).await.status, 200);
    let history = http(&c, "GET", &format!("/api/breakers/{name}/history"), None).await.json();
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries[0]["to"], "forced_open", "newest first");
    assert_eq!(entries[0]["note"], "deploy 4711 rollback");
    assert_eq!(entries.iter().filter(|e| e["to"] == "open").count(), 7, "every open is in the history");
    let bad = http(&c, "POST", &format!("/api/breakers/{name}/reset?note=a%0Ab"), Some(TOKEN)).await;
    assert_eq!(bad.status, 400, "a note on two lines: {}", bad.body);
    let quiet = console(&redis, None, &["--alert-flaps", "7"]);
    let alerts = http(&quiet, "GET", "/api/alerts", None).await.json();
    assert!(
        !alerts["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "flapping"),
        "7 opens are not more than 7"
    );
}

#[tokio::test]
async fn samples_feed_the_chart_and_processes_with_different_configs_raise_drift() {
    let redis = private_redis().await;
    let c = console(&redis, Some(TOKEN), &["--sample-every", "200ms"]);
    let name = unique("con-drift");
    let (one, two) = (library(&redis).await, library(&redis).await);
    let config = |recovery| Config::builder().failure_threshold(1).base_recovery(recovery).build().unwrap();
    let a = one.breaker(&name, config(Duration::from_secs(60))).unwrap();
    a.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    one.flush().await.unwrap();
    // The console samples on its shared read (once a second): one sample of that first call.
    eventually(async || {
        let s = http(&c, "GET", &format!("/api/breakers/{name}/samples"), None).await.json();
        if s["samples"][0]["calls"] == 1 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    for _ in 0..5 {
        a.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    }
    let _ = a.execute(|| async { Err::<(), _>("down") }).await;
    one.flush().await.unwrap();
    a.reset().await.unwrap();
    let b = two.breaker(&name, config(Duration::from_secs(90))).unwrap();
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(b.state(), State::Open);

    let started = Instant::now();
    let samples = loop {
        let s = http(&c, "GET", &format!("/api/breakers/{name}/samples"), None).await.json();
        let samples = s["samples"].as_array().unwrap().clone();
        if samples.last().is_some_and(|l| l["failures"] == 2) && samples.len() >= 3 {
            break samples;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "samples: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(samples[0]["calls"], 1, "the first sample: {samples:?}");
    let at: Vec<u64> = samples.iter().map(|s| s["at_ms"].as_u64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "oldest first: {at:?}");
    assert_eq!(http(&c, "GET", "/api/breakers/a%20b/samples", None).await.status, 400);

    let alerts = eventually(async || {
        let alerts = http(&c, "GET", "/api/alerts", None).await.json();
        let drifts = alerts["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "config_drift");
        if drifts { Ok(alerts) } else { Err(alerts.to_string()) }
    })
    .await;
    let drift: Vec<&serde_json::Value> =
        alerts["alerts"].as_array().unwrap().iter().filter(|a| a["kind"] == "config_drift").collect();
    assert_eq!(drift.len(), 1, "{alerts}");
    assert_eq!(drift[0]["breaker"], name.as_str());
    assert!(drift[0]["message"].as_str().unwrap().contains("2 configs"), "{alerts}");
    let history = a.history(10).await.unwrap();
    let configs: Vec<Option<&str>> = history.iter().map(|e| e.config.as_deref()).collect();
    assert_eq!(configs.len(), 3, "trip, reset, trip: {history:?}");
    assert_eq!(configs[1], None, "an operator's reset carries no config");
    assert_ne!(configs[0], configs[2], "each trip names its process's config");
}

#[tokio::test]
async fn a_breaker_open_longer_than_alert_open_raises_an_alert_and_a_gauge() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    let name = unique("con-long-open");
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(300)).build().unwrap();
    let b = client.breaker(&name, trips).unwrap();
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    assert_eq!(b.state(), State::Open);
    let c = console(&redis, None, &["--alert-open", "300ms"]);
    let alerts = eventually(async || {
        let alerts = http(&c, "GET", "/api/alerts", None).await.json();
        let long = alerts["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "open_too_long");
        if long { Ok(alerts) } else { Err(alerts.to_string()) }
    })
    .await;
    let long: Vec<&serde_json::Value> =
        alerts["alerts"].as_array().unwrap().iter().filter(|a| a["kind"] == "open_too_long").collect();
    assert_eq!(long.len(), 1, "{alerts}");
    assert!(long[0]["message"].as_str().unwrap().starts_with("open for "), "{alerts}");
    let m = http(&c, "GET", "/metrics", None).await;
    assert!(
        m.body.contains(&format!(r#"redis_breaker_console_alert{{breaker="{name}",kind="open_too_long"}} 1"#)),
        "{}",
        m.body
    );
}

const HOW_TO_GET_PROMTOOL: &str = "promtool is not installed: this test parses a scrape of /metrics with \
    Prometheus's own parser, `promtool check metrics`. Install it (Debian/Ubuntu: `apt-get install -y \
    prometheus`; elsewhere: promtool from https://prometheus.io/download/ on PATH) and run the test again";

/// Prometheus's own parser over `text` (`promtool check metrics`); fails, saying how to install
/// it, when promtool is missing. promtool reads the classic text format, in which an
/// OpenMetrics counter's `# HELP` (naming the family without `_total`) does not name its
/// samples: its lint finding "no help text" on those counters is no error; any other finding,
/// and any parse error, is.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{HOW_TO_GET_PROMTOOL}"),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().expect("promtool's stdin").write_all(text.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool's verdict");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tolerated =
        |l: &str| l.strip_suffix("_total no help text").is_some_and(|family| family.starts_with("redis_breaker_"));
    let lint_only = out.status.code() == Some(3) && said.lines().filter(|l| !l.trim().is_empty()).all(tolerated);
    assert!(
        out.status.success() || lint_only,
        "promtool check metrics refused the scrape (status {:?}): {said}\n--- the scrape:\n{text}",
        out.status.code()
    );
}

/// One sample of an exposition: the metric, its labels (values unescaped), its value.
type Sample = (String, Vec<(String, String)>, String);

/// The samples of an OpenMetrics text, label values unescaped as the format says (`\\`, `\"`,
/// `\n`). A line this reader cannot take whole fails the test.
fn exposition_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let bad = || -> ! { panic!("not a sample line: {line:?}") };
        let (name, mut rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => bad(),
        };
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.chars();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                if chars.next() != Some('"') {
                    bad();
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => bad(),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => bad(),
                    }
                }
                labels.push((key, value));
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => bad(),
                }
            }
            rest = chars.as_str();
        }
        let value = rest.strip_prefix(' ').filter(|v| !v.is_empty() && !v.contains(' ')).unwrap_or_else(|| bad());
        out.push((name.to_string(), labels, value.to_string()));
    }
    out
}

/// Breaker names may hold `"` and `\`: each label value in /metrics is escaped as OpenMetrics
/// requires, so a name neither adds a label nor breaks the exposition. Prometheus's parser
/// (`promtool check metrics`) takes the whole scrape, and each name comes back as it was.
#[tokio::test]
async fn metrics_escape_hostile_names_and_promtool_parses_the_scrape() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    let hostile = [r#"pay",state="open"#, r"x\", r#"a\"b"#, r"q\n", r#"""#, r"\\", r#"z"="\"#];
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(300)).build().unwrap();
    for name in hostile {
        let b = client.breaker(name, trips.clone()).unwrap();
        let _ = b.execute(|| async { Err::<(), _>("down") }).await;
        b.force_open(None).await.unwrap();
    }
    let healthy = unique("con-plain");
    client.breaker(&healthy, Config::default()).unwrap().execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    client.flush().await.unwrap();
    let c = console(&redis, None, &[]);

    let m = http(&c, "GET", "/metrics", None).await;
    assert_eq!(m.status, 200, "{}", m.body);
    promtool_check(&m.body);
    let samples = exposition_samples(&m.body);
    for name in hostile.iter().copied().chain([healthy.as_str()]) {
        let mut states: Vec<(String, String)> = samples
            .iter()
            .filter(|(metric, labels, _)| {
                metric == "redis_breaker_fleet_state" && labels[0] == ("breaker".into(), name.into())
            })
            .map(|(_, labels, value)| {
                assert_eq!(labels.len(), 2, "breaker and state only: {labels:?}");
                assert_eq!(labels[1].0, "state", "{labels:?}");
                (labels[1].1.clone(), value.clone())
            })
            .collect();
        states.sort();
        let open = if name == healthy { "0" } else { "1" };
        let closed = if name == healthy { "1" } else { "0" };
        assert_eq!(
            states,
            [("closed", closed), ("forced_closed", "0"), ("forced_open", open), ("half_open", "0"), ("open", "0")]
                .map(|(s, v)| (s.to_string(), v.to_string())),
            "{name:?}: its five state series:\n{}",
            m.body
        );
        let calls: Vec<&Sample> = samples
            .iter()
            .filter(|(metric, labels, _)| metric == "redis_breaker_fleet_calls_total" && labels[0].1 == name)
            .collect();
        let outcomes: Vec<&str> = calls.iter().map(|(_, labels, _)| labels[1].1.as_str()).collect();
        assert_eq!(outcomes.len(), 3, "{name:?}: its calls by outcome:\n{}", m.body);
        assert!(outcomes.contains(&"success") && outcomes.contains(&"failure") && outcomes.contains(&"timeout"));
        assert!(calls.iter().all(|(_, labels, _)| labels.len() == 2 && labels[1].0 == "outcome"), "{calls:?}");
        if name != healthy {
            let alert = samples
                .iter()
                .find(|(metric, labels, _)| metric == "redis_breaker_console_alert" && labels[0].1 == name);
            assert_eq!(
                alert.map(|(_, labels, v)| (labels[1].clone(), v.as_str())),
                Some((("kind".into(), "forced_without_end".into()), "1")),
                "{name:?}: its alert:\n{}",
                m.body
            );
        }
    }
    let breakers = samples.iter().find(|(metric, ..)| metric == "redis_breaker_console_breakers").unwrap();
    assert_eq!(breakers.2, (hostile.len() + 1).to_string());
}

/// A key under the prefix whose name cannot be a breaker (a space, a brace, empty, not ASCII,
/// not UTF-8, too long) is skipped, logged once per name and counted; every other breaker is
/// still listed, scraped and alerted on.
#[tokio::test]
async fn keys_whose_name_cannot_be_a_breaker_are_skipped_logged_once_and_counted() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    let good = unique("con-good");
    client.breaker(&good, Config::default()).unwrap().force_open(None).await.unwrap();
    let long = "n".repeat(201);
    let bad_keys: Vec<Vec<u8>> = vec![
        b"breaker:{a b}:metrics".to_vec(),
        b"breaker:{a}b}:state".to_vec(),
        b"breaker:{}:metrics".to_vec(),
        "breaker:{café}:state".as_bytes().to_vec(),
        b"breaker:{\xff\xfe}:metrics".to_vec(),
        format!("breaker:{{{long}}}:metrics").into_bytes(),
    ];
    let mut conn = redis.conn().await;
    for k in &bad_keys {
        redis::cmd("HSET").arg(k).arg("calls").arg(1).query_async::<()>(&mut conn).await.unwrap();
    }
    let c = console(&redis, None, &["-v"]);

    for _ in 0..2 {
        let list = http(&c, "GET", "/api/breakers", None).await;
        assert_eq!(list.status, 200, "{}", list.body);
        let list = list.json();
        let names: Vec<&str> =
            list["breakers"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec![good.as_str()], "{list}");
        assert_eq!(list["skipped"], 6, "{list}");
        let skipped = list["skipped_names"].as_array().unwrap();
        assert!(skipped.iter().any(|n| n == "a b") && skipped.iter().any(|n| n == "café"), "{list}");
    }
    let m = http(&c, "GET", "/metrics", None).await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(
        m.body.contains(&format!(r#"redis_breaker_fleet_state{{breaker="{good}",state="forced_open"}} 1"#)),
        "{}",
        m.body
    );
    assert!(m.body.contains("\nredis_breaker_console_skipped_names 6\n"), "{}", m.body);
    assert!(m.body.contains("\nredis_breaker_console_breakers 1\n"), "{}", m.body);
    let alerts = http(&c, "GET", "/api/alerts", None).await;
    assert_eq!(alerts.status, 200, "{}", alerts.body);
    let alerts = alerts.json();
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["breaker"] == good.as_str() && a["kind"] == "forced_without_end"),
        "{alerts}"
    );

    // Once per name, however often the console lists.
    let started = Instant::now();
    let said = loop {
        let said: Vec<String> = c.logs().into_iter().filter(|l| l.contains("cannot be a breaker")).collect();
        if said.len() >= 6 || started.elapsed() > Duration::from_secs(5) {
            break said;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(said.len(), 6, "{said:#?}");
    assert!(said.iter().any(|l| l.contains(r#""a b""#)), "{said:#?}");
}

/// DNS rebinding: a page of another origin whose name resolves to 127.0.0.1 reaches the
/// console with its own Host. On loopback only loopback Host values are answered; any other
/// gets 421 Misdirected Request on every route, before anything is read or written;
/// `--allowed-host` lets a name through; HTTP/1.1 without a Host is a 400.
#[tokio::test]
async fn only_loopback_or_allowed_host_values_are_answered() {
    let redis = private_redis().await;
    let c = console(&redis, Some(TOKEN), &[]);
    let port = c.port;
    let with_host = |method: &str, path: &str, host: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
    };
    for host in [
        "127.0.0.1".to_string(),
        format!("127.0.0.1:{port}"),
        "localhost".into(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        "[::1]".into(),
        format!("[::1]:{port}"),
    ] {
        let a = raw_request(&c, &with_host("GET", "/api/breakers", &host)).await;
        assert_eq!(a.status, 200, "Host: {host}: {}", a.body);
    }
    let name = unique("con-rebind");
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "localhost.evil.example".into(),
        "127.0.0.2".into(),
        "0.0.0.0".into(),
        "[::2]".into(),
        format!("127.0.0.1:{port}@evil.example"),
        "localhost:http".into(),
    ] {
        for (method, path) in [
            ("GET", "/api/breakers".to_string()),
            ("GET", "/metrics".into()),
            ("GET", "/".into()),
            ("GET", "/api/events".into()),
            ("GET", "/no/such/route".into()),
            ("POST", format!("/api/breakers/{name}/open")),
        ] {
            let a = raw_request(&c, &with_host(method, &path, &host)).await;
            assert_eq!(a.status, 421, "Host: {host}, {method} {path}: {}", a.body);
            assert!(a.json()["error"].as_str().unwrap().contains("Host"), "{}", a.body);
        }
    }
    assert!(state_hash(&redis, &name).await.is_empty(), "nothing written");
    // The authority of an absolute-form request names the host as well.
    let absolute =
        format!("GET http://evil.example:{port}/api/breakers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_request(&c, &absolute).await.status, 421);
    // No Host on HTTP/1.1, or two of them: 400.
    let missing = raw_request(&c, "GET /api/breakers HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(missing.status, 400, "{}", missing.body);
    let two = "GET /api/breakers HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(&c, two).await.status, 400);
    drop(c);

    let c = console(&redis, None, &["--allowed-host", "console.example.com", "--allowed-host", "Ops.Example:8443"]);
    for (host, status) in [
        ("console.example.com", 200),
        ("CONSOLE.example.com:9999", 200),
        ("ops.example:8443", 200),
        ("ops.example:8444", 421),
        ("ops.example", 421),
        ("evil.example", 421),
        ("127.0.0.1", 200),
    ] {
        let a = raw_request(&c, &with_host("GET", "/api/breakers", host)).await;
        assert_eq!(a.status, status, "Host: {host}: {}", a.body);
    }
    let help = Command::new(env!("CARGO_BIN_EXE_redis-breaker")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--allowed-host") && help.contains("421 Misdirected Request"), "{help}");
}

/// Issue 22, item 3: a console whose Redis user may not publish on the events channel (Redis 7's
/// `acl-pubsub-default resetchannels`). Where the server tells ahead (>= 7.0) a write that would
/// make a transition is refused: 403 with the message (what to grant), nothing written. Before
/// 7.0 the write is made: 200 with the status (`announced` false) and a `warning` for the page.
/// Granted the channel, writes are announced and carry no warning.
#[tokio::test]
async fn a_write_redis_would_not_announce_is_refused_with_403_or_answered_with_a_warning() {
    let redis = private_redis().await;
    let acl = async |rules: &[&str]| {
        let _: () =
            redis::cmd("ACL").arg("SETUSER").arg("ops").arg(rules).query_async(&mut redis.conn().await).await.unwrap();
    };
    acl(&["reset", "on", "nopass", "~*", "resetchannels", "+@all"]).await;
    let ops_url = redis.url.replacen("redis://", "redis://ops:x@", 1);
    let c = console(&redis, Some(TOKEN), &["--url", &ops_url]);
    let name = unique("con-unannounced");
    let path = format!("/api/breakers/{name}/open?for=1m");
    let a = http(&c, "POST", &path, Some(TOKEN)).await;
    if redis.version().await >= (7, 0) {
        assert_eq!(a.status, 403, "{}", a.body);
        let said = a.json()["error"].as_str().unwrap().to_string();
        assert!(
            said.starts_with("the redis user may not publish on breaker:events")
                && said.contains("nothing was written; grant it &breaker:events (and +publish) in its ACL"),
            "{said}"
        );
        assert!(state_hash(&redis, &name).await.is_empty(), "nothing written");
    } else {
        assert_eq!(a.status, 200, "{}", a.body);
        let body = a.json();
        assert_eq!((&body["state"], &body["announced"]), (&"forced_open".into(), &false.into()), "{body}");
        let warning = body["warning"].as_str().unwrap_or_else(|| panic!("a warning: {body}"));
        assert!(warning.contains(&name) && warning.contains("not published"), "{warning}");
        assert_eq!(state_hash(&redis, &name).await["state"], "forced_open");
    }

    acl(&["&breaker:events"]).await;
    let a = http(&c, "POST", &path, Some(TOKEN)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((&a.json()["announced"], a.json().get("warning")), (&true.into(), None), "{}", a.body);
}

/// Sends SIGTERM to the console and waits (a generous minute at most) for its exit status.
async fn terminate(c: &mut Console) -> std::process::ExitStatus {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = c.child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the console did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client that sent half a request and waits keeps its connection open; SIGTERM still stops
/// the console (the graceful shutdown is bounded), with status 0.
#[tokio::test]
async fn sigterm_stops_the_console_while_a_connection_holds_half_a_request() {
    let redis = private_redis().await;
    let mut c = console(&redis, None, &["-v"]);
    assert_eq!(http(&c, "GET", "/healthz", None).await.status, 200);
    let mut half = tokio::net::TcpStream::connect(("127.0.0.1", c.port)).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    // The console has accepted it once another connection is answered after it.
    assert_eq!(http(&c, "GET", "/healthz", None).await.status, 200);
    let status = terminate(&mut c).await;
    assert_eq!(status.code(), Some(0), "{status:?}: {:#?}", c.logs());
    drop(half);
}

/// A name or a note with a line feed in a request is logged escaped: it cannot forge a log
/// line, with the token or without it.
#[tokio::test]
async fn names_and_notes_from_requests_cannot_forge_log_lines() {
    let redis = private_redis().await;
    let good = unique("con-log");
    let c = console(&redis, Some(TOKEN), &["-v"]);
    let refused = http(&c, "POST", "/api/breakers/x%0AFORGED%20console%20write/open", None).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let bad = http(&c, "POST", "/api/breakers/x%0AFORGED%20bad%20name/open", Some(TOKEN)).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let path = format!("/api/breakers/{good}/open?note=n%0AFORGED%20note");
    let refused = http(&c, "POST", &path, Some(TOKEN)).await;
    assert_eq!(refused.status, 400, "the library takes a note on one line: {}", refused.body);
    let path = format!("/api/breakers/{good}/open?note=maintenance");
    let written = http(&c, "POST", &path, Some(TOKEN)).await;
    assert_eq!(written.status, 200, "{}", written.body);
    let logs = eventually(async || {
        let logs = c.logs();
        let said = |what: &str| logs.iter().any(|l| l.contains(what));
        if said("without the right token") && said("console write") { Ok(logs) } else { Err(format!("{logs:#?}")) }
    })
    .await;
    assert!(!logs.iter().any(|l| l.trim_start().starts_with("FORGED")), "{logs:#?}");
}

/// A breaker whose read fails for a reason other than an outage (here the console's Redis
/// user may not read its keys: NOPERM) is skipped and named; every other breaker is still
/// served, and the console stays ready.
#[tokio::test]
async fn a_breaker_whose_read_fails_is_skipped_not_an_outage() {
    let redis = private_redis().await;
    let client = library(&redis).await;
    let good = unique("con-good");
    let bad = unique("con-denied");
    client.breaker(&good, Config::default()).unwrap().force_open(None).await.unwrap();
    client.breaker(&bad, Config::default()).unwrap().force_open(None).await.unwrap();
    let rules = ["reset", "on", "nopass", "~breaker:{con-good*", "allchannels", "+@all"];
    let _: () =
        redis::cmd("ACL").arg("SETUSER").arg("ops").arg(&rules[..]).query_async(&mut redis.conn().await).await.unwrap();
    let ops_url = redis.url.replacen("redis://", "redis://ops:x@", 1);
    let c = console(&redis, None, &["-v", "--url", &ops_url]);
    let list = eventually(async || {
        let list = http(&c, "GET", "/api/breakers", None).await;
        if list.status != 200 {
            return Err(format!("{} {}", list.status, list.body));
        }
        Ok(list.json())
    })
    .await;
    let names: Vec<&str> = list["breakers"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![good.as_str()], "{list}");
    assert!(list["skipped_names"].as_array().unwrap().iter().any(|n| n == bad.as_str()), "{list}");
    let ready = http(&c, "GET", "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let m = http(&c, "GET", "/metrics", None).await;
    assert!(m.body.contains("\nredis_breaker_console_redis_up 1\n"), "{}", m.body);
    eventually(async || {
        let logs = c.logs();
        if logs.iter().any(|l| l.contains("skipped") && l.contains(&bad)) { Ok(()) } else { Err(format!("{logs:#?}")) }
    })
    .await;
}

/// The time on Redis's clock (ms since the Unix epoch).
async fn redis_now_ms(redis: &TestRedis) -> u64 {
    let mut conn = redis.conn().await;
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    s * 1000 + us / 1000
}

/// A breaker that opened long ago and is half-open now (a probe is out) has not closed: it
/// is open too long, as the contrib rule RedisBreakerOpenTooLong says.
#[tokio::test]
async fn a_half_open_breaker_that_opened_long_ago_is_open_too_long() {
    let redis = private_redis().await;
    let name = unique("con-halfopen");
    let now = redis_now_ms(&redis).await;
    let mut conn = redis.conn().await;
    redis::cmd("HSET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg("state")
        .arg("half_open")
        .arg("epoch")
        .arg(3)
        .arg("incarnation")
        .arg(1)
        .arg("opened_at")
        .arg(now - 600_000)
        .arg("changed_at")
        .arg(now)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let c = console(&redis, None, &["--alert-open", "1m"]);
    eventually(async || {
        let alerts = http(&c, "GET", "/api/alerts", None).await.json();
        let held = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["breaker"] == name.as_str() && a["kind"] == "open_too_long");
        if held { Ok(()) } else { Err(alerts.to_string()) }
    })
    .await;
}

/// Counters reset (the metrics hash recreated: its `since` changes) while they went up: the
/// 5-minute rate counts from the reset, not from the sample before it.
#[tokio::test]
async fn the_failure_rate_counts_from_a_reset_of_the_metrics() {
    let redis = private_redis().await;
    let name = unique("con-reset");
    let key = format!("breaker:{{{name}}}:metrics");
    let set = async |calls: u64, failures: u64, since: u64| {
        let mut conn = redis.conn().await;
        let fields = [("calls", calls), ("failures", failures), ("since", since)];
        redis::cmd("HSET").arg(&key).arg(&fields[..]).query_async::<()>(&mut conn).await.unwrap();
    };
    set(100, 0, 1_000).await;
    let c = console(&redis, None, &["--sample-every", "1s"]);
    let path = format!("/api/breakers/{name}/samples");
    eventually(async || {
        let s = http(&c, "GET", &path, None).await.json();
        if s["samples"].as_array().is_some_and(|s| !s.is_empty()) { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    set(200, 150, 2_000).await;
    eventually(async || {
        let row = listed(&c, &name).await;
        let r = &row["failure_rate_5m"];
        if r["calls"] == 200 && r["failures"] == 150 { Ok(()) } else { Err(row.to_string()) }
    })
    .await;
}

/// A scrape does not wait for the console's first read of Redis (Prometheus's default scrape
/// timeout is 10 s): against a "Redis" that accepts and never answers, `/metrics` answers with
/// `redis_up 0` and no fleet series while `/readyz`, asked first, still waits for that read.
#[tokio::test]
async fn a_scrape_does_not_wait_for_the_first_read() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-breaker"));
    cmd.env("REDIS_URL", &url).env_remove("REDIS_BREAKER_TOKEN").env_remove("REDIS_BREAKER_PREFIX");
    // The read never fails by its deadline while the test runs: it waits on Redis.
    cmd.args(["--timeout", "1h", "serve", "--listen", "127.0.0.1:0"]);
    let c = spawn_console(cmd);
    let ready = http(&c, "GET", "/readyz", None);
    let scrape = async {
        // Asked after /readyz.
        tokio::time::sleep(Duration::from_millis(200)).await;
        http(&c, "GET", "/metrics", None).await
    };
    tokio::pin!(ready);
    let m = tokio::select! {
        biased;
        r = &mut ready => panic!("/readyz answered before the scrape: {} {}", r.status, r.body),
        m = scrape => m,
    };
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.body.contains("\nredis_breaker_console_redis_up 0\n"), "{}", m.body);
    assert!(!m.body.contains("redis_breaker_fleet_state{"), "{}", m.body);
    let r = ready.await;
    assert_eq!(r.status, 503, "{}", r.body);
}
