//! A real 3-master Redis Cluster: every breaker's keys live in its own slot, breakers spread
//! over every master, and the semantics and events are those of a single Redis.
#![cfg(feature = "cluster")]

mod support;

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
        let start = std::time::Instant::now();
        while !bb.health().await.unwrap().events_subscribed {
            assert!(start.elapsed() < Duration::from_secs(10), "{name}: its shard channel was never subscribed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
        let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("breaker:{svc-*}:state").query_async(&mut conn).await.unwrap();
        assert!(!keys.is_empty(), "{url} holds no breaker");
    }
    assert!(a.breakers().await.is_err(), "listing is refused on a cluster, with the command to use instead");

    // Sharded events (Redis >= 7.0): each breaker's channel has its subscribers on the master
    // that owns it, nothing listens on the classic channel, and no classic PUBLISH crossed the
    // cluster bus. Before 7.0 both clients fall back to the classic channel.
    let mut conn =
        redis::Client::open(cluster.urls[0].as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
    let major: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .expect("redis_version in INFO server");
    let (mut shard_subscribers, mut classic_subscribers, mut bus_publishes) = (0, 0, 0);
    for url in &cluster.urls {
        let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
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
