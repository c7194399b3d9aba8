//! [`RedisStore`]: the scripts run with a deadline, the checks made before a connection's
//! first script call (the server's version, the ACL; what is known of them in `checks.rs`),
//! and the up/down verdict on Redis.

use crate::error::StoreError;
use crate::name::{Keys, name_from_listed_key};
use crate::protocol::{Op, Params, Reply};
use crate::store::checks::{AclCheck, RECHECK, ServerCheck, hello_version, too_old};
use crate::store::conn::{ConnHandle, Reconnect, SharedConn};
use crate::store::scripts::{Call, Library, Scripts, function_missing, parse_reply, unknown_config};
use redis::{Cmd, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How a [`RedisStore`] talks to Redis.
pub(crate) struct StoreSettings {
    /// The deadline of every operation.
    pub(crate) op_timeout: Duration,
    /// The events channel the scripts publish on (`''`: none).
    pub(crate) channel: String,
    /// The client's id, carried by the events its calls cause.
    pub(crate) origin: String,
    /// The client's identity for a quorum: the member its reports and its word that it is
    /// active write.
    pub(crate) reporter: String,
    /// Each breaker's events on its own channel with SPUBLISH (Redis Cluster).
    pub(crate) sharded: bool,
    /// Errors in a row after which Redis is treated as down.
    pub(crate) threshold: u32,
    /// Whether the Functions library may be used (`ClientConfig::functions`).
    pub(crate) functions: bool,
}

/// The Redis side: scripts, a deadline on every operation, and the up/down verdict on Redis.
pub(crate) struct RedisStore {
    server: Mutex<ServerCheck>,
    acl: Mutex<AclCheck>,
    conn: RwLock<Box<dyn SharedConn>>,
    reconnect: Option<Reconnect>,
    scripts: Scripts,
    /// Whether the client may use the Functions library (`ClientConfig::functions`).
    functions_wanted: bool,
    /// Whether script calls go as FCALL: wanted, and the connection's check found the server
    /// and the ACL allow it. Cleared when the library cannot be loaded.
    functions: AtomicBool,
    /// Held (shared) by every script call while it runs, so `settle` can wait for the calls in
    /// flight (a batch another task took is in one of them).
    sending: tokio::sync::RwLock<()>,
    op_timeout: Duration,
    threshold: u32,
    errors_in_row: AtomicU32,
    /// `true` while Redis is up; the client's watcher probes Redis while it is `false`.
    up: watch::Sender<bool>,
    /// Whether the last error that kept Redis down was a refusal of the credentials.
    auth_failed: AtomicBool,
}

impl RedisStore {
    /// A store over `conn` (replaced by `reconnect`'s, when given, after a READONLY); Redis is
    /// taken to be up until an operation says otherwise.
    pub(crate) fn new(conn: Box<dyn SharedConn>, reconnect: Option<Reconnect>, s: StoreSettings) -> RedisStore {
        let StoreSettings { op_timeout, channel, origin, reporter, sharded, threshold, functions } = s;
        RedisStore {
            server: Mutex::new(ServerCheck::Unknown),
            acl: Mutex::new(AclCheck::Unknown),
            conn: RwLock::new(conn),
            reconnect,
            scripts: Scripts::new(channel, origin, reporter, sharded),
            functions_wanted: functions,
            functions: AtomicBool::new(false),
            sending: tokio::sync::RwLock::new(()),
            op_timeout,
            threshold,
            errors_in_row: AtomicU32::new(0),
            up: watch::channel(true).0,
            auth_failed: AtomicBool::new(false),
        }
    }

    /// How script calls are sent now: `"functions"` or `"evalsha"` (before the connection's
    /// first check, and wherever the server or the ACL do not allow functions).
    pub(crate) fn script_mode(&self) -> &'static str {
        if self.functions.load(Ordering::Acquire) { "functions" } else { "evalsha" }
    }

    /// True while Redis is treated as down: no call waits on it; a background probe checks it.
    pub(crate) fn is_down(&self) -> bool {
        !*self.up.borrow()
    }

    /// Follows the up/down verdict.
    pub(crate) fn watch_up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// An operation succeeded: Redis is up.
    fn note_success(&self) {
        self.errors_in_row.store(0, Ordering::Release);
        self.auth_failed.store(false, Ordering::Release);
        self.up.send_if_modified(|up| !std::mem::replace(up, true));
    }

    /// Where calls are decided while Redis is down: `AuthFailed` when it refused the credentials.
    pub(crate) fn down_status(&self) -> crate::StoreStatus {
        if self.auth_failed.load(Ordering::Acquire) {
            crate::StoreStatus::AuthFailed
        } else {
            crate::StoreStatus::RedisDown
        }
    }

    /// An operation failed as an outage: after `threshold` in a row (or refused credentials,
    /// at once) Redis is treated as down.
    fn note_outage(&self, err: &StoreError) {
        let n = self.errors_in_row.fetch_add(1, Ordering::AcqRel) + 1;
        // Refused credentials do not mend between two calls: Redis is down for this client at once.
        let auth = matches!(err, StoreError::Auth(_));
        self.auth_failed.store(auth, Ordering::Release);
        if (auth || n >= self.threshold) && self.up.send_if_modified(|up| std::mem::replace(up, false)) {
            tracing::warn!(error = %err, errors_in_row = n, "redis is down; deciding calls by the degraded mode");
        }
    }

    /// The connection for one operation.
    fn handle(&self) -> ConnHandle {
        self.conn.read().unwrap_or_else(std::sync::PoisonError::into_inner).handle()
    }

    /// Replaces the connection, when this store knows how to make one.
    fn replace_connection(&self) {
        if let Some(conn) = self.reconnect.as_ref().and_then(|make| make()) {
            *self.conn.write().unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
            *self.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ServerCheck::Unknown;
            *self.acl.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = AclCheck::Unknown;
            self.functions.store(false, Ordering::Release);
        }
    }

    /// Refuses a server older than `MIN_SERVER`, naming its version. Asked once per connection
    /// (HELLO, which every supported server answers and the minimal ACL allows) before the
    /// first operation, and again every `RECHECK` while it is too old.
    async fn check_version(&self, key: &str) -> Result<(), StoreError> {
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
    async fn check_connection(&self, keys: &Keys) -> Result<(), StoreError> {
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

    /// One PING with the deadline: the background probe while Redis is down.
    pub(crate) async fn ping(&self) -> bool {
        self.query::<String>(&redis::cmd("PING"), "PING").await.is_ok()
    }

    /// Runs one script with the `op_timeout` deadline. A timed-out call may still have run on
    /// the server, so it is never retried here.
    pub(crate) async fn run(
        &self,
        keys: &Keys,
        p: &Params,
        op: &Op,
        now_ms: Option<u64>,
        rand: f64,
    ) -> Result<Reply, StoreError> {
        let _sending = self.sending.read().await;
        self.check_connection(keys).await?;
        let call = self.scripts.call(keys, p, now_ms, rand, op);
        let mut conn = self.handle();
        let reply = if self.functions.load(Ordering::Acquire) {
            match self.count(&call, keys.state(), &mut conn).await? {
                Some(reply) => reply,
                None => self.deadline(keys.state(), self.fcall(&call, &mut conn)).await?,
            }
        } else {
            self.deadline(keys.state(), call.evalsha().invoke_async::<Vec<String>>(&mut conn)).await?
        };
        parse_reply(reply, keys.state())
    }

    /// A failure that only counts goes alone first, as the library's `count` with a deadline of
    /// its own: its reply, or `None` when it must go as a record (the function answered
    /// `general`, or the library is not loaded yet): nothing was written then, and the record
    /// gets the whole `op_timeout` too.
    async fn count(
        &self,
        call: &Call<'_>,
        key: &str,
        conn: &mut ConnHandle,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some(count) = call.count(Library::get()) else { return Ok(None) };
        let sent = async {
            match count.query_async::<Vec<String>>(conn).await {
                Ok(reply) if reply.len() == 1 && reply[0] == "general" => Ok(None),
                Ok(reply) => Ok(Some(reply)),
                Err(e) if function_missing(&e) => Ok(None),
                Err(e) => Err(e),
            }
        };
        self.deadline(key, sent).await
    }

    /// Waits until the script calls in flight when it was called have ended (each ends within
    /// its deadline; calls made meanwhile are not waited for): what another task took from a
    /// breaker's pending counts has then reached Redis or been put back.
    pub(crate) async fn settle(&self) {
        let _ = tokio::time::timeout(self.op_timeout.saturating_mul(4), self.sending.write()).await;
    }

    /// Runs `call` as FCALL, its config by its id alone; when the library does not know that id
    /// (loaded anew since this config was last sent), sends it again with the whole config,
    /// which the library keeps. When the server does not have the library (a new server, a
    /// `FUNCTION FLUSH`), loads it and sends the call again with the whole config. Both
    /// refusals come before the script writes anything, so sending again counts nothing twice.
    /// A library Redis will not load (anything but "already exists", which another process's
    /// load answers) turns this client to EVALSHA.
    async fn fcall(&self, call: &Call<'_>, conn: &mut ConnHandle) -> redis::RedisResult<Vec<String>> {
        let library = Library::get();
        match call.fcall(library, false).query_async(conn).await {
            Err(e) if unknown_config(&e) => return call.fcall(library, true).query_async(conn).await,
            Err(e) if function_missing(&e) => {}
            other => return other,
        }
        let loaded = redis::cmd("FUNCTION").arg("LOAD").arg(&library.code).query_async::<Value>(conn).await;
        match loaded {
            Ok(_) => {}
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) if e.is_unrecoverable_error() || e.is_timeout() || e.is_connection_dropped() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, library = %library.name, "redis would not load the functions library; sending the scripts with EVALSHA");
                self.functions.store(false, Ordering::Release);
                return call.evalsha().invoke_async(conn).await;
            }
        }
        call.fcall(library, true).query_async(conn).await
    }

    /// Reads one breaker's keys for operators.
    pub(crate) async fn status(&self, keys: &Keys) -> Result<crate::status::Raw, StoreError> {
        type Reply = (String, Vec<String>, Vec<String>, Vec<String>, i64, i64, i64, i64, Vec<String>, i64, u64);
        self.check_version(keys.state()).await?;
        let inv = self.scripts.status(keys);
        let mut conn = self.handle();
        let (now, state, probes, metrics, a, b, c, d, reporters, e, processes): Reply =
            self.deadline(keys.state(), inv.invoke_async(&mut conn)).await?;
        let now_ms = now.parse().map_err(|_| StoreError::Protocol {
            key: keys.state().to_string(),
            detail: format!("status time is {now:?}"),
        })?;
        Ok(crate::status::Raw { now_ms, state, probes, metrics, reporters, processes, pttl: [a, b, c, d, e] })
    }

    /// The last `count` entries of a breaker's history stream, newest first.
    pub(crate) async fn history(
        &self,
        keys: &Keys,
        count: usize,
    ) -> Result<Vec<crate::status::HistoryEntry>, StoreError> {
        type Entries = Vec<(String, Vec<(String, String)>)>;
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(keys.history()).arg("+").arg("-").arg("COUNT").arg(count.max(1));
        let entries: Entries = match self.query(&cmd, keys.history()).await {
            Ok(entries) => entries,
            // A key of another type set by hand: no history (the next transition replaces it).
            Err(StoreError::Refused { error, .. }) if error.to_string().contains("WRONGTYPE") => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(entries.into_iter().map(|(id, fields)| crate::status::HistoryEntry::from_fields(id, &fields)).collect())
    }

    /// The names of the breakers with keys under `prefix`, sorted: a SCAN of the node this
    /// store reaches (one name per key, each as the key holds it; see `Client::breakers`).
    pub(crate) async fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let escaped: String = prefix
            .chars()
            .flat_map(|c| if matches!(c, '?' | '[' | ']' | '\\') { vec!['\\', c] } else { vec![c] })
            .collect();
        let pattern = format!("{escaped}:{{*}}:*");
        let mut names = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.query(&cmd, &pattern).await?;
            for key in &keys {
                names.extend(name_from_listed_key(prefix, &String::from_utf8_lossy(key)).map(str::to_string));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Runs one plain command with the `op_timeout` deadline.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd, key: &str) -> Result<T, StoreError> {
        let mut conn = self.handle();
        self.deadline(key, cmd.query_async(&mut conn)).await
    }

    /// Awaits `fut` within `op_timeout`, turns its error into a [`StoreError`] about `key`, and
    /// feeds the up/down verdict (READONLY replaces the connection).
    async fn deadline<T>(
        &self,
        key: &str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.op_timeout, fut).await;
        crate::meters::redis_op(started.elapsed());
        let result = match result {
            Err(_) => Err(StoreError::Timeout(self.op_timeout)),
            Ok(r) => r.map_err(|e| {
                // Redis 7 answers READONLY; before 7 a write refused inside a script comes back
                // as ERR with the READONLY text inside (a failover all the same).
                let readonly = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                    || e.to_string().contains("READONLY You can't write against a read only replica");
                if readonly {
                    tracing::warn!(key, "redis answered READONLY (a demoted master); reconnecting");
                    self.replace_connection();
                    return StoreError::Unreachable(e);
                }
                StoreError::from_redis(e, key)
            }),
        };
        match &result {
            Ok(_) => self.note_success(),
            Err(e) if e.is_outage() => self.note_outage(e),
            Err(e) => tracing::warn!(key, error = %e, "redis refused an operation"),
        }
        result
    }
}
