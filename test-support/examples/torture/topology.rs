//! The servers of one run, started from the binaries on PATH on loopback ports: one Redis; a
//! primary, a replica and three sentinels; or a three-master Redis Cluster. Every process is
//! stopped and the run's directory removed on drop.

use redis_breaker_test_support::server;

use redis_breaker::redis;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Single,
    Sentinel,
    Cluster,
}

impl Kind {
    pub(crate) fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "single" => Ok(Kind::Single),
            "sentinel" => Ok(Kind::Sentinel),
            "cluster" => Ok(Kind::Cluster),
            other => Err(format!("unknown topology {other}: single, sentinel, cluster or all")),
        }
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Single => "single",
            Kind::Sentinel => "sentinel",
            Kind::Cluster => "cluster",
        }
    }
}

/// The user the nemesis writes with when it plays an operator whose ACL cannot PUBLISH.
pub(crate) const NO_PUBLISH_USER: &str = "ops-nopub";
pub(crate) const NO_PUBLISH_PASS: &str = "ops-nopub-pass";

/// Says which package holds a missing binary.
pub(crate) fn require(binary: &str, package: &str) -> Result<(), String> {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file())).unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!("`{binary}` is not on PATH: install it (Debian: apt-get install -y {package})"))
    }
}

/// One redis-server (or sentinel) process the run can kill, pause and start again on its port.
pub(crate) struct Node {
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
    args: Vec<String>,
    sentinel: bool,
    child: Option<Child>,
    paused: bool,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    fn new(root: &Path, args: Vec<String>, sentinel: bool) -> Result<Node, String> {
        let mut last = String::new();
        for _ in 0..10 {
            let port = if args.iter().any(|a| a == "--cluster-enabled") {
                cluster_port()?
            } else {
                server::free_port().map_err(|e| e.to_string())?
            };
            let dir = root.join(format!("node-{port}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut node = Node { port, dir, args: args.clone(), sentinel, child: None, paused: false };
            match node.start() {
                Ok(()) => return Ok(node),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub(crate) fn start(&mut self) -> Result<(), String> {
        let child = if self.sentinel {
            let conf = self.dir.join("sentinel.conf");
            let primary = self.args.first().cloned().unwrap_or_default();
            std::fs::write(
                &conf,
                format!(
                    "port {}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 4000\n\
                     sentinel parallel-syncs mymaster 1\n",
                    self.port,
                    self.dir.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let out = std::fs::File::create(self.dir.join("server.out")).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            Command::new("redis-sentinel")
                .arg(&conf)
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("redis-sentinel: {e} (Debian: apt-get install -y redis-sentinel)"))?
        } else {
            server::start_server(self.port, &self.dir, &self.args)?
        };
        self.child = Some(child);
        self.paused = false;
        let start = Instant::now();
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).map_err(|e| e.to_string())?;
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(c) = self.child.as_mut()
                && !matches!(c.try_wait(), Ok(None))
            {
                return Err(format!("the server on port {} exited: {}", self.port, server::server_said(&self.dir)));
            }
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("the server on port {} did not answer: {}", self.port, server::server_said(&self.dir)))
    }

    /// SIGKILL (after SIGCONT, so that a paused server dies too).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.paused {
                signal(c.id(), "-CONT");
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    pub(crate) fn pause(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-STOP");
            self.paused = true;
        }
    }

    pub(crate) fn resume(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-CONT");
        }
        self.paused = false;
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts again with no data (a restart that lost everything).
    pub(crate) fn restart_empty(&mut self) -> Result<(), String> {
        self.kill();
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.start()
    }

    /// Starts again from the RDB that `checkpoint` kept (a rollback).
    pub(crate) fn restart_from_checkpoint(&mut self) -> Result<(), String> {
        self.kill();
        std::fs::copy(self.dir.join("checkpoint.rdb"), self.dir.join("dump.rdb")).map_err(|e| e.to_string())?;
        self.start()
    }

    /// SAVE, and keeps the RDB aside for a later rollback.
    pub(crate) async fn checkpoint(&self) -> Result<(), String> {
        let mut c = conn(self.port).await?;
        redis::cmd("SAVE").query_async::<()>(&mut c).await.map_err(|e| e.to_string())?;
        std::fs::copy(self.dir.join("dump.rdb"), self.dir.join("checkpoint.rdb")).map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn signal(pid: u32, which: &str) {
    let _ = Command::new("kill").args([which, &pid.to_string()]).status();
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> Result<u16, String> {
    for _ in 0..200 {
        let p = server::free_port().map_err(|e| e.to_string())?;
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return Ok(p);
        }
    }
    Err("no free pair of ports for a cluster node".into())
}

pub(crate) async fn conn(port: u16) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())
}

pub(crate) struct Topology {
    pub(crate) kind: Kind,
    /// Single: [redis]; Sentinel: [first primary, first replica]; Cluster: the three masters.
    pub(crate) nodes: Vec<Node>,
    pub(crate) sentinels: Vec<Node>,
    pub(crate) root: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Topology {
    pub(crate) async fn start(kind: Kind, root: PathBuf) -> Result<Topology, String> {
        require("redis-server", "redis-server")?;
        let mut t = Topology { kind, nodes: Vec::new(), sentinels: Vec::new(), root };
        match kind {
            Kind::Single => t.nodes.push(Node::new(&t.root, Vec::new(), false)?),
            Kind::Sentinel => {
                require("redis-sentinel", "redis-sentinel")?;
                let primary = Node::new(&t.root, Vec::new(), false)?;
                let p = primary.port.to_string();
                t.nodes.push(primary);
                t.nodes.push(Node::new(&t.root, vec!["--replicaof".into(), "127.0.0.1".into(), p.clone()], false)?);
                wait_for(Duration::from_secs(15), "the replica to sync", async || {
                    info_field(t.nodes[1].port, "replication", "master_link_status").await.as_deref() == Some("up")
                })
                .await?;
                for _ in 0..3 {
                    t.sentinels.push(Node::new(&t.root, vec![p.clone()], true)?);
                }
                wait_for(Duration::from_secs(20), "the sentinels to know the replica and each other", async || {
                    let mut ok = true;
                    for s in &t.sentinels {
                        ok &= info_field(s.port, "sentinel", "master0")
                            .await
                            .is_some_and(|l| l.contains("slaves=1") && l.contains("sentinels=3"));
                    }
                    ok
                })
                .await?;
            }
            Kind::Cluster => {
                require("redis-cli", "redis-tools")?;
                let args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-config-file",
                    "nodes.conf",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                for _ in 0..3 {
                    t.nodes.push(Node::new(&t.root, args.clone(), false)?);
                }
                let addrs: Vec<String> = t.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
                let out = Command::new("redis-cli")
                    .args(["--cluster", "create"])
                    .args(&addrs)
                    .args(["--cluster-replicas", "0", "--cluster-yes"])
                    .output()
                    .map_err(|e| format!("redis-cli: {e}"))?;
                if !out.status.success() {
                    return Err(format!("redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout)));
                }
                t.wait_cluster_ok().await?;
            }
        }
        t.add_no_publish_user().await?;
        Ok(t)
    }

    pub(crate) async fn wait_cluster_ok(&self) -> Result<(), String> {
        for n in &self.nodes {
            let port = n.port;
            wait_for(Duration::from_secs(30), "cluster_state:ok", async || {
                info_cmd(port, &["CLUSTER", "INFO"]).await.is_some_and(|i| i.contains("cluster_state:ok"))
            })
            .await?;
        }
        Ok(())
    }

    /// The operator user without PUBLISH rights, on every data node (ACLs are not replicated
    /// and do not survive a restart).
    pub(crate) async fn add_no_publish_user(&self) -> Result<(), String> {
        for n in &self.nodes {
            let mut c = conn(n.port).await?;
            redis::cmd("ACL")
                .arg(&["SETUSER", NO_PUBLISH_USER, "reset", "on"][..])
                .arg(format!(">{NO_PUBLISH_PASS}"))
                .arg(&["~*", "&*", "+@all", "-publish", "-spublish"][..])
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| format!("ACL SETUSER on {}: {e}", n.port))?;
        }
        Ok(())
    }

    /// The port of the node that is primary now (Sentinel: as the sentinels say).
    pub(crate) async fn primary_port(&self) -> Option<u16> {
        if self.kind != Kind::Sentinel {
            return self.nodes.first().map(|n| n.port);
        }
        for s in &self.sentinels {
            let Ok(mut c) = conn(s.port).await else { continue };
            let addr: Result<Vec<String>, _> =
                redis::cmd("SENTINEL").arg(&["get-master-addr-by-name", "mymaster"][..]).query_async(&mut c).await;
            if let Ok(a) = addr
                && let Some(p) = a.get(1).and_then(|p| p.parse().ok())
            {
                return Some(p);
            }
        }
        None
    }

    /// The node index of a data node by port.
    pub(crate) fn node_by_port(&mut self, port: u16) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.port == port)
    }

    /// URLs the workers and the operator connect to (Single: through `proxy` when given).
    pub(crate) fn client_urls(&self, proxy: Option<u16>, user: Option<(&str, &str)>) -> Vec<String> {
        let auth = user.map(|(u, p)| format!("{u}:{p}@")).unwrap_or_default();
        match self.kind {
            Kind::Single => {
                vec![format!("redis://{auth}127.0.0.1:{}", proxy.unwrap_or(self.nodes[0].port))]
            }
            Kind::Sentinel => self.sentinels.iter().map(|s| s.url()).collect(),
            Kind::Cluster => self.nodes.iter().map(|n| format!("redis://{auth}127.0.0.1:{}", n.port)).collect(),
        }
    }
}

pub(crate) async fn info_cmd(port: u16, cmd: &[&str]) -> Option<String> {
    let mut c = conn(port).await.ok()?;
    let mut q = redis::cmd(cmd[0]);
    q.arg(&cmd[1..]);
    q.query_async(&mut c).await.ok()
}

pub(crate) async fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let info = info_cmd(port, &["INFO", section]).await?;
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).map(|v| v.trim().to_string())
}

pub(crate) async fn wait_for(within: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !done().await {
        if start.elapsed() > within {
            return Err(format!("waited {within:?} for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
