//! [`Client`]: the connection, the loaded scripts, and the breakers of one process. This file
//! holds the handle and what it does once made; `connect.rs` how it is made, `shared.rs` what
//! every breaker borrows from the client, `registry.rs` the breakers by name, `tasks.rs` the
//! background tasks (the flush, the watch on Redis), `subscription.rs` the event subscription (`push_events.rs` its topology on the command
//! connection).

mod connect;
pub(crate) mod push_events;
pub(crate) mod registry;
pub(crate) mod shared;
pub(crate) mod subscription;
pub(crate) mod tasks;

use crate::breaker::Breaker;
use crate::breaker::health::StoreStatus;
use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::config::Config;
use crate::config::client::ClientConfig;
use crate::error::{ConfigError, StoreError};
use crate::events::Subscription;
use crate::name::{Keys, validate_name};
use std::sync::Arc;

/// One process's access to shared breakers: the Redis connection, the scripts, the local
/// snapshots and the background flush of batched counts. Cheap to clone; make one per process.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redis_breaker::{Client, Config};
///
/// let client = Client::connect("redis://127.0.0.1:6379").await?;
/// let payments = client.breaker("payments", Config::default())?;
/// let answer = payments.execute(|| async { Ok::<_, std::io::Error>(42) }).await;
/// client.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle<Inner>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is never shown: it may hold a password.
        let shared = &self.handle.shared;
        f.debug_struct("Client")
            .field("prefix", &shared.config.prefix)
            .field("store", &shared.store)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// This client's id (from [`ClientConfig`], else random): the events its script calls
    /// cause carry it, and [`Event::caused_here`](crate::Event) compares with it.
    pub fn id(&self) -> &str {
        &self.handle.shared.id
    }

    /// This client's identity for a quorum: under it this process reports its own breaker open
    /// and counts among the active processes. Processes with one identity count once, so a
    /// process that restarts is still one reporter. By default the host name; see
    /// [`ClientConfigBuilder::reporter_id`](crate::ClientConfigBuilder::reporter_id) and
    /// `$REDIS_BREAKER_REPORTER_ID` for the order in which it is chosen.
    pub fn reporter_id(&self) -> &str {
        &self.handle.shared.reporter
    }

    /// Whether the subscription to `<prefix>:events` is live.
    pub fn events_subscribed(&self) -> bool {
        self.handle.shared.is_subscribed()
    }

    /// Where this client decides calls right now; no Redis command.
    pub fn store_status(&self) -> StoreStatus {
        self.handle.shared.store.status()
    }

    /// The client-wide settings.
    pub fn config(&self) -> &ClientConfig {
        &self.handle.shared.config
    }

    /// The breaker named `name`, shared with every process that uses the same name and prefix.
    /// Asking again for the same name returns the same breaker.
    ///
    /// # Errors
    /// [`ConfigError::Name`] when the name breaks the naming rule (checked before Redis is
    /// touched) or this client already has that breaker with another config;
    /// [`ConfigError::Field`] when `config` does not fit the client's settings.
    pub fn breaker(&self, name: &str, config: Config) -> Result<Breaker, ConfigError> {
        validate_name(name)?;
        let shared = &self.handle.shared;
        shared.config.check_breaker(&config)?;
        let keys = Keys::new(&shared.config.prefix, name);
        let mut made = false;
        let inner = self
            .handle
            .get_or_insert(
                name,
                |existing| existing.config == config,
                || {
                    made = true;
                    Inner::new(name, keys, config.clone(), shared.clone())
                },
            )
            .map_err(|_| ConfigError::Name {
                name: name.to_string(),
                reason: "this client already has a breaker of that name with a different config".into(),
            })?;
        if made {
            shared.breaker_made.notify_one();
        }
        Ok(Breaker::new(inner, self.handle.clone()))
    }

    /// Transitions of every breaker under this client's prefix, from any process (including
    /// breakers this client has not made). For one breaker, see
    /// [`Breaker::subscribe`](crate::Breaker::subscribe).
    pub fn subscribe_all(&self) -> Subscription {
        Subscription { rx: self.handle.shared.all_events.subscribe() }
    }

    /// Names of the breakers that have state or metrics under this client's prefix (a SCAN of
    /// Redis; a healthy breaker that never left closed has only its metrics; for an in-memory
    /// client, those it has made).
    ///
    /// Each name is as the key holds it: a key written by something else may hold one that
    /// cannot be a breaker (it breaks the [naming rule](crate::name::validate_name); a key that
    /// is not UTF-8 is read lossily, so its name breaks the rule too). It is listed all the
    /// same, for the caller to skip and report; [`breaker`](Client::breaker) refuses it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be read.
    pub async fn breakers(&self) -> Result<Vec<String>, StoreError> {
        let shared = &self.handle.shared;
        shared.store.names(&shared.config.prefix).await
    }

    /// Sends every breaker's batched counts now (breakers with none send nothing).
    ///
    /// # Errors
    /// The first [`StoreError`]; every breaker is still tried, and unsent counts are kept.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let pending = self.handle.registered().into_iter().filter(|inner| inner.has_unsent()).collect();
        let result = tasks::flush_all(&self.handle, pending).await;
        // Counts another task took (a background flush, another call's record) travel in its
        // script call: wait for the calls in flight, and send what a failed one put back.
        self.handle.shared.store.settle().await;
        let put_back: Vec<_> = self.handle.registered().into_iter().filter(|inner| inner.has_unsent()).collect();
        if result.is_ok() && !put_back.is_empty() {
            return tasks::flush_all(&self.handle, put_back).await;
        }
        result
    }

    /// The names of the breakers this client holds in memory, sorted. A breaker leaves when no
    /// [`Breaker`] handle refers to it, nothing is pending and its snapshot has expired, so
    /// names from unbounded input (tenant ids) do not grow the process; asking for the name
    /// again makes it again.
    pub fn local_breakers(&self) -> Vec<String> {
        self.handle.names()
    }

    /// Flushes what is pending and, under a quorum, withdraws this process's reports (its own
    /// breaker open) from every breaker it reported to, before it returns: call it before a
    /// process exits, so a process that leaves no longer counts toward a quorum. (A process
    /// that makes calls afterwards reports again when its own breaker opens again.)
    ///
    /// # Errors
    /// As [`flush`](Client::flush); a report that could not be withdrawn (Redis down) still
    /// stops counting a window after it was last said.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let flushed = self.flush().await;
        let withdrawn = tasks::withdraw_reports(&self.handle).await;
        flushed.and(withdrawn)
    }
}
