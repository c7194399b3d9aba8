//! What a [`RedisStore`](crate::store::RedisStore) knows of a server and a user before a
//! connection's first script call: the server's version (refused below `MIN_SERVER`, naming it)
//! and the user's permissions for the scripts' commands (refused ahead, naming the commands),
//! each asked again every `RECHECK` while refused; and how a HELLO reply tells the version.
//! The store asks (`check_version`, `check_connection` in `redis.rs`).

use redis::Value;
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
pub(super) const RECHECK: Duration = Duration::from_secs(10);

/// The server's name and version from a HELLO reply (a RESP2 array or a RESP3 map of
/// `server`, `version`, ...).
pub(super) fn hello_version(reply: &Value) -> Option<(String, String)> {
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
pub(super) fn too_old(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) < crate::error::MIN_SERVER
}
