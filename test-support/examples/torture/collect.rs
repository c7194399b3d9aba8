//! The collectors of one run: the transitions (the history streams), the state samples and
//! the TTLs, and the metrics hashes at the end, read from the data nodes (on a Sentinel
//! topology, from the primary the sentinels name).

use crate::history::{Collected, Immortal, Sample, Transition, now_ms};
use crate::setup;
use crate::topology::{Kind, conn};
use redis_breaker::redis;
use std::collections::HashMap;
use std::sync::Mutex;

/// Where the collectors find the data: the data nodes' ports, and the sentinels' for the
/// primary.
#[derive(Clone)]
pub(crate) struct Ports {
    pub(crate) kind: Kind,
    pub(crate) nodes: Vec<u16>,
    pub(crate) sentinels: Vec<u16>,
}

impl Ports {
    pub(crate) async fn primaries(&self) -> Vec<u16> {
        match self.kind {
            Kind::Sentinel => {
                for s in &self.sentinels {
                    let Ok(mut c) = conn(*s).await else { continue };
                    let a: Result<Vec<String>, _> = redis::cmd("SENTINEL")
                        .arg(&["get-master-addr-by-name", "mymaster"][..])
                        .query_async(&mut c)
                        .await;
                    if let Some(p) = a.ok().and_then(|a| a.get(1).and_then(|p| p.parse().ok())) {
                        return vec![p];
                    }
                }
                Vec::new()
            }
            _ => self.nodes.clone(),
        }
    }

    /// Runs a command on the node holding `key` (the one that does not answer MOVED).
    pub(crate) async fn on_key<T: redis::FromRedisValue>(&self, key: &str, cmd: &redis::Cmd) -> Result<T, String> {
        let mut last = String::from("no node answered");
        for p in self.primaries().await {
            let Ok(mut c) = conn(p).await else { continue };
            match cmd.query_async::<T>(&mut c).await {
                Ok(v) => return Ok(v),
                Err(e) => last = format!("{key} on {p}: {e}"),
            }
        }
        Err(last)
    }
}

pub(crate) fn key(b: &str, suffix: &str) -> String {
    format!("{}:{{{b}}}:{suffix}", setup::PREFIX)
}

pub(crate) async fn collect_history(ports: &Ports, out: &Mutex<Collected>) {
    for (b, _, _) in setup::BREAKERS {
        let k = key(b, "history");
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&k).arg("-").arg("+");
        let Ok(entries) = ports.on_key::<Vec<(String, HashMap<String, String>)>>(&k, &cmd).await else { continue };
        let mut c = out.lock().unwrap_or_else(|p| p.into_inner());
        for (id, f) in entries {
            let get = |n: &str| f.get(n).cloned().unwrap_or_default();
            c.transitions.entry((b.to_string(), id.clone())).or_insert_with(|| Transition {
                b: b.to_string(),
                id,
                at: get("time").parse().unwrap_or(0.0),
                from: get("from"),
                to: get("to"),
                epoch: get("epoch").parse().unwrap_or(0),
                reason: get("reason"),
                origin: get("origin"),
            });
        }
    }
}

pub(crate) async fn collect_samples(ports: &Ports, out: &Mutex<Collected>) {
    for (b, _, _) in setup::BREAKERS {
        let k = key(b, "state");
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&k).arg(&["incarnation", "epoch"][..]);
        let at = now_ms();
        if let Ok(v) = ports.on_key::<Vec<Option<String>>>(&k, &cmd).await {
            let inc = v.first().cloned().flatten().and_then(|s| s.parse().ok());
            let epoch = v.get(1).cloned().flatten().and_then(|s| s.parse().ok()).unwrap_or(0);
            out.lock().unwrap_or_else(|p| p.into_inner()).samples.push(Sample { b: b.to_string(), at, inc, epoch });
        }
    }
}

pub(crate) async fn collect_ttls(ports: &Ports, out: &Mutex<Collected>) {
    for p in ports.primaries().await {
        let Ok(mut c) = conn(p).await else { continue };
        let keys: Vec<String> = match redis::cmd("KEYS").arg(format!("{}:*", setup::PREFIX)).query_async(&mut c).await {
            Ok(k) => k,
            Err(_) => continue,
        };
        for k in keys {
            let at = now_ms();
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await.unwrap_or(-2);
            if ttl != -1 {
                continue;
            }
            // A state forced with no duration keeps its keys until reset (the contract).
            let state_key = match k.rfind(':') {
                Some(i) => format!("{}:state", &k[..i]),
                None => continue,
            };
            let state: Option<String> =
                redis::cmd("HGET").arg(&state_key).arg("state").query_async(&mut c).await.unwrap_or(None);
            let state = state.unwrap_or_default();
            out.lock().unwrap_or_else(|p| p.into_inner()).immortals.push(Immortal { at, key: k, state });
        }
    }
}

pub(crate) async fn metrics(ports: &Ports) -> HashMap<String, HashMap<String, u64>> {
    let mut all = HashMap::new();
    for (b, _, _) in setup::BREAKERS {
        let k = key(b, "metrics");
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&k);
        let m: HashMap<String, u64> = ports.on_key(&k, &cmd).await.unwrap_or_default();
        all.insert(b.to_string(), m);
    }
    all
}
