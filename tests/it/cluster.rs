//! A real 3-master Redis Cluster: every breaker's keys live in its own slot, breakers spread
//! over every master, and the semantics and events are those of a single Redis.

use crate::support;
use crate::support::{breaker_subscribed, conn_on, until_rejected};
use redis_breaker::{Client, ClientConfig, Config, Error, Rejected, State};
use std::time::Duration;

async fn cluster_client(urls: &[String], cache_ttl: Duration) -> Client {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let config = ClientConfig::builder().cache_ttl(cache_ttl).op_timeout(Duration::from_secs(1)).build().unwrap();
    Client::connect_cluster(&urls, config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_spread_over_every_master_and_behave_as_on_one_redis() {
    let cluster = support::cluster();
    let a = cluster_client(&cluster.urls, Duration::from_secs(60)).await;
    let b = cluster_client(&cluster.urls, Duration::from_secs(60)).await;
    let config = Config::builder()
        .failure_threshold(2)
        .success_threshold(1)
        .base_recovery(Duration::from_millis(100))
        .max_recovery(Duration::from_millis(100))
        .jitter(0.0)
        .build()
        .unwrap();

    let names: Vec<String> = (0..30).map(|i| format!("svc-{i}")).collect();
    for name in &names {
        let ba = a.breaker(name, config.clone()).unwrap();
        let bb = b.breaker(name, config.clone()).unwrap();
        breaker_subscribed(&bb).await;
        bb.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
        let mut events = bb.subscribe();
        for _ in 0..2 {
            assert!(matches!(ba.execute(|| async { Err::<(), _>("down") }).await, Err(Error::Inner(_))));
        }
        assert_eq!(ba.state(), State::Open, "{name}");
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event").unwrap();
        assert_eq!((e.from, e.to), (Some(State::Closed), State::Open), "{name}: the event crossed the cluster");
        assert!(matches!(
            bb.execute(|| async { Ok::<(), ()>(()) }).await,
            Err(Error::Rejected(Rejected { state: State::Open, .. }))
        ));
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    for name in &names {
        let bb = b.breaker(name, config.clone()).unwrap();
        bb.execute(|| async { Ok::<(), ()>(()) }).await.expect("the probe runs and closes the breaker");
        assert_eq!(bb.state(), State::Closed, "{name}");
    }

    // Every master holds some of the breakers' keys.
    for url in &cluster.urls {
        let mut conn = support::admin_connection(url).await;
        let keys: Vec<String> = redis::cmd("KEYS").arg("breaker:{svc-*}:state").query_async(&mut conn).await.unwrap();
        assert!(!keys.is_empty(), "{url} holds no breaker");
    }
    assert!(a.breakers().await.is_err(), "listing is refused on a cluster, with the command to use instead");

    // Sharded events (Redis >= 7.0): each breaker's channel has its subscribers on the master
    // that owns it, nothing listens on the classic channel, and no classic PUBLISH crossed the
    // cluster bus. Before 7.0 both clients fall back to the classic channel.
    let mut conn = support::admin_connection(&cluster.urls[0]).await;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
    let major: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .expect("redis_version in INFO server");
    let (mut shard_subscribers, mut classic_subscribers, mut bus_publishes) = (0, 0, 0);
    for url in &cluster.urls {
        let mut conn = support::admin_connection(url).await;
        if major >= 7 {
            let mut cmd = redis::cmd("PUBSUB");
            cmd.arg("SHARDNUMSUB");
            for name in &names {
                cmd.arg(format!("breaker:{{{name}}}:events"));
            }
            let counts: Vec<redis::Value> = cmd.query_async(&mut conn).await.unwrap();
            for pair in counts.chunks(2) {
                if let [_, redis::Value::Int(n)] = pair {
                    shard_subscribers += n;
                }
            }
        }
        let classic: Vec<redis::Value> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg("breaker:events").query_async(&mut conn).await.unwrap();
        if let [_, redis::Value::Int(n)] = classic.as_slice() {
            classic_subscribers += n;
        }
        let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.unwrap();
        bus_publishes += info
            .lines()
            .filter_map(|l| l.strip_prefix("cluster_stats_messages_publish_sent:"))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .sum::<u64>();
    }
    if major >= 7 {
        assert_eq!(shard_subscribers, 2 * names.len() as i64, "each breaker's channel has both clients");
        assert_eq!(classic_subscribers, 0, "nothing listens on the classic channel");
        assert_eq!(bus_publishes, 0, "no transition was broadcast over the cluster bus");
        println!("figures: sharded events, {shard_subscribers} shard subscriptions, 0 publishes over the bus");
    } else {
        assert_eq!(classic_subscribers, 2, "before Redis 7 both clients read the classic channel");
        assert!(bus_publishes > 0, "before Redis 7 transitions go over the bus");
        println!("figures: Redis {major}: classic events, {bus_publishes} publishes over the bus");
    }
}

/// A node of the test cluster as `CLUSTER NODES` lists it: its id, its port, and the slot
/// ranges it serves.
struct Node {
    id: String,
    port: u16,
    slots: Vec<(u16, u16)>,
}

async fn cluster_nodes(url: &str) -> Vec<Node> {
    let mut conn = support::admin_connection(url).await;
    let listed: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await.unwrap();
    listed
        .lines()
        .filter(|l| l.contains("master"))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let port = fields[1].split(['@', ',']).next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
            let slots = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (r.parse().unwrap(), r.parse().unwrap()),
                })
                .collect();
            Node { id: fields[0].to_string(), port, slots }
        })
        .collect()
}

async fn shard_subscribers(port: u16, channel: &str) -> i64 {
    let counts: Vec<redis::Value> =
        redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel).query_async(&mut conn_on(port).await).await.unwrap();
    match counts.as_slice() {
        [_, redis::Value::Int(n)] => *n,
        other => panic!("PUBSUB SHARDNUMSUB answered {other:?}"),
    }
}

/// Moves `slot` from `from` to `to` as `redis-cli --cluster reshard` does: IMPORTING on the
/// target, MIGRATING on the source, MIGRATE of every key, then SETSLOT NODE on every master
/// (the target first).
async fn move_slot(nodes: &[Node], slot: u16, from: &Node, to: &Node) {
    let (mut source, mut target) = (conn_on(from.port).await, conn_on(to.port).await);
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from.id)
        .query_async(&mut target)
        .await
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to.id)
        .query_async(&mut source)
        .await
        .unwrap();
    let keys: Vec<String> =
        redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(1000).query_async(&mut source).await.unwrap();
    assert!(!keys.is_empty(), "the held breaker has keys in slot {slot}");
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to.port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("REPLACE")
        .arg("KEYS")
        .arg(&keys)
        .query_async(&mut source)
        .await
        .unwrap();
    for node in std::iter::once(to)
        .chain(std::iter::once(from))
        .chain(nodes.iter().filter(|n| n.id != from.id && n.id != to.id))
    {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to.id)
            .query_async(&mut conn_on(node.port).await)
            .await
            .unwrap();
    }
}

/// Issue 22, item 2: Redis unsubscribes a shard channel whose slot moved to another master (a
/// `sunsubscribe` push the client did not ask for). The breaker loses the long bound at once
/// (its snapshot is marked stale, `events_subscribed` is false) and its channel is subscribed
/// again on the slot's new owner. Before the fix the push was ignored: the channel stayed
/// confirmed and the client admitted calls for `subscribed_cache_ttl` (30s) into a breaker
/// another process had opened on the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_whose_slot_moves_loses_the_long_bound_and_is_subscribed_on_the_new_owner() {
    const CACHE_TTL: Duration = Duration::from_millis(500);
    let cluster = support::cluster();
    let a = cluster_client(&cluster.urls, CACHE_TTL).await;
    let name = support::unique("moving");
    let config = Config::builder().failure_threshold(3).base_recovery(Duration::from_secs(60)).build().unwrap();
    let held = a.breaker(&name, config.clone()).unwrap();
    let channel = format!("breaker:{{{name}}}:events");
    breaker_subscribed(&held).await;
    // The breaker has keys to move (a failure, then a success that resets the count), and a
    // reply after the channel was confirmed: the snapshot holds the long bound (30s).
    assert!(matches!(held.execute(|| async { Err::<(), _>("down") }).await, Err(Error::Inner(_))));
    held.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    a.flush().await.unwrap();
    held.health().await.unwrap();

    let nodes = cluster_nodes(&cluster.urls[0]).await;
    let mut any = conn_on(nodes[0].port).await;
    let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&channel).query_async(&mut any).await.unwrap();
    let from = nodes.iter().find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))).expect("the slot's owner");
    let to = nodes.iter().find(|n| n.id != from.id).unwrap();
    // Before Redis 7.0 (no sharded pub/sub) events go over the classic channel, which a slot
    // move does not touch: only the transition reaching the client is checked there.
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut any).await.unwrap();
    let sharded = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse::<u32>().ok())
        .is_some_and(|major| major >= 7);
    if sharded {
        assert_eq!(shard_subscribers(from.port, &channel).await, 1, "the client listens on the slot's owner");
    }
    assert!(held.snapshot().fresh, "the snapshot decides calls on its own before the move");
    move_slot(&nodes, slot, from, to).await;
    let moved = std::time::Instant::now();
    // Redis dropped the channel's subscribers when the slot left: the snapshot is stale at once
    // (no call is made meanwhile, so nothing else could have made it so).
    while sharded && held.snapshot().fresh {
        assert!(moved.elapsed() < Duration::from_secs(2), "the snapshot kept its long bound after the slot moved");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stale_after = moved.elapsed();

    // Another process opens the breaker on the new owner.
    let b = cluster_client(&cluster.urls, CACHE_TTL).await;
    b.breaker(&name, config.clone()).unwrap().force_open(None).await.expect("a write on the new owner");
    let (admitted, rejected_after) =
        until_rejected(&held, CACHE_TTL + Duration::from_secs(3), "a breaker opened on the slot's new owner").await;
    assert!(rejected_after <= CACHE_TTL + Duration::from_secs(1), "rejected only after {rejected_after:?}");

    // Events flow again: the channel is subscribed on the new owner, and a transition made there
    // reaches the client as an event.
    let start = std::time::Instant::now();
    while !(held.health().await.unwrap().events_subscribed
        && (!sharded || shard_subscribers(to.port, &channel).await >= 1))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "the channel was never subscribed on the new owner");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resubscribed = moved.elapsed();
    if sharded {
        assert_eq!(shard_subscribers(from.port, &channel).await, 0, "nothing listens on the old owner");
    }
    let mut events = held.subscribe();
    b.breaker(&name, config).unwrap().force_close(None).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("an event from the new owner")
        .unwrap();
    assert_eq!(e.to, State::ForcedClosed);
    held.execute(|| async { Ok::<(), ()>(()) }).await.expect("forced closed");
    println!(
        "figures: slot {slot} moved ({}); snapshot stale {stale_after:?} after the move; after the open on the new owner the client admitted {admitted} calls and rejected after {rejected_after:?}; subscribed on the new owner {resubscribed:?} after the move",
        if sharded { "sharded events" } else { "classic events: the slot move does not touch them" }
    );
}

/// The torture harness's "4 counts" on the cluster topology: the metrics held fewer outcomes
/// than the workers had decided. When the cluster client's connection to a slot's owner has
/// dropped (the node was restarted, or dropped the client), its one retry goes to another master,
/// which answers MOVED, and the client gives that answer up as the call's error. It was taken
/// for Redis refusing the breaker's script, and the batch of counts the call carried was
/// dropped ("batched counts dropped: redis refused them"). A MOVED says the script did not run
/// there (an attempt before it may have run): the batch's fate is unknown, and it is sent again
/// under its id until Redis has counted it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_call_ends_on_a_cluster_redirection_is_sent_again_not_dropped() {
    let cluster = support::cluster();
    let name = support::unique("redirected");
    let (client, b) = flushed_by_hand(&cluster, Duration::from_secs(1), &name).await;
    let mut made = 1u64;
    let mut owner_conn = conn_on(owner_of(&cluster, &name).await).await;

    let (mut refused, mut outages) = (Vec::new(), 0u32);
    for _ in 0..10 {
        for _ in 0..10 {
            b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
            made += 1;
        }
        // The owner drops the client's connections: the flush fails on the dropped connection
        // (the cluster client retries nothing; a retry used to end on another master's MOVED).
        let _: redis::Value = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"][..])
            .query_async(&mut owner_conn)
            .await
            .unwrap();
        let start = std::time::Instant::now();
        loop {
            match b.flush().await {
                Ok(()) => break,
                Err(e) if e.is_outage() => outages += 1,
                Err(e) => {
                    refused.push(e.to_string());
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the flush never got through");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    client.flush().await.unwrap();
    let metrics = b.status().await.unwrap().metrics;
    assert_eq!(
        metrics.successes, made,
        "every success counted once (flushes that failed as an outage: {outages}; refused: {refused:?})"
    );
    assert!(refused.is_empty(), "a redirection is no refusal of the script: {refused:?}");
    assert!(outages > 0, "the dropped connections failed some flush (else nothing was tested)");
    println!(
        "figures: {outages} flush attempts after a dropped connection failed as an outage; their batches were sent again"
    );
}

/// A flush sent to a slot owner that is stopped (SIGSTOP) longer than `op_timeout` times out:
/// the server runs it when it resumes. The client sends that batch again under its id (and
/// Redis counts it once), and nothing else may send it: the cluster client's own retry of a
/// timed-out request sent it again as a first attempt, and Redis counted it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_that_timed_out_on_a_stopped_owner_counts_once() {
    let cluster = support::cluster();
    let name = support::unique("stopped-owner");
    let (client, b) = flushed_by_hand(&cluster, Duration::from_millis(100), &name).await;
    let succeed = async || b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn_on(owner_of(&cluster, &name).await).await)
        .await
        .unwrap();
    let pid = info.lines().find_map(|l| l.strip_prefix("process_id:")).expect("process_id").trim().to_string();
    let signal = |which: &str| {
        let status = std::process::Command::new("kill").args([which, &pid]).status().expect("kill");
        assert!(status.success(), "kill {which} {pid}");
    };

    for _ in 0..4 {
        succeed().await;
    }
    signal("-STOP");
    let timed_out = client.flush().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal("-CONT");
    assert!(timed_out.is_err(), "the flush to a stopped owner timed out");
    let start = std::time::Instant::now();
    while client.flush().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the flush never got through after the owner resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = b.status().await.unwrap().metrics;
    assert_eq!(metrics.successes, 5, "each success counted once: {metrics:?}");
}

/// A cluster client that flushes only when the test says (the counts wait in their batch until
/// it sends them), and a breaker named `name` that never trips, with one success flushed.
async fn flushed_by_hand(
    cluster: &support::TestCluster,
    op_timeout: Duration,
    name: &str,
) -> (Client, redis_breaker::Breaker) {
    let urls: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    let config = ClientConfig::builder()
        .op_timeout(op_timeout)
        .flush_interval(Duration::from_secs(3600))
        .metrics_interval(Duration::from_secs(3600))
        .cache_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let client = Client::connect_cluster(&urls, config).await.unwrap();
    let b = client.breaker(name, Config::builder().failure_threshold(1000).build().unwrap()).unwrap();
    b.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    client.flush().await.unwrap();
    (client, b)
}

/// The port of the master that owns the slot of `name`'s keys.
async fn owner_of(cluster: &support::TestCluster, name: &str) -> u16 {
    let nodes = cluster_nodes(&cluster.urls[0]).await;
    let state_key = format!("breaker:{{{name}}}:state");
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&state_key)
        .query_async(&mut conn_on(nodes[0].port).await)
        .await
        .unwrap();
    nodes.iter().find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))).expect("the slot's owner").port
}

/// The keepalive of sharded events asks every node how many shard channels the client's
/// connection holds (`CLIENT INFO`): a user without `+client|info` (an ACL written before it was
/// needed) keeps its events, its keepalive a PING, instead of dropping the subscription at every
/// keepalive; a user with it keeps its long bound too, and is counted at every keepalive. A
/// subscription dropped (or refused at every keepalive) marks the snapshot stale, so a snapshot
/// still fresh after many keepalives, and an event heard, show a subscription kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_events_are_kept_with_and_without_the_client_info_permission() {
    const KEEPALIVE: Duration = Duration::from_millis(50);
    let cluster = support::cluster();
    let sharded = major_version(&cluster.urls[0]).await >= 7;
    // Redis 6.2 cannot take one subcommand away (its events are the classic channel, whose
    // keepalive is a PING either way): there the whole CLIENT command.
    let without = if sharded { "+@all -client|info" } else { "+@all -client" };
    for (user, rules) in [("with-info", "+@all"), ("without-info", without)] {
        for url in &cluster.urls {
            let mut conn = support::admin_connection(url).await;
            let _: () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(user)
                .arg("on")
                .arg(">secret")
                .arg("~*")
                .arg("&*")
                .arg(rules.split(' ').collect::<Vec<_>>())
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let urls: Vec<String> =
            cluster.urls.iter().map(|u| u.replace("redis://", &format!("redis://{user}:secret@"))).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let config = ClientConfig::builder()
            .cache_ttl(Duration::from_millis(100))
            .events_keepalive(KEEPALIVE)
            .op_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let client = Client::connect_cluster(&urls, config).await.unwrap();
        let name = support::unique(user);
        let breaker = client.breaker(&name, Config::default()).unwrap();
        breaker_subscribed(&breaker).await;
        // A reply after the channel was confirmed: the snapshot holds the long bound.
        breaker.health().await.unwrap();
        let confirmed = std::time::Instant::now();
        while !breaker.snapshot().fresh {
            assert!(confirmed.elapsed() < Duration::from_secs(5), "{user}: the shard channel was never confirmed");
            breaker.health().await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let counted = client_info_calls(&cluster.urls).await;
        tokio::time::sleep(KEEPALIVE * 10).await;
        assert!(breaker.snapshot().fresh, "{user}: the subscription was dropped by its keepalive");
        let counted = client_info_calls(&cluster.urls).await - counted;
        if sharded && user == "with-info" {
            // Three nodes asked at each keepalive (ten or so of them).
            assert!(counted >= 12, "{user}: the keepalive counted the held channels {counted} times");
        }
        let mut events = breaker.subscribe();
        let other = cluster_client(&cluster.urls, Duration::from_secs(1)).await;
        other.breaker(&name, Config::default()).unwrap().force_open(None).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(2), events.recv()).await.expect("an event").unwrap();
        assert_eq!(e.to, State::ForcedOpen, "{user}");
    }
}

/// The server's major version.
async fn major_version(url: &str) -> u32 {
    let mut conn = support::admin_connection(url).await;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse::<u32>().ok())
        .expect("redis_version")
}

/// `CLIENT INFO` commands the nodes answered, summed (INFO commandstats).
async fn client_info_calls(urls: &[String]) -> u64 {
    let mut calls = 0;
    for url in urls {
        let mut conn = support::admin_connection(url).await;
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        calls += stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_client|info:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    calls
}
