//! Spawns a throwaway `redis-server` on a free loopback port, and knows it is the process it
//! started. Depends on nothing but `redis` and std, so the tests, the crate's own unit tests and
//! the examples share it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A spawned server; killed (and its directory removed) when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn spawn_server() -> Result<Server, String> {
    spawn_on_free_port(|_| Vec::new())
}

/// Starts redis-server on a free port (with `extra` arguments for that port), retrying when
/// another process took the port first: a free port can be taken between the check and the bind.
pub fn spawn_on_free_port(extra: impl Fn(u16) -> Vec<String>) -> Result<Server, String> {
    let mut last = String::new();
    for _ in 0..10 {
        let port = free_port().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("redis-breaker-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut server = Server { child: start_server(port, &dir, &extra(port))?, port, dir };
        if wait_until_ours(&mut server, Duration::from_secs(5)) {
            return Ok(server);
        }
        last = format!("redis-server on port {port} did not start; it said: {}", server_said(&server.dir));
    }
    Err(last)
}

pub fn start_server(port: u16, dir: &std::path::Path, extra: &[String]) -> Result<Child, String> {
    // What the server says goes to a file in its directory: a server that refuses to start (an
    // option its version does not know) is reported with its own words.
    let output = std::fs::File::create(dir.join("server.out")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let errors = output.try_clone().map_err(|e| e.to_string())?;
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(output)
        .stderr(errors)
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))
}

/// The last lines the server in `dir` wrote, for a failure message.
pub fn server_said(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("server.out")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Waits until the server on `server.port` answers and is the process this test started (not
/// another test's server that won the port).
pub fn wait_until_ours(server: &mut Server, within: Duration) -> bool {
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

/// Starts a Redis Cluster node on a port whose bus port (port + 10000, the default of every
/// server version: `--cluster-port` exists only from 7.0) is free too.
pub fn spawn_cluster_node() -> Result<Server, String> {
    let mut last = String::from("no free pair of ports");
    for attempt in 0..50u32 {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let port = 20_000 + ((seed / 7 + attempt * 997) % 25_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !free(port) || !free(port + 10_000) {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("redis-breaker-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let args: Vec<String> = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000", "--cluster-config-file"]
            .iter()
            .map(|a| a.to_string())
            .chain([format!("nodes-{port}.conf")])
            .collect();
        let mut server = Server { child: start_server(port, &dir, &args)?, port, dir };
        if wait_until_ours(&mut server, Duration::from_secs(5)) {
            return Ok(server);
        }
        last = format!("redis-server on port {port} did not start; it said: {}", server_said(&server.dir));
    }
    Err(last)
}

/// The arguments that make a server on `port` a cluster node (its nodes file named after the
/// port, the tests' node timeout).
pub fn cluster_node_args(port: u16) -> Vec<String> {
    ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000", "--cluster-config-file"]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("nodes-{port}.conf")])
        .collect()
}

/// Starts redis-server on the first port from `from` on (up to 1,000 ports) that is free, with
/// its cluster bus port (port + 10000) free too when `cluster`: for a run that must keep to a
/// range of ports.
pub fn spawn_from(from: u16, cluster: bool) -> Result<Server, String> {
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    let mut last = format!("no free port from {from} on");
    for port in (from..from.saturating_add(1000)).filter(|p| free(*p)) {
        if cluster && !port.checked_add(10_000).is_some_and(free) {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("redis-breaker-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let extra = if cluster { cluster_node_args(port) } else { Vec::new() };
        let mut server = Server { child: start_server(port, &dir, &extra)?, port, dir };
        if wait_until_ours(&mut server, Duration::from_secs(5)) {
            return Ok(server);
        }
        last = format!("redis-server on port {port} did not start; it said: {}", server_said(&server.dir));
    }
    Err(last)
}

/// Makes `nodes` (cluster nodes holding no slot yet) one cluster of masters, the 16384 slots
/// split in order into equal ranges, and waits until every node says `cluster_state:ok` and
/// knows every other. Unlike `redis-cli --cluster create` it takes one or two masters too.
/// Answers each node's first and last slot.
pub fn form_cluster(nodes: &[Server]) -> Result<Vec<(u16, u16)>, String> {
    const SLOTS: usize = 16_384;
    let n = nodes.len().max(1);
    let ranges: Vec<(u16, u16)> = (0..n).map(|i| ((i * SLOTS / n) as u16, ((i + 1) * SLOTS / n - 1) as u16)).collect();
    let connect = |s: &Server| {
        redis::Client::open(s.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .map_err(|e| format!("cluster node {}: {e}", s.port))
    };
    for (node, (first, last)) in nodes.iter().zip(&ranges) {
        let mut conn = connect(node)?;
        redis::cmd("CLUSTER")
            .arg("ADDSLOTS")
            .arg((*first..=*last).collect::<Vec<u16>>())
            .query::<()>(&mut conn)
            .map_err(|e| format!("CLUSTER ADDSLOTS on {}: {e}", node.port))?;
    }
    if let Some(first) = nodes.first() {
        let mut conn = connect(first)?;
        for other in &nodes[1..] {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(other.port)
                .query::<()>(&mut conn)
                .map_err(|e| format!("CLUSTER MEET {}: {e}", other.port))?;
        }
    }
    let start = Instant::now();
    for node in nodes {
        let mut conn = connect(node)?;
        loop {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).map_err(|e| e.to_string())?;
            let known = format!("cluster_known_nodes:{}", nodes.len());
            if info.contains("cluster_state:ok") && info.lines().any(|l| l.trim() == known) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("cluster node {} not ready after 30 s: {info}", node.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(ranges)
}
