//! What a [`RedisStore`] checks before a connection's first script call: the server's version
//! (refused below `MIN_SERVER`, naming it) and the user's permissions for the scripts' commands
//! (refused ahead, naming the commands), each asked again every `RECHECK` while refused.

use crate::error::StoreError;
use crate::name::Keys;
use crate::store::redis::RedisStore;
use redis::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What is known of the server's version.
pub(super) enum ServerCheck {
    /// Not asked yet (or the connection was replaced).
    Unknown,
    /// At least `MIN_SERVER`.
    Supported,
    /// Older: refused until asked again, `RECHECK` after `at`.
    TooOld { server: String, found: String, at: std::time::Instant },
}

/// What is known of the user's permissions for the scripts' commands.
pub(super) enum AclCheck {
    /// Not asked yet (or the connection was replaced).
    Unknown,
    /// Allowed, or not checkable (before Redis 7.0).
    Allowed,
    /// These commands would be refused: refused until asked again, `RECHECK` after `at`.
    Denied { commands: Vec<String>, at: std::time::Instant },
}

/// How often a server found too old is asked again (an upgrade is noticed within this).
const RECHECK: Duration = Duration::from_secs(10);

/// The server's name and version from a HELLO reply (a RESP2 array or a RESP3 map of
/// `server`, `version`, ...).
fn hello_version(reply: &Value) -> Option<(String, String)> {
    let pairs: Vec<(&Value, &Value)> = match reply {
        Value::Array(items) => items.chunks(2).filter_map(|p| Some((p.first()?, p.get(1)?))).collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let field = |name: &str| pairs.iter().find(|(k, _)| text(k).as_deref() == Some(name)).and_then(|(_, v)| text(v));
    Some((field("server").unwrap_or_else(|| "redis".into()), field("version")?))
}

/// Whether `version` ("6.0.9") is older than `MIN_SERVER`.
fn too_old(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) < crate::error::MIN_SERVER
}

impl RedisStore {
    /// Refuses a server older than `MIN_SERVER`, naming its version. Asked once per connection
    /// (HELLO, which every supported server answers and the minimal ACL allows) before the
    /// first operation, and again every `RECHECK` while it is too old.
    pub(super) async fn check_version(&self, key: &str) -> Result<(), StoreError> {
        let refused =
            |server: &String, found: &String| StoreError::ServerTooOld { server: server.clone(), found: found.clone() };
        match &*self.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            ServerCheck::Supported => return Ok(()),
            ServerCheck::TooOld { server, found, at } if at.elapsed() < RECHECK => return Err(refused(server, found)),
            _ => {}
        }
        let verdict = match self.query::<Value>(&redis::cmd("HELLO"), key).await {
            Ok(reply) => match hello_version(&reply) {
                Some((server, found)) if too_old(&found) => Some((server, found)),
                _ => None,
            },
            Err(StoreError::Refused { error, .. }) => {
                let said = error.to_string().to_ascii_lowercase();
                if said.contains("unknown command") || said.contains("wrong number of arguments") {
                    // No HELLO: before 6.0, or renamed away (a server or proxy without RESP3);
                    // 6.0's HELLO requires a protocol version (6.2's does not). INFO, when the
                    // ACL allows it, tells the exact version.
                    let info = self.query::<String>(redis::cmd("INFO").arg("server"), key).await.ok();
                    let exact = info.as_deref().and_then(|i| {
                        i.lines().find_map(|l| l.strip_prefix("redis_version:")).map(|v| v.trim().to_string())
                    });
                    match exact {
                        Some(found) if !too_old(&found) => None,
                        Some(found) => Some(("redis".to_string(), found)),
                        None if said.contains("unknown command") => {
                            Some(("redis".to_string(), "older than 6.0 (no HELLO command)".to_string()))
                        }
                        None => Some(("redis".to_string(), "6.0".to_string())),
                    }
                } else {
                    // HELLO refused otherwise (an ACL without it): the version cannot be told;
                    // the operations say for themselves what the server refuses.
                    tracing::debug!(error = %error, "HELLO refused; the server's version is not checked");
                    None
                }
            }
            Err(e) => return Err(e),
        };
        let mut known = self.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match verdict {
            None => {
                *known = ServerCheck::Supported;
                Ok(())
            }
            Some((server, found)) => {
                let e = refused(&server, &found);
                tracing::error!(error = %e, "the server is too old; calls are decided by the degraded mode");
                *known = ServerCheck::TooOld { server, found, at: std::time::Instant::now() };
                Err(e)
            }
        }
    }

    /// Before the first script call of a connection: refuses a server older than `MIN_SERVER`
    /// and a user the ACL would refuse a command the scripts run (naming the commands), before
    /// anything is written. One round trip on Redis >= 7.0 (`lua/preflight.lua` reports the
    /// version too, and checks the ACL on the keys of the first breaker a script call is for);
    /// before 7.0 HELLO tells the version and the ACL is not checked ahead. Asked again every
    /// `RECHECK` while refused.
    pub(super) async fn check_connection(&self, keys: &Keys) -> Result<(), StoreError> {
        let key = keys.state();
        let allowed = match &*self.acl.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            AclCheck::Allowed => true,
            AclCheck::Denied { commands, at } if at.elapsed() < RECHECK => {
                return Err(StoreError::Denied { key: key.to_string(), commands: commands.clone() });
            }
            _ => false,
        };
        if allowed {
            return self.check_version(key).await;
        }
        let inv = self.scripts.preflight(keys);
        let mut conn = self.handle();
        let answer: Vec<String> = self.deadline(key, inv.invoke_async(&mut conn)).await?;
        let mut answer = answer.into_iter();
        let verdict = answer.next().unwrap_or_default();
        match answer.next().filter(|v| !v.is_empty()) {
            Some(version) if !too_old(&version) => {
                *self.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ServerCheck::Supported;
            }
            _ => self.check_version(key).await?,
        }
        let rest: Vec<String> = answer.collect();
        let mut known = self.acl.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if verdict != "denied" {
            let functions = self.functions_wanted && rest.iter().any(|f| f == "functions");
            self.functions.store(functions, Ordering::Release);
            if rest.iter().any(|f| f == "publish") {
                tracing::warn!(
                    key,
                    "the redis user may not publish on the events channel: other processes hear this one's transitions only when their snapshots expire (fine where no process can subscribe)"
                );
            }
            *known = AclCheck::Allowed;
            return Ok(());
        }
        let e = StoreError::Denied { key: key.to_string(), commands: rest.clone() };
        tracing::error!(error = %e, "calls are decided by the degraded mode");
        *known = AclCheck::Denied { commands: rest, at: std::time::Instant::now() };
        Err(e)
    }
}
