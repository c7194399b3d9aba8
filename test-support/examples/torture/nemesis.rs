//! The nemesis: begins, finishes and heals the faults of the schedule on the topology, the
//! proxies, the downstream and the workers (cluster slot moves in `reshard.rs`).

use crate::check;
use crate::collect::{Ports, key};
use crate::downstream::{Downstream, Health};
use crate::faults::{Fault, FaultKind};
use crate::history::now_ms;
use crate::proxy::Proxy;
use crate::reshard::{migrate_slot, slot_owner};
use crate::setup;
use crate::topology::{self, Kind, Topology, conn};
use crate::workers::Workers;
use redis_breaker::{Client, redis};
use redis_breaker_test_support::line_field;
use std::process::Stdio;
use std::time::Duration;

pub(crate) struct Nemesis<'a> {
    /// The `redis-breaker` binary, when operators write through it.
    pub(crate) cli: Option<std::path::PathBuf>,
    pub(crate) topo: &'a mut Topology,
    pub(crate) proxies: &'a [Proxy],
    pub(crate) downstream: &'a Downstream,
    pub(crate) workers: &'a mut Workers,
    /// The worker whose downstream fails alone now, if any.
    pub(crate) failing: Option<usize>,
}

impl Nemesis<'_> {
    pub(crate) async fn data_ports(&self) -> Vec<u16> {
        match self.topo.kind {
            Kind::Sentinel => self.topo.primary_port().await.into_iter().collect(),
            _ => self.topo.nodes.iter().map(|n| n.port).collect(),
        }
    }

    pub(crate) async fn on_all(&self, cmd: &[&str]) {
        for p in self.data_ports().await {
            let _ = topology::info_cmd(p, cmd).await;
        }
    }

    /// Kills the clients' pub/sub connections on every data node, not the sentinels' own (a
    /// sentinel whose link to the primary drops counts the time since the primary's last
    /// PING reply, up to a ping period, toward `down-after-milliseconds`: killing its links
    /// made the sentinels fail over by themselves, seed 1002616, a loss no fault recorded).
    pub(crate) async fn kill_subscribers(&self) {
        for p in self.data_ports().await {
            let Ok(mut c) = conn(p).await else { continue };
            let list: String =
                redis::cmd("CLIENT").arg(&["LIST", "TYPE", "pubsub"][..]).query_async(&mut c).await.unwrap_or_default();
            for line in list.lines().filter(|l| !line_field(l, "name").starts_with("sentinel-")) {
                let _: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("KILL").arg("ID").arg(line_field(line, "id")).query_async(&mut c).await;
            }
        }
    }

    pub(crate) async fn begin(&mut self, f: &mut Fault, operator: &Client, no_publish: Option<&Client>) {
        let breaker = setup::BREAKERS[f.target % setup::BREAKERS.len()].0;
        match f.kind {
            FaultKind::KillRestart | FaultKind::Rollback | FaultKind::Pause => {
                let port = match self.topo.kind {
                    Kind::Cluster => self.topo.nodes[f.target % 3].port,
                    _ => self.topo.primary_port().await.unwrap_or(self.topo.nodes[0].port),
                };
                f.detail = format!("node {port}");
                if f.kind != FaultKind::Pause {
                    f.lost = self.breakers_on(port).await;
                }
                if let Some(n) = self.topo.node_by_port(port) {
                    if f.kind == FaultKind::Pause {
                        n.pause()
                    } else {
                        n.kill();
                        let dead = now_ms();
                        f.dead_at = Some(dead);
                        f.detail.push_str(&format!(", dead {:.0}ms after the fault began", dead - f.start));
                    }
                }
            }
            FaultKind::Failover => {
                f.lost = setup::BREAKERS.iter().map(|b| b.0.to_string()).collect();
                f.restore_point = Some(f.start);
                let before = self.topo.primary_port().await;
                if let Some(s) = self.topo.sentinels.first() {
                    let r = topology::info_cmd(s.port, &["SENTINEL", "FAILOVER", "mymaster"]).await;
                    f.detail = format!("from {before:?}: {}", if r.is_some() { "started" } else { "refused" });
                }
                let topo = &*self.topo;
                let _ = topology::wait_for(Duration::from_secs(10), "the failover", async || {
                    topo.primary_port().await != before
                })
                .await;
                f.target = usize::from(before.unwrap_or(0));
            }
            FaultKind::SlotMigration => f.detail = self.migrate(setup::BREAKERS[f.target % 3].0).await,
            FaultKind::Blackhole => self.proxy(f.target).map(|p| p.blackhole(true)).unwrap_or(()),
            FaultKind::Delay => {
                let ms = 20 + 60 * u64::from(f.variant);
                f.detail = format!("{ms}ms");
                self.proxy(f.target).map(|p| p.delay(ms)).unwrap_or(())
            }
            FaultKind::SilentSubscription => {
                self.proxy(f.target).map(|p| p.blackhole_subscriptions(true)).unwrap_or(())
            }
            FaultKind::PubsubKill => self.kill_subscribers().await,
            FaultKind::ScriptFlush => {
                self.on_all(&["SCRIPT", "FLUSH"]).await;
                self.on_all(&["FUNCTION", "FLUSH"]).await;
            }
            FaultKind::WorkerRestart => {
                // A crash loop is most often the bad host's: restart the failing one if any.
                if f.variant < 2
                    && let Some(w) = self.failing
                {
                    f.target = w;
                }
                self.workers.kill(f.target)
            }
            FaultKind::OperatorWrite if self.cli.is_some() => {
                let (ok, said) = self.cli_write(f, breaker, None).await;
                f.detail = format!("{breaker} via the CLI: {} {said}", if ok { "ok" } else { "failed" });
            }
            FaultKind::OperatorNoPublish if self.cli.is_some() => {
                let user = Some((topology::NO_PUBLISH_USER, topology::NO_PUBLISH_PASS));
                let (ok, said) = self.cli_write(f, breaker, user).await;
                // The CLI tells its operator by its exit status and a line on stderr.
                f.told = Some(!ok && !said.is_empty());
                let status = if ok { "exit 0" } else { "non-zero exit" };
                f.detail = format!("{breaker} via the CLI as {}: {status} {said}", topology::NO_PUBLISH_USER);
            }
            FaultKind::OperatorWrite => {
                let Ok(b) = operator.breaker(breaker, setup::breaker_config(breaker)) else { return };
                let note = format!("torture: operator {} #{}", f.variant, f.target);
                let lasts = Duration::from_secs_f64(f.lasts);
                let r = match f.variant {
                    0 => b.force_open_noted(Some(lasts), &note).await,
                    1 => b.force_close_noted(Some(lasts), &note).await,
                    _ => b.reset_noted(&note).await,
                };
                f.detail =
                    format!("{breaker}: {}", r.map(|s| s.state.as_str().to_string()).unwrap_or_else(|e| e.to_string()));
            }
            FaultKind::OperatorNoPublish => {
                let Some(c) = no_publish else { return };
                let Ok(b) = c.breaker(breaker, setup::breaker_config(breaker)) else { return };
                let r = b.force_open_noted(Some(Duration::from_secs_f64(f.lasts)), "torture: no PUBLISH right").await;
                f.told = Some(check::operator_told(&r));
                f.detail = format!("{breaker}: {r:?}");
            }
            FaultKind::DeleteKeys => {
                let (s, p) = (key(breaker, "state"), key(breaker, "probes"));
                let mut cmd = redis::cmd("DEL");
                cmd.arg(&s).arg(&p);
                let ports = self.ports();
                let r: Result<i64, String> = ports.on_key(&s, &cmd).await;
                f.detail = format!("{breaker}: {r:?}");
            }
            FaultKind::PoisonKey => {
                let s = key(breaker, "state");
                let ports = self.ports();
                let mut cmd = redis::cmd("EVAL");
                // Poisons only a key that exists (keeping its TTL): a key made here without one
                // would be the harness's, not the library's.
                cmd.arg(
                    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
                     if ARGV[1] == '0' then redis.call('HSET', KEYS[1], 'state', 'exploded') \
                     elseif ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'epoch', 'NaN', 'failures', '-x') \
                     else redis.call('HSET', KEYS[1], 'open_until', 'soon') end return 1",
                )
                .arg(1)
                .arg(&s)
                .arg(f.variant.to_string());
                let r: Result<i64, String> = ports.on_key(&s, &cmd).await;
                f.detail = format!("{breaker}: {r:?}");
            }
            FaultKind::DownstreamOne => {
                let h = if f.variant == 0 { Health::Hanging } else { Health::Failing };
                f.detail = format!("{h:?}");
                self.failing = Some(f.target);
                self.downstream.set(f.target, h);
            }
            FaultKind::DownstreamAll => {
                let h = if f.variant == 0 { Health::Hanging } else { Health::Failing };
                f.detail = format!("{h:?}");
                self.downstream.set_all(h);
            }
        }
    }

    pub(crate) async fn finish(&mut self, f: &mut Fault) {
        match f.kind {
            FaultKind::KillRestart | FaultKind::Rollback | FaultKind::Pause => {
                let port: u16 = f
                    .detail
                    .trim_start_matches("node ")
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let result = match self.topo.node_by_port(port) {
                    Some(n) if f.kind == FaultKind::Pause => {
                        n.resume();
                        Ok(())
                    }
                    Some(n) if f.kind == FaultKind::Rollback && f.restore_point.is_some() => {
                        n.restart_from_checkpoint()
                    }
                    Some(n) => n.restart_empty(),
                    None => Ok(()),
                };
                if let Err(e) = result {
                    f.detail.push_str(&format!("; restart failed: {e}"));
                }
                if f.kind != FaultKind::Pause {
                    if self.topo.kind == Kind::Cluster {
                        let _ = self.topo.wait_cluster_ok().await;
                    }
                    let _ = self.topo.add_no_publish_user().await;
                }
            }
            FaultKind::Failover => {
                // The old primary takes writes until the sentinels make it a replica (they wait
                // to see it claim the role for a while): the failover ends when it has synced
                // from the new one.
                let old = f.target as u16;
                let done =
                    topology::wait_for(Duration::from_secs(30), "the old primary to become a replica", async || {
                        topology::info_field(old, "replication", "master_link_status").await.as_deref() == Some("up")
                    })
                    .await;
                if let Err(e) = done {
                    f.detail.push_str(&format!("; {e}"));
                }
            }
            FaultKind::Blackhole => self.proxy(f.target).map(|p| p.blackhole(false)).unwrap_or(()),
            FaultKind::Delay => self.proxy(f.target).map(|p| p.delay(0)).unwrap_or(()),
            FaultKind::SilentSubscription => {
                self.proxy(f.target).map(|p| p.blackhole_subscriptions(false)).unwrap_or(())
            }
            FaultKind::WorkerRestart => {
                if let Err(e) = self.workers.spawn(f.target) {
                    f.detail = e;
                }
            }
            FaultKind::DownstreamOne => {
                self.failing = None;
                self.downstream.set(f.target, Health::Healthy)
            }
            FaultKind::DownstreamAll => self.downstream.set_all(Health::Healthy),
            _ => {}
        }
    }

    pub(crate) async fn heal(&mut self) {
        for p in self.proxies {
            p.blackhole(false);
            p.blackhole_subscriptions(false);
            p.delay(0);
        }
        self.downstream.set_all(Health::Healthy);
    }

    /// One operator's write through the CLI: open (variant 0, and always for a user who may
    /// not publish), close or reset, with a note; answers whether it exited 0 and what it said
    /// on stderr.
    pub(crate) async fn cli_write(&self, f: &Fault, breaker: &str, user: Option<(&str, &str)>) -> (bool, String) {
        let Some(cli) = &self.cli else { return (false, String::new()) };
        let url = self.topo.client_urls(None, user).remove(0);
        let lasts = format!("{}ms", (f.lasts * 1000.0) as u64);
        let note = format!("torture: operator {} #{}", f.variant, f.target);
        let verb = if user.is_some() { 0 } else { f.variant };
        let mut cmd = tokio::process::Command::new(cli);
        cmd.args(["--url", &url, "--prefix", setup::PREFIX]);
        match verb {
            0 => cmd.args(["open", breaker, "--for", &lasts, "--note", &note]),
            1 => cmd.args(["close", breaker, "--for", &lasts, "--note", &note]),
            _ => cmd.args(["reset", breaker, "--note", &note]),
        };
        match cmd.stdin(Stdio::null()).output().await {
            Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stderr).trim().replace('\n', " | ")),
            Err(e) => (false, format!("could not run the CLI: {e}")),
        }
    }

    pub(crate) fn proxy(&self, worker: usize) -> Option<&Proxy> {
        self.proxies.get(worker)
    }

    pub(crate) fn ports(&self) -> Ports {
        Ports {
            kind: self.topo.kind,
            nodes: self.topo.nodes.iter().map(|n| n.port).collect(),
            sentinels: self.topo.sentinels.iter().map(|n| n.port).collect(),
        }
    }

    /// The breakers whose keys the data node on `port` holds.
    pub(crate) async fn breakers_on(&self, port: u16) -> Vec<String> {
        let all = || setup::BREAKERS.iter().map(|b| b.0.to_string()).collect();
        if self.topo.kind != Kind::Cluster {
            return all();
        }
        let ports: Vec<u16> = self.topo.nodes.iter().map(|n| n.port).collect();
        let mut held = Vec::new();
        for (b, _, _) in setup::BREAKERS {
            match slot_owner(&ports, &key(b, "state")).await {
                Ok((_, masters)) if masters.iter().any(|m| m.2 && m.1 != port) => {}
                _ => held.push(b.to_string()),
            }
        }
        held
    }

    /// Moves the slot of `breaker`'s keys to another master, keys and all.
    pub(crate) async fn migrate(&self, breaker: &str) -> String {
        match migrate_slot(&self.topo.nodes.iter().map(|n| n.port).collect::<Vec<_>>(), &key(breaker, "state")).await {
            Ok(d) => format!("{breaker}: {d}"),
            Err(e) => format!("{breaker}: migration failed: {e}"),
        }
    }
}
