//! Transitions reach every process at once through `<prefix>:events`.

use crate::support::*;
use redis_breaker::{Client, ClientConfig, Config, Error, State};
use std::time::{Duration, Instant};

async fn wait_for_state(b: &redis_breaker::Breaker, want: State) -> Duration {
    let start = Instant::now();
    while b.state() != want {
        assert!(start.elapsed() < Duration::from_secs(5), "{} never became {want}", b.name());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_trip_in_one_client_reaches_another_before_its_snapshot_expires() {
    let redis = private_redis().await;
    let name = unique("propagate");
    let config = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(30)).build().unwrap();
    let a = client(&redis, Duration::from_secs(60)).await.breaker(&name, config.clone()).unwrap();
    let quiet = Duration::from_secs(600); // no background flush between the command counts
    let b = client_flushing_every(&redis, Duration::from_secs(60), quiet).await.breaker(&name, config).unwrap();
    breaker_subscribed(&b).await;
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
    let mut events = b.subscribe();

    fail(&a).await.unwrap_err();
    wait_for_state(&b, State::Open).await;
    let evalsha = redis.script_calls().await;
    match succeed(&b).await {
        Err(Error::Rejected(r)) if r.state == State::Open && r.retry_after().is_some() => {
            assert!(r.retry_after().unwrap() > Duration::from_secs(20))
        }
        other => panic!("expected a rejection from the event's snapshot, got {other:?}"),
    }
    assert_eq!(redis.script_calls().await, evalsha, "the rejection came from the snapshot the event set");

    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!((e.name.as_str(), e.from, e.to), (name.as_str(), Some(State::Closed), State::Open));
    assert_eq!(e.reason, "1 consecutive failures");
    assert!(e.retry_after.unwrap() > Duration::from_secs(20));
    assert_eq!(e.epoch, 1);

    a.reset().await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!((e.from, e.to, e.epoch), (Some(State::Open), State::Closed, 2));
    wait_for_state(&b, State::Closed).await;
    succeed(&b).await.unwrap();
}

#[tokio::test]
async fn events_are_published_as_json_on_the_prefix_channel() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("json");
    let b = client.breaker(&name, Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    let mut pubsub = redis::Client::open(redis.url.as_str()).unwrap().get_async_pubsub().await.unwrap();
    pubsub.subscribe("breaker:events").await.unwrap();
    fail(&b).await.unwrap_err();
    let mut stream = pubsub.on_message();
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
        if v["name"] != name.as_str() {
            continue;
        }
        assert_eq!(v["from"], "closed");
        assert_eq!(v["to"], "open");
        assert_eq!(v["epoch"], 1);
        assert!(v["retry_after_ms"].as_i64().unwrap() > 20_000);
        assert!(v["incarnation"].as_u64().unwrap() > 1_000_000_000_000_000, "µs since the epoch");
        assert_eq!(v["reason"], "1 consecutive failures");
        break;
    }
}

#[tokio::test]
async fn the_in_memory_client_hands_its_transitions_to_subscribers() {
    let client = Client::in_memory();
    let b = client.breaker("local-events", Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    let mut events = b.subscribe();
    fail(&b).await.unwrap_err();
    b.force_close(None).await.unwrap();
    let first = events.recv().await.unwrap();
    assert_eq!((first.from, first.to), (Some(State::Closed), State::Open));
    let second = events.recv().await.unwrap();
    assert_eq!((second.from, second.to, second.retry_after), (Some(State::Open), State::ForcedClosed, None));
}

/// Every instance of a fleet sees each transition; exactly one of them is told it caused it, so
/// alerting from `subscribe()` in every instance pages once.
#[tokio::test]
async fn each_event_says_whether_this_process_caused_it() {
    let redis = redis().await;
    let name = unique("origin");
    let config = Config::builder().failure_threshold(1).build().unwrap();
    let (ca, cb) = (client(&redis, Duration::from_secs(1)).await, client(&redis, Duration::from_secs(1)).await);
    assert_ne!(ca.id(), cb.id(), "each client has its own id");
    let (a, b) = (ca.breaker(&name, config.clone()).unwrap(), cb.breaker(&name, config).unwrap());
    breaker_subscribed(&a).await;
    breaker_subscribed(&b).await;
    let (mut ea, mut eb) = (a.subscribe(), b.subscribe());
    fail(&a).await.unwrap_err();
    let got_a = tokio::time::timeout(Duration::from_secs(5), ea.recv()).await.unwrap().unwrap();
    let got_b = tokio::time::timeout(Duration::from_secs(5), eb.recv()).await.unwrap().unwrap();
    assert_eq!((got_a.to, got_b.to), (State::Open, State::Open));
    assert!(got_a.caused_here, "the process whose failure tripped it caused it");
    assert!(!got_b.caused_here, "the other process only saw it");
    assert_eq!(got_b.origin.as_deref(), Some(ca.id()), "the event names the client that caused it");
    assert_eq!(a.health().await.unwrap().client_id, ca.id());
}

/// Every transition is logged once per process, at warn when the breaker opens, with the facts
/// as fields.
#[tokio::test]
async fn a_transition_is_logged_once_with_its_fields() {
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // A global subscriber (the only one this test binary sets): a thread-local default would
    // race the callsite interest cached by the other tests of this binary running beside it.
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    let capture = CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
            capture
        })
        .clone();

    let redis = redis().await;
    let name = unique("logged");
    let c = client(&redis, Duration::from_secs(1)).await;
    let b = c.breaker(&name, Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    breaker_subscribed(&b).await;
    let mut events = b.subscribe();
    fail(&b).await.unwrap_err();
    tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("breaker opened") && l.contains(&name)).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    assert!(line.contains("WARN"), "{line}");
    for field in ["from=", "to=", "reason=", "epoch=1", "retry_after_ms=", "caused_here=true"] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(!line.contains("redis-breaker:"), "no prefix in the message: {line}");
}

/// Issue 22, item 3: a process whose Redis user may not PUBLISH trips the breaker by its own
/// failures: the trip is written and not announced; every process that reads that state (the
/// tripping one, a subscribed one) trusts it for `cache_ttl` only.
#[tokio::test]
async fn a_trip_by_a_process_that_may_not_publish_is_trusted_for_the_short_bound() {
    let redis = private_redis().await;
    let name = unique("unannounced-trip");
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "mute", "reset", "on", "nopass", "~*", "&*", "+@all", "-publish"])
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let config = Config::builder().failure_threshold(2).base_recovery(Duration::from_secs(60)).build().unwrap();
    let cache_ttl = Duration::from_millis(300);
    let client_config = || {
        redis_breaker::ClientConfig::builder()
            .cache_ttl(cache_ttl)
            .subscribed_cache_ttl(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let mute_url = redis.url.replacen("redis://", "redis://mute:x@", 1);
    let mute = Client::connect_with(&mute_url, client_config()).await.unwrap().breaker(&name, config.clone()).unwrap();
    let other_client = Client::connect_with(&redis.url, client_config()).await.unwrap();
    subscribed(&other_client).await;
    fail(&mute).await.unwrap_err();
    fail(&mute).await.unwrap_err();
    assert_eq!(mute.state(), State::Open);
    assert!(!mute.snapshot().announced, "the trip's event was refused");
    assert_eq!(state_hash(&redis, &name).await["announced"], "0");

    // The subscribed process heard nothing; it asks Redis, which says nobody announced it.
    let other = other_client.breaker(&name, config).unwrap();
    let asked = Instant::now();
    assert!(succeed(&other).await.unwrap_err().is_rejected());
    assert_eq!(other.state(), State::Open);
    assert!(!other.snapshot().announced);
    tokio::time::sleep(cache_ttl + Duration::from_millis(50) - asked.elapsed().min(cache_ttl)).await;
    assert!(!other.snapshot().fresh, "a state nobody announced is trusted for cache_ttl only");
    assert!(!mute.snapshot().fresh, "also by the process that tripped it");
}

/// Whether a CLIENT LIST line speaks `resp` (2 or 3). Before Redis 7 the list has no `resp`
/// field: there a connection that holds a subscription while it is its client's only one, and
/// runs that client's scripts, speaks RESP3 (a RESP2 connection that subscribed can run no
/// command); the callers check the rest.
fn speaks(line: &str, resp: &str) -> bool {
    match line_field(line, "resp") {
        "" if resp == "3" => line_field(line, "sub") == "1",
        "" => true,
        r => r == resp,
    }
}

/// Issue 25: a client keeps one connection (RESP3) for its commands and its event
/// subscription, instead of a command connection and a pub/sub connection. Transitions still
/// reach it as they happen, and when that connection is killed every snapshot stops being
/// trusted and the subscription comes back, on one connection again.
#[tokio::test]
async fn one_connection_carries_a_clients_commands_and_its_events() {
    let redis = private_redis().await;
    let name = unique("one-conn");
    let config = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(30)).build().unwrap();
    let held = client_flushing_every(&redis, Duration::from_secs(60), Duration::from_secs(600)).await;
    let b = held.breaker(&name, config.clone()).unwrap();
    succeed(&b).await.unwrap();
    breaker_subscribed(&b).await;
    let conns = connections_of_clients(&redis.url).await;
    assert_eq!(conns.len(), 1, "one connection per client: {conns:#?}");
    assert!(speaks(&conns[0], "3") && line_field(&conns[0], "sub") == "1", "{}", conns[0]);

    // Another process trips the breaker: the event arrives on that one connection.
    let other = client(&redis, Duration::from_secs(60)).await;
    fail(&other.breaker(&name, config).unwrap()).await.unwrap_err();
    wait_for_state(&b, State::Open).await;
    assert!(b.snapshot().fresh);

    // The connection killed from the server's side: the long bound ends at once, and the
    // subscription is made again.
    let _: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(line_field(&conns[0], "id"))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    eventually("the snapshot stopped being trusted", async || !b.snapshot().fresh).await;
    breaker_subscribed(&b).await;
    drop(other);
    eventually("one connection again", async || connections_of_clients(&redis.url).await.len() == 1).await;
    let conns = connections_of_clients(&redis.url).await;
    assert!(speaks(&conns[0], "3") && line_field(&conns[0], "sub") == "1", "{}", conns[0]);
    // And it runs the scripts: a call after the reconnection (every snapshot stale) goes to
    // Redis, on that connection (the breaker is open: the call is refused by Redis's reply).
    let _ = succeed(&b).await;
    let after = connections_of_clients(&redis.url).await;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(line_field(&after[0], "id"), line_field(&conns[0], "id"), "{after:#?}");
    let cmd = line_field(&after[0], "cmd");
    assert!(cmd.starts_with("eval") || cmd.starts_with("fcall"), "{after:#?}");
}

/// A server that refuses RESP3 (here HELLO renamed away, as a proxy without RESP3 would answer)
/// keeps the two connections of before: RESP2 commands, and a pub/sub connection of its own
/// that still carries the events.
#[tokio::test]
async fn a_server_that_refuses_resp3_gets_a_subscription_connection_of_its_own() {
    let server = redis_breaker_test_support::server::spawn_on_free_port(|_| {
        vec!["--rename-command".into(), "HELLO".into(), String::new()]
    })
    .unwrap();
    let url = server.url();
    let config = ClientConfig::builder()
        .cache_ttl(Duration::from_secs(60))
        .subscribed_cache_ttl(Duration::from_secs(60))
        .op_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let name = unique("resp2");
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(30)).build().unwrap();
    let held = Client::connect_with(&url, config.clone()).await.unwrap();
    let b = held.breaker(&name, trips.clone()).unwrap();
    succeed(&b).await.unwrap();
    breaker_subscribed(&b).await;
    let conns = connections_of_clients(&url).await;
    assert_eq!(conns.len(), 2, "commands and the subscription apart: {conns:#?}");
    assert!(conns.iter().all(|c| speaks(c, "2")), "{conns:#?}");
    assert_eq!(conns.iter().filter(|c| line_field(c, "sub") == "1").count(), 1, "{conns:#?}");

    let other = Client::connect_with(&url, config).await.unwrap();
    fail(&other.breaker(&name, trips).unwrap()).await.unwrap_err();
    wait_for_state(&b, State::Open).await;
    assert!(b.snapshot().fresh);
    // The version check (a client's first read, before any script) tells a server without
    // HELLO from one older than 6.0 (INFO).
    let fresh = Client::connect(&url).await.unwrap();
    let status = fresh.breaker(&name, Config::default()).unwrap().status().await;
    assert!(status.is_ok(), "a 7.x server without HELLO is not too old: {status:?}");
}
