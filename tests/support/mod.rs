//! Finds a real Redis for the tests (DESIGN §11), in this order: `$REDIS_URL`; a `redis-server`
//! on PATH spawned on a free loopback port in a temp dir; a container when a Docker engine
//! answers. Otherwise the test fails and says how to get Redis. It never skips.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

const HOW_TO_GET_REDIS: &str = "no Redis for the tests: set REDIS_URL=redis://127.0.0.1:6379, \
    or install redis-server (Debian/Ubuntu: `apt-get install -y redis-server`, macOS: \
    `brew install redis`) so the tests can start their own, or run a Docker engine";

/// A Redis the test may use; a spawned server or container stops when this is dropped.
pub struct TestRedis {
    pub url: String,
    server: Option<Server>,
    _container: Option<ContainerAsync<Redis>>,
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestRedis {
    /// A plain connection for assertions and for setting up state by hand.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("test redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
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
            return TestRedis {
                url: format!("redis://127.0.0.1:{}", server.port),
                server: Some(server),
                _container: None,
            };
        }
        Err(why) => eprintln!("test support: could not spawn redis-server ({why}); trying a container"),
    }
    match Redis::default().with_tag("7.2").start().await {
        Ok(container) => {
            let port = container.get_host_port_ipv4(6379).await.expect("container port");
            TestRedis { url: format!("redis://127.0.0.1:{port}"), server: None, _container: Some(container) }
        }
        Err(e) => panic!("{HOW_TO_GET_REDIS} (no container either: {e})"),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_server() -> Result<Server, String> {
    spawn_on_free_port(|_| Vec::new())
}

/// Starts redis-server on a free port (with `extra` arguments for that port), retrying when
/// another process took the port first: a free port can be taken between the check and the bind.
fn spawn_on_free_port(extra: impl Fn(u16) -> Vec<String>) -> Result<Server, String> {
    let mut last = String::new();
    for _ in 0..10 {
        let port = free_port().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("redis-breaker-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut server = Server { child: start_server(port, &dir, &extra(port))?, port, dir };
        if wait_until_ours(&mut server, Duration::from_secs(5)) {
            return Ok(server);
        }
        last = format!("redis-server on port {port} did not start");
    }
    Err(last)
}

fn start_server(port: u16, dir: &std::path::Path, extra: &[String]) -> Result<Child, String> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))
}

/// Waits until the server on `server.port` answers and is the process this test started (not
/// another test's server that won the port).
fn wait_until_ours(server: &mut Server, within: Duration) -> bool {
    let start = Instant::now();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).expect("url");
    let pid = server.child.id().to_string();
    while start.elapsed() < within {
        if !matches!(server.child.try_wait(), Ok(None)) {
            return false;
        }
        if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200))
            && let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut c)
        {
            return info.lines().any(|l| l.strip_prefix("process_id:") == Some(pid.as_str()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A spawned server on a port chosen by the test (e.g. one a client was already pointed at).
pub fn redis_on_port(port: u16) -> TestRedis {
    let dir = std::env::temp_dir().join(format!("redis-breaker-test-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let child = start_server(port, &dir, &[]).unwrap_or_else(|e| panic!("{HOW_TO_GET_REDIS} ({e})"));
    let mut server = Server { child, port, dir };
    assert!(wait_until_ours(&mut server, Duration::from_secs(5)), "redis-server on {port} did not start");
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

/// A client of `redis` with the given snapshot lifetime.
pub async fn client(redis: &TestRedis, cache_ttl: Duration) -> redis_breaker::Client {
    client_flushing_every(redis, cache_ttl, redis_breaker::ClientConfig::DEFAULT_FLUSH_INTERVAL).await
}

/// A client whose background flush runs every `flush_interval` (a long one keeps it out of a
/// test that counts commands on a slow machine).
pub async fn client_flushing_every(
    redis: &TestRedis,
    cache_ttl: Duration,
    flush_interval: Duration,
) -> redis_breaker::Client {
    let config = redis_breaker::ClientConfig::builder()
        .cache_ttl(cache_ttl)
        .flush_interval(flush_interval)
        .op_timeout(Duration::from_millis(500))
        .build()
        .expect("client config");
    redis_breaker::Client::connect_with(&redis.url, config).await.expect("client")
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

/// Fails a call through `breaker`.
pub async fn fail(breaker: &redis_breaker::Breaker) -> Result<(), redis_breaker::Error<&'static str>> {
    breaker.execute(|| async { Err::<(), _>("downstream failed") }).await
}

/// Succeeds a call through `breaker`.
pub async fn succeed(breaker: &redis_breaker::Breaker) -> Result<(), redis_breaker::Error<&'static str>> {
    breaker.execute(|| async { Ok::<(), &'static str>(()) }).await
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
        let server = spawn_on_free_port(|port| {
            let bus = free_port().expect("free port").to_string();
            ["--cluster-enabled", "yes", "--cluster-port", &bus, "--cluster-node-timeout", "2000"]
                .iter()
                .map(|a| a.to_string())
                .chain(["--cluster-config-file".to_string(), format!("nodes-{port}.conf")])
                .collect()
        })
        .unwrap_or_else(|e| panic!("{HOW_TO_GET_REDIS} ({e})"));
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
