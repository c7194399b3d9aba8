//! Where breaker state lives: Redis (the shared store) or this process (the local machine).

use crate::clock::Clock;
use crate::error::StoreError;
use crate::machine::{Machine, Op, Params, Reply, Transition};
use crate::name::Keys;
use crate::scripts::{Scripts, parse_reply};
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connection that can be cloned per operation: a `ConnectionManager`, a
/// `MultiplexedConnection`, a cluster connection, or the user's own.
pub(crate) trait SharedConn: Send + Sync + 'static {
    fn handle(&self) -> ConnHandle;
}

impl<C> SharedConn for C
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn handle(&self) -> ConnHandle {
        ConnHandle(Box::new(self.clone()))
    }
}

pub(crate) struct ConnHandle(Box<dyn ConnectionLike + Send>);

impl ConnectionLike for ConnHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }
    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

const MIN_BACKOFF_MS: u64 = 250;
const MAX_BACKOFF_MS: u64 = 5_000;

/// The Redis side: scripts, a deadline on every operation, and the up/down verdict on Redis.
pub(crate) struct RedisStore {
    conn: Box<dyn SharedConn>,
    scripts: Scripts,
    op_timeout: Duration,
    pub(crate) channel: String,
    threshold: u32,
    errors_in_row: AtomicU32,
    /// While Redis is down: when the next trial call may go (ms since `base`); 0 when up.
    retry_at: AtomicU64,
    backoff_ms: AtomicU64,
    base: Instant,
}

impl RedisStore {
    pub(crate) fn new(conn: Box<dyn SharedConn>, op_timeout: Duration, channel: String, threshold: u32) -> RedisStore {
        RedisStore {
            conn,
            scripts: Scripts::new(),
            op_timeout,
            channel,
            threshold,
            errors_in_row: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(MIN_BACKOFF_MS),
            base: Instant::now(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True while Redis is treated as down; the one caller that finds a trial due gets `false`
    /// (and so tries Redis), every other caller keeps `true` and never waits on Redis.
    pub(crate) fn skip_redis(&self) -> bool {
        let retry_at = self.retry_at.load(Ordering::Acquire);
        if retry_at == 0 {
            return false;
        }
        let now = self.elapsed_ms();
        if now < retry_at {
            return true;
        }
        let next = now + self.backoff_ms.load(Ordering::Relaxed);
        self.retry_at.compare_exchange(retry_at, next, Ordering::AcqRel, Ordering::Acquire).is_err()
    }

    pub(crate) fn is_down(&self) -> bool {
        self.retry_at.load(Ordering::Acquire) != 0
    }

    fn note_success(&self) {
        if self.errors_in_row.swap(0, Ordering::AcqRel) >= self.threshold {
            tracing::info!("redis-breaker: redis answers again; breakers are decided by redis");
        }
        self.retry_at.store(0, Ordering::Release);
        self.backoff_ms.store(MIN_BACKOFF_MS, Ordering::Relaxed);
    }

    fn note_outage(&self, err: &StoreError) {
        let n = self.errors_in_row.fetch_add(1, Ordering::AcqRel) + 1;
        if n < self.threshold {
            return;
        }
        if n == self.threshold {
            tracing::warn!(error = %err, "redis-breaker: redis is down after {n} errors in a row; deciding calls by the degraded mode");
        }
        let backoff = self.backoff_ms.load(Ordering::Relaxed);
        self.backoff_ms.store((backoff * 2).min(MAX_BACKOFF_MS), Ordering::Relaxed);
        self.retry_at.store(self.elapsed_ms() + backoff, Ordering::Release);
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
        let inv = self.scripts.invocation(keys, p, &self.channel, now_ms, rand, op);
        let mut conn = self.conn.handle();
        let reply = self.deadline(keys.state(), inv.invoke_async::<Vec<String>>(&mut conn)).await?;
        parse_reply(reply, keys.state())
    }

    /// Runs one plain command with the `op_timeout` deadline.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd, key: &str) -> Result<T, StoreError> {
        let mut conn = self.conn.handle();
        self.deadline(key, cmd.query_async(&mut conn)).await
    }

    async fn deadline<T>(
        &self,
        key: &str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.op_timeout, fut).await {
            Err(_) => Err(StoreError::Timeout(self.op_timeout)),
            Ok(r) => r.map_err(|e| StoreError::from_redis(e, key)),
        };
        match &result {
            Ok(_) => self.note_success(),
            Err(e) if e.is_outage() => self.note_outage(e),
            Err(e) => tracing::warn!(key, error = %e, "redis-breaker: redis refused an operation"),
        }
        result
    }
}

/// The in-process store: one [`Machine`] per breaker name, on the given clock.
#[derive(Debug)]
pub(crate) struct LocalStore {
    machines: Mutex<HashMap<String, Machine>>,
    pub(crate) clock: Arc<dyn Clock>,
    last_incarnation: AtomicU64,
}

impl LocalStore {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> LocalStore {
        LocalStore { machines: Mutex::new(HashMap::new()), clock, last_incarnation: AtomicU64::new(0) }
    }

    pub(crate) fn run(&self, name: &str, p: &Params, op: &Op, rand: f64) -> (Reply, Vec<Transition>) {
        let now = self.clock.now_ms();
        let candidate = now.saturating_mul(1000);
        let prev = self.last_incarnation.fetch_max(candidate, Ordering::AcqRel);
        let incarnation = if candidate > prev { candidate } else { prev + 1 };
        // A poisoned lock only means another caller panicked mid-call; the map is still whole.
        let mut machines = self.machines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let machine = machines.entry(name.to_string()).or_default();
        machine.run(p, now, rand, incarnation, op)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let machines = self.machines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names: Vec<String> = machines.keys().cloned().collect();
        names.sort();
        names
    }
}
