//! Finds a real Redis for the tests, in this order: `$REDIS_URL`; a `redis-server` on PATH
//! spawned on a free loopback port in a temp dir; a container when the build opted in to
//! testcontainers (`RUSTFLAGS="--cfg redis_breaker_testcontainers"`) and a Docker engine answers.
//! Otherwise the test fails and says how to get Redis. It never skips.

use crate::server::{Server, free_port, spawn_cluster_node, spawn_server, start_server, wait_until_ours};
use std::process::Command;
use std::time::{Duration, Instant};
#[cfg(redis_breaker_testcontainers)]
use testcontainers_modules::{
    redis::Redis,
    testcontainers::{ContainerAsync, ImageExt, runners::AsyncRunner},
};

/// A container, when the build opted in to testcontainers; nothing otherwise.
#[cfg(redis_breaker_testcontainers)]
type Container = ContainerAsync<Redis>;
#[cfg(not(redis_breaker_testcontainers))]
type Container = ();

const HOW_TO_GET_REDIS: &str = "no Redis for the tests: set REDIS_URL=redis://127.0.0.1:6379, \
    or install redis-server (Debian/Ubuntu: `apt-get install -y redis-server`, macOS: \
    `brew install redis`) so the tests can start their own, or run a Docker engine and build the \
    tests with RUSTFLAGS=\"--cfg redis_breaker_testcontainers\" to use a container";

/// A connection for a test's own assertions and setup, to `url`: its deadlines are 10 s
/// rather than redis-rs's 500 ms (to answer) and 1 s (to connect), which a machine busy
/// compiling can exceed. The breakers under test keep their own, short, deadlines.
pub async fn admin_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let deadlines = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)))
        .set_connection_timeout(Some(std::time::Duration::from_secs(10)));
    redis::Client::open(url)
        .unwrap_or_else(|e| panic!("a test redis url {url}: {e}"))
        .get_multiplexed_async_connection_with_config(&deadlines)
        .await
        .unwrap_or_else(|e| panic!("connect to the test redis at {url}: {e}"))
}

/// A Redis the test may use; a spawned server or container stops when this is dropped.
pub struct TestRedis {
    pub url: String,
    server: Option<Server>,
    _container: Option<Container>,
}

impl TestRedis {
    /// A plain connection for assertions and for setting up state by hand.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        admin_connection(&self.url).await
    }

    /// Kills the spawned server with SIGKILL (no shutdown, no save).
    pub fn kill(&mut self) {
        let server = self.server.as_mut().expect("only a spawned redis-server can be killed");
        let _ = server.child.kill();
        let _ = server.child.wait();
    }

    /// Starts the spawned server again, empty, on the same port.
    pub fn restart(&mut self) {
        let server = self.server.as_mut().expect("only a spawned redis-server can be restarted");
        server.child = start_server(server.port, &server.dir, &[]).expect("restart redis-server");
        assert!(wait_until_ours(server, Duration::from_secs(5)), "restarted redis-server did not answer");
    }

    /// The port of a server this test spawned (None for REDIS_URL or a container).
    pub fn port(&self) -> Option<u16> {
        self.server.as_ref().map(|s| s.port)
    }

    /// Total calls of one command (e.g. "evalsha") since the server started, from INFO commandstats.
    pub async fn calls_of(&self, command: &str) -> u64 {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut self.conn().await).await.expect("INFO");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|rest| rest.split(',').next().unwrap_or("0").parse().expect("calls count"))
            .unwrap_or(0)
    }

    /// Calls of the scripts that change state, however the client sends them: EVALSHA, or FCALL
    /// of the crate's Functions library (the default where the server has Functions).
    pub async fn script_calls(&self) -> u64 {
        let stats = self.commandstats().await;
        ["evalsha", "fcall"].iter().map(|c| stats.get(*c).copied().unwrap_or(0)).sum()
    }

    /// The server's version as (major, minor), from INFO server.
    pub async fn version(&self) -> (u32, u32) {
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut self.conn().await).await.expect("INFO");
        let v = info.lines().find_map(|l| l.strip_prefix("redis_version:")).expect("redis_version").trim();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// Every command the server has run, from INFO commandstats.
    pub async fn total_calls(&self) -> u64 {
        self.commandstats().await.values().sum()
    }

    /// Calls per command since the server started, from INFO commandstats.
    pub async fn commandstats(&self) -> std::collections::BTreeMap<String, u64> {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut self.conn().await).await.expect("INFO");
        info.lines()
            .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(":calls="))
            .map(|(cmd, rest)| {
                (cmd.to_string(), rest.split(',').next().unwrap_or("0").parse::<u64>().expect("calls count"))
            })
            .collect()
    }
}

/// A Redis for a test: `$REDIS_URL`, else a private server, else a container, else a panic that
/// says how to get one.
pub async fn redis() -> TestRedis {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return TestRedis { url, server: None, _container: None };
    }
    private_redis().await
}

/// A Redis this test alone uses (for tests that count the server's commands or restart it):
/// a spawned server, else a container.
pub async fn private_redis() -> TestRedis {
    match spawn_server() {
        Ok(server) => {
            TestRedis { url: format!("redis://127.0.0.1:{}", server.port), server: Some(server), _container: None }
        }
        Err(why) => container_redis(why).await,
    }
}

#[cfg(redis_breaker_testcontainers)]
async fn container_redis(why: String) -> TestRedis {
    eprintln!("test support: could not spawn redis-server ({why}); trying a container");
    match Redis::default().with_tag("7.2").start().await {
        Ok(container) => {
            let port = container.get_host_port_ipv4(6379).await.expect("container port");
            TestRedis { url: format!("redis://127.0.0.1:{port}"), server: None, _container: Some(container) }
        }
        Err(e) => panic!("{HOW_TO_GET_REDIS} (no container either: {e})"),
    }
}

#[cfg(not(redis_breaker_testcontainers))]
async fn container_redis(why: String) -> TestRedis {
    panic!("{HOW_TO_GET_REDIS} (could not spawn redis-server: {why})")
}

/// A spawned server on a port chosen by the test (e.g. one a client was already pointed at).
pub fn redis_on_port(port: u16) -> TestRedis {
    let dir = std::env::temp_dir().join(format!("redis-breaker-test-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let child = start_server(port, &dir, &[]).unwrap_or_else(|e| panic!("{HOW_TO_GET_REDIS} ({e})"));
    let mut server = Server { child, port, dir };
    assert!(
        wait_until_ours(&mut server, Duration::from_secs(5)),
        "redis-server on {port} did not start; it said: {}",
        super::server::server_said(&server.dir)
    );
    TestRedis { url: format!("redis://127.0.0.1:{port}"), server: Some(server), _container: None }
}

/// A loopback port with nothing listening on it.
pub fn unused_port() -> u16 {
    free_port().expect("free port")
}

/// A breaker name no other test uses.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The key `suffix` (state, probes, window, metrics) of `name` under the default prefix.
pub fn key(name: &str, suffix: &str) -> String {
    format!("breaker:{{{name}}}:{suffix}")
}

/// The state hash of `name` under the default prefix.
pub async fn state_hash(redis: &TestRedis, name: &str) -> std::collections::HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("breaker:{{{name}}}:state"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("HGETALL")
}

/// One field of the state hash as a number (0 when absent).
pub async fn state_field(redis: &TestRedis, name: &str, field: &str) -> u64 {
    state_hash(redis, name).await.get(field).map_or(0, |v| v.parse().expect("numeric field"))
}

/// A 3-master Redis Cluster of spawned redis-servers on loopback ports; stops on drop.
pub struct TestCluster {
    pub urls: Vec<String>,
    _servers: Vec<Server>,
}

/// Starts a real 3-master cluster (`cluster-enabled yes`, slots split by
/// `redis-cli --cluster create`), or panics saying how to get redis-server and redis-cli.
pub fn cluster() -> TestCluster {
    let mut servers = Vec::new();
    for _ in 0..3 {
        let server = spawn_cluster_node().unwrap_or_else(|e| panic!("{HOW_TO_GET_REDIS} ({e})"));
        servers.push(server);
    }
    let addrs: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap_or_else(|e| panic!("redis-cli is needed to create the test cluster: {e}"));
    assert!(out.status.success(), "redis-cli --cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
    let start = Instant::now();
    for s in &servers {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", s.port)).expect("url");
        loop {
            let mut c = client.get_connection().expect("cluster node");
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).expect("CLUSTER INFO");
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the test cluster never reached cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    TestCluster { urls: servers.iter().map(|s| format!("redis://127.0.0.1:{}", s.port)).collect(), _servers: servers }
}

/// The metrics hash of `name` under the default prefix (empty when absent).
pub async fn metrics_hash(redis: &TestRedis, name: &str) -> std::collections::HashMap<String, u64> {
    redis::cmd("HGETALL")
        .arg(format!("breaker:{{{name}}}:metrics"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("HGETALL")
}

/// One metrics counter of `name` (0 when absent).
pub async fn metric(redis: &TestRedis, name: &str, field: &str) -> u64 {
    metrics_hash(redis, name).await.get(field).copied().unwrap_or(0)
}

/// The first line starting with `prefix` in the README or a page of `docs/` (the documented
/// ACL lines, for example), read from the workspace's root.
pub fn documented_line(prefix: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec![root.join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        let mut docs: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        docs.sort();
        pages.extend(docs.into_iter().filter(|p| p.extension().is_some_and(|x| x == "md")));
    }
    pages
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| text.lines().find(|l| l.starts_with(prefix)).map(str::to_string))
        .unwrap_or_else(|| panic!("no line starting `{prefix}` in README.md or docs/*.md"))
}

/// Makes the documented minimal ACL user on `redis` (the line starting `ACL SETUSER breaker `
/// in the README or a page of `docs/`), with `without` taken out of its rules (a managed
/// service that forbids them); answers the user's URL.
pub async fn documented_acl_user(redis: &TestRedis, without: &[&str]) -> String {
    let line = documented_line("ACL SETUSER breaker ");
    let mut cmd = redis::cmd("ACL");
    for word in line.split_whitespace().skip(1).filter(|w| !without.contains(w)) {
        cmd.arg(word);
    }
    let _: () = cmd.query_async(&mut redis.conn().await).await.expect("ACL SETUSER of the documented line");
    redis.url.replace("redis://", "redis://breaker:secret@")
}

/// The value of `name=value` among a line's space-separated words (a `CLIENT LIST` line, a
/// worker's report); empty when the line has none.
pub fn line_field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_ascii_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).unwrap_or("")
}

/// The connections the clients of `url` hold, from `CLIENT LIST` (the asking connection left
/// out): one line per connection (read its fields with [`line_field`]).
pub async fn connections_of_clients(url: &str) -> Vec<String> {
    let mut admin = admin_connection(url).await;
    let own: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut admin).await.expect("CLIENT ID");
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut admin).await.expect("CLIENT LIST");
    let own = format!("id={own} ");
    list.lines().filter(|l| !l.starts_with(&own)).map(str::to_string).collect()
}
