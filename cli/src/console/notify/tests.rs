use super::delivery::{BACKOFF_MAX, backoff, deliver, retryable};
use super::document::slack;
use super::follow::{SEEN, Transition};
use super::*;
use hyper::StatusCode;
use redis_breaker::State;
use tokio::time::Instant;

#[test]
fn urls_are_checked_and_shown_without_path_or_query() {
    let r = Receiver::parse("https://hooks.example.com/services/T000/B000/SECRET?x=1").unwrap();
    assert!(r.tls);
    assert_eq!((r.host.as_str(), r.port), ("hooks.example.com", 443));
    assert_eq!(r.target, "/services/T000/B000/SECRET?x=1");
    assert_eq!(r.shown, "https://hooks.example.com:443");
    let r = Receiver::parse("http://[::1]:8080").unwrap();
    assert_eq!((r.host.as_str(), r.port, r.target.as_str(), r.shown.as_str()), ("::1", 8080, "/", "http://[::1]:8080"));
    for (bad, why) in [
        ("ftp://example.com/SECRET", "not an http:// or https:// URL"),
        ("hooks.example.com/SECRET", "not an http:// or https:// URL"),
        ("https://user:SECRET@example.com/", "a user or password"),
        ("http://example.com:0/SECRET", "port is 0"),
        ("http://exa mple.com/SECRET", "not an http:// or https:// URL"),
    ] {
        let e = Receiver::parse(bad).err().unwrap_or_else(|| panic!("{bad} is refused"));
        assert!(e.contains(why), "{bad}: {e}");
        assert!(!e.contains("SECRET"), "{bad}: {e}");
    }
}

fn args(urls: &[&str]) -> NotifyArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        notify: NotifyArgs,
    }
    let mut argv = vec!["serve"];
    for u in urls {
        argv.extend(["--notify", u]);
    }
    Serve::try_parse_from(argv).unwrap().notify
}

#[tokio::test]
async fn blank_urls_name_no_receiver_and_a_bad_one_is_a_usage_error() {
    let client = Client::in_memory();
    let (_stop, shutdown) = watch::channel(false);
    let none = Notifier::start(&args(&["", "  "]), &client, shutdown.clone());
    assert!(matches!(none, Ok(None)));
    match Notifier::start(&args(&["", "http://127.0.0.1:9/a", "gopher://x/SECRET"]), &client, shutdown) {
        Err(crate::Failure::Usage(why)) => {
            assert!(why.starts_with("--notify URL #2: not an http") && !why.contains("SECRET"), "{why}");
        }
        _ => panic!("a usage error"),
    }
}

#[test]
fn slack_text_cannot_mention_or_link() {
    assert_eq!(slack("<!channel>&<https://evil|x>\nnext"), "&lt;!channel&gt;&amp;&lt;https://evil|x&gt; next");
}

#[test]
fn retries_on_the_statuses_that_may_pass_later() {
    for s in [500, 502, 503, 429, 408] {
        assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
    }
    for s in [400, 401, 403, 404, 410, 301] {
        assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
    }
}

#[test]
fn backoff_doubles_with_jitter_and_a_cap() {
    let base = Duration::from_secs(1);
    for after in 1..=3u32 {
        let full = base * (1 << (after - 1));
        let b = backoff(base, after);
        assert!(b >= full / 2 && b <= full, "{after}: {b:?}");
    }
    assert!(backoff(base, 40) <= BACKOFF_MAX);
}

fn transition(name: &str, epoch: u64, to: State) -> Transition {
    Transition {
        name: name.into(),
        from: Some(State::Closed),
        to,
        reason: "test".into(),
        epoch,
        incarnation: 7,
        origin: None,
    }
}

#[test]
fn each_fleet_transition_passes_once() {
    let mut seen = Seen::default();
    assert!(seen.first(&transition("a", 1, State::Open)));
    assert!(!seen.first(&transition("a", 1, State::Open)), "the same transition heard twice");
    assert!(seen.first(&transition("a", 2, State::HalfOpen)));
    assert!(seen.first(&transition("b", 1, State::Open)));
    for epoch in 10..10 + SEEN as u64 {
        seen.first(&transition("c", epoch, State::Open));
    }
    assert_eq!(seen.set.len(), SEEN, "bounded");
}

#[test]
fn a_flapping_breaker_sends_once_per_interval_then_its_last_state() {
    let counters = Counters::default();
    let mut gate = Gate::new(Duration::from_secs(10));
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let sent = gate.admit(transition("a", 1, State::Open), at(0), &counters).expect("the first is sent");
    assert_eq!(sent.suppressed, 0);
    assert!(gate.admit(transition("b", 1, State::Open), at(1), &counters).is_some(), "per breaker");
    assert!(gate.admit(transition("a", 2, State::HalfOpen), at(1), &counters).is_none());
    assert!(gate.admit(transition("a", 3, State::Closed), at(2), &counters).is_none());
    assert_eq!(counters.suppressed.get(), 1, "the half-open was replaced by the close");
    assert_eq!(gate.next_due(), Some(at(10)));
    assert!(gate.flush(at(5)).is_empty());
    let last = gate.flush(at(10));
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].event.epoch, last[0].suppressed), (3, 1), "the last state, and how many were not sent");
    assert_eq!(gate.next_due(), None);
    assert!(gate.admit(transition("a", 4, State::Open), at(15), &counters).is_none(), "a new interval");
    let after = gate.admit(transition("a", 5, State::HalfOpen), at(21), &counters).expect("due");
    assert_eq!((after.event.epoch, after.suppressed), (5, 1));
    assert_eq!(counters.suppressed.get(), 2);
    let mut off = Gate::new(Duration::ZERO);
    for epoch in 1..5 {
        assert!(off.admit(transition("a", epoch, State::Open), at(0), &counters).is_some());
    }
}

fn notifier(queue: usize) -> (Notifier, mpsc::Receiver<Bytes>) {
    let (tx, rx) = mpsc::channel(queue);
    let n = Notifier {
        queues: vec![tx].into(),
        counters: Counters::default(),
        held: Mutex::new(HashMap::new()),
        prefix: "breaker".into(),
        filter: Arc::default(),
        tasks: Mutex::new(Vec::new()),
        states: Mutex::new(None),
        found: mpsc::unbounded_channel().0,
    };
    (n, rx)
}

fn alert(breaker: &str, kind: &'static str) -> Alert {
    Alert { breaker: breaker.into(), kind, message: format!("{kind} on {breaker}") }
}

fn docs(rx: &mut mpsc::Receiver<Bytes>) -> Vec<serde_json::Value> {
    std::iter::from_fn(|| rx.try_recv().ok()).map(|b| serde_json::from_slice(&b).unwrap()).collect()
}

#[test]
fn alerts_are_sent_when_raised_and_when_cleared_only() {
    let (n, mut rx) = notifier(10);
    n.alerts(&[alert("a", "flapping")]);
    n.alerts(&[alert("a", "flapping")]);
    n.alerts(&[alert("a", "flapping"), alert("<!here>", "open_too_long")]);
    n.alerts(&[alert("<!here>", "open_too_long")]);
    let got: Vec<(String, String, String)> = docs(&mut rx)
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().into(),
                d["breaker"].as_str().unwrap().into(),
                d["alert"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("alert_raised", "a", "flapping"),
        ("alert_raised", "<!here>", "open_too_long"),
        ("alert_cleared", "a", "flapping"),
    ];
    assert_eq!(got, want.map(|(k, b, a)| (k.to_string(), b.to_string(), a.to_string())));
    n.alerts(&[]);
    let cleared = docs(&mut rx);
    assert_eq!(cleared[0]["text"], "redis-breaker: alert open_too_long on &lt;!here&gt; cleared");
    assert_eq!(cleared[0]["message"], "open_too_long on <!here>", "the fields are the facts, unescaped");
}

#[test]
fn a_full_queue_drops_and_counts() {
    let (n, mut rx) = notifier(2);
    n.alerts(&[alert("a", "flapping"), alert("b", "flapping"), alert("c", "flapping")]);
    assert_eq!((docs(&mut rx).len(), n.counters.dropped.get()), (2, 1));
}

/// A loopback receiver that answers each connection with the next status of `statuses`
/// (the last one repeated; 0 = accept and never answer), counting the requests.
async fn receiver(statuses: Vec<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/SECRET", listener.local_addr().unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let i = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let status = statuses[i.min(statuses.len() - 1)];
            tokio::spawn(async move {
                let mut buf = vec![0; 65536];
                let _ = s.read(&mut buf).await;
                if status == 0 {
                    return std::future::pending::<()>().await;
                }
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, count)
}

/// `timeout`: generous where a timeout is not what is tested (a slow loopback answer must not
/// become an extra attempt).
fn delivery(attempts: u32, timeout: Duration) -> Delivery {
    Delivery { attempts, timeout, backoff: Duration::from_millis(10), tls: None }
}

#[tokio::test]
async fn delivery_retries_then_succeeds_gives_up_after_n_and_not_on_a_4xx() {
    for (statuses, attempts, (sent, failed, retries), tried) in [
        (vec![500, 503, 200], 5, (1, 0, 2), 3),
        (vec![500], 3, (0, 1, 2), 3),
        (vec![429, 200], 2, (1, 0, 1), 2),
        (vec![404], 5, (0, 1, 0), 1),
        (vec![0], 2, (0, 1, 1), 2),
    ] {
        let (url, count) = receiver(statuses.clone()).await;
        let counters = Counters::default();
        // A receiver that never answers (0) is the one case where the timeout is tested.
        let timeout = if statuses == [0] { Duration::from_millis(300) } else { Duration::from_secs(5) };
        deliver(&Receiver::parse(&url).unwrap(), Bytes::from_static(b"{}"), &delivery(attempts, timeout), &counters)
            .await;
        let got = (counters.sent.get(), counters.failed.get(), counters.retries.get());
        assert_eq!(got, (sent, failed, retries), "{statuses:?}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), tried, "{statuses:?}");
    }
}
