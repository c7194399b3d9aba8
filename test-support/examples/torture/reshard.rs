//! Cluster slot moves for the reshard fault: which master serves a key's slot, and moving that
//! slot, keys and all, to another master (CLUSTER SETSLOT, MIGRATE).

use crate::topology::conn;
use redis_breaker::redis;

/// The slot of `key` and the masters: id, port, and whether it serves the slot.
pub(crate) async fn slot_owner(ports: &[u16], key: &str) -> Result<(u16, Vec<(String, u16, bool)>), String> {
    let mut last = String::from("no node answered");
    for p in ports {
        let Ok(mut c) = conn(*p).await else { continue };
        let slot: u16 = match redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut c).await {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let nodes: String = match redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await {
            Ok(n) => n,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut masters = Vec::new();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || !f[2].contains("master") {
                continue;
            }
            let port = f[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            let serves = f[8..].iter().any(|r| {
                let mut it = r.split('-');
                match (it.next().and_then(|a| a.parse::<u16>().ok()), it.next()) {
                    (Some(a), Some(b)) => b.parse::<u16>().is_ok_and(|b| (a..=b).contains(&slot)),
                    (Some(a), None) => a == slot,
                    _ => false,
                }
            });
            masters.push((f[0].to_string(), port, serves));
        }
        return Ok((slot, masters));
    }
    Err(last)
}

pub(crate) async fn migrate_slot(ports: &[u16], key: &str) -> Result<String, String> {
    let (slot, masters) = slot_owner(ports, key).await?;
    let src = masters.iter().find(|m| m.2).cloned().ok_or("no owner of the slot")?;
    let dst = masters.iter().find(|m| !m.2).cloned().ok_or("no other master")?;
    let mut s = conn(src.1).await?;
    let mut d = conn(dst.1).await?;
    let q = |c: &mut redis::aio::MultiplexedConnection, args: Vec<String>| {
        let mut cmd = redis::cmd(&args[0]);
        cmd.arg(&args[1..]);
        let mut c = c.clone();
        async move { cmd.query_async::<redis::Value>(&mut c).await.map_err(|e| e.to_string()) }
    };
    let sl = slot.to_string();
    q(&mut d, vec!["CLUSTER".into(), "SETSLOT".into(), sl.clone(), "IMPORTING".into(), src.0.clone()]).await?;
    q(&mut s, vec!["CLUSTER".into(), "SETSLOT".into(), sl.clone(), "MIGRATING".into(), dst.0.clone()]).await?;
    let mut moved = 0;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg(&["GETKEYSINSLOT", &sl, "100"][..])
            .query_async(&mut s)
            .await
            .map_err(|e| e.to_string())?;
        if keys.is_empty() {
            break;
        }
        moved += keys.len();
        let mut m = redis::cmd("MIGRATE");
        m.arg(&["127.0.0.1", &dst.1.to_string(), "", "0", "5000", "REPLACE", "KEYS"][..]).arg(&keys);
        m.query_async::<redis::Value>(&mut s).await.map_err(|e| e.to_string())?;
    }
    for p in ports {
        let mut c = conn(*p).await?;
        q(&mut c, vec!["CLUSTER".into(), "SETSLOT".into(), sl.clone(), "NODE".into(), dst.0.clone()]).await?;
    }
    Ok(format!("slot {slot}: {} -> {} ({moved} keys)", src.1, dst.1))
}
