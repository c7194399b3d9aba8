//! [`ClientConfig`]: the settings every breaker of one [`Client`](crate::Client) shares, and
//! [`Degraded`], what decides a call Redis cannot.

use crate::config::Config;
use crate::config::fields::{at_least_1ms, check, setters_and_getters};
use crate::duration::{self, serde_human};
use crate::error::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// What a process does with a call it cannot decide through Redis (Redis down, slow, or
/// refusing one breaker's script).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Degraded {
    /// Decide by an in-process breaker with the same config (the default).
    #[default]
    Local,
    /// Allow every call.
    FailOpen,
    /// Reject every call.
    FailClosed,
}

impl Degraded {
    /// The mode's name as config files and the CLI write it: `local`, `fail-open`, `fail-closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Degraded::Local => "local",
            Degraded::FailOpen => "fail-open",
            Degraded::FailClosed => "fail-closed",
        }
    }
}

impl std::fmt::Display for Degraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Degraded {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Degraded, ConfigError> {
        match s {
            "local" => Ok(Degraded::Local),
            "fail-open" => Ok(Degraded::FailOpen),
            "fail-closed" => Ok(Degraded::FailClosed),
            other => Err(ConfigError::Field {
                field: "degraded",
                reason: format!(
                    "must be local, fail-open or fail-closed, got {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            }),
        }
    }
}

/// Settings shared by every breaker of one [`Client`](crate::Client).
///
/// ```
/// use redis_breaker::{ClientConfig, Degraded};
/// use std::time::Duration;
///
/// let config = ClientConfig::builder()
///     .prefix("myapp:breaker")
///     .op_timeout(Duration::from_millis(50))
///     .degraded(Degraded::FailOpen)
///     .build()?;
/// assert_eq!(config.prefix(), "myapp:breaker");
/// # Ok::<(), redis_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ClientConfigBuilder")]
pub struct ClientConfig {
    pub(crate) prefix: String,
    pub(crate) op_timeout: Duration,
    pub(crate) degraded: Degraded,
    pub(crate) cache_ttl: Duration,
    pub(crate) subscribed_cache_ttl: Duration,
    pub(crate) flush_interval: Duration,
    pub(crate) metrics_interval: Duration,
    pub(crate) store_failure_threshold: u32,
    pub(crate) client_id: Option<String>,
    pub(crate) reporter_id: Option<String>,
    pub(crate) events_keepalive: Duration,
    pub(crate) functions: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            prefix: ClientConfig::DEFAULT_PREFIX.to_string(),
            op_timeout: ClientConfig::DEFAULT_OP_TIMEOUT,
            degraded: Degraded::Local,
            cache_ttl: ClientConfig::DEFAULT_CACHE_TTL,
            subscribed_cache_ttl: ClientConfig::DEFAULT_SUBSCRIBED_CACHE_TTL,
            flush_interval: ClientConfig::DEFAULT_FLUSH_INTERVAL,
            metrics_interval: ClientConfig::DEFAULT_METRICS_INTERVAL,
            store_failure_threshold: ClientConfig::DEFAULT_STORE_FAILURE_THRESHOLD,
            client_id: None,
            reporter_id: None,
            events_keepalive: ClientConfig::DEFAULT_EVENTS_KEEPALIVE,
            functions: true,
        }
    }
}

/// Builds a [`ClientConfig`]; also deserializes from any serde format, refusing unknown fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfigBuilder {
    prefix: Option<String>,
    #[serde(with = "serde_human::option")]
    op_timeout: Option<Duration>,
    degraded: Option<Degraded>,
    #[serde(with = "serde_human::option")]
    cache_ttl: Option<Duration>,
    #[serde(with = "serde_human::option")]
    subscribed_cache_ttl: Option<Duration>,
    #[serde(with = "serde_human::option")]
    flush_interval: Option<Duration>,
    #[serde(with = "serde_human::option")]
    metrics_interval: Option<Duration>,
    store_failure_threshold: Option<u32>,
    client_id: Option<String>,
    reporter_id: Option<String>,
    #[serde(with = "serde_human::option")]
    events_keepalive: Option<Duration>,
    functions: Option<bool>,
}

impl ClientConfigBuilder {
    /// Key prefix (default `breaker`): keys are `<prefix>:{<name>}:state` and so on.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// This client's id, carried by the events its script calls cause and the history entries
    /// they write (default: 16 random hex digits, new for each client). 1-64 bytes of printable
    /// ASCII without whitespace. When set, it is also the client's identity for a quorum unless
    /// [`reporter_id`](Self::reporter_id) or `$REDIS_BREAKER_REPORTER_ID` gives one.
    #[must_use]
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// This client's identity for a quorum ([`ConfigBuilder::quorum`](crate::ConfigBuilder::quorum)):
    /// the member it reports as in `<prefix>:{<name>}:reporters` and counts as in
    /// `<prefix>:{<name>}:processes`. Processes with one identity count once, so a process that
    /// restarts (a crash loop, a rolling deploy on the same host) is still one reporter.
    /// 1-64 bytes of printable ASCII without whitespace. The first of these applies: this
    /// setting; the environment variable `REDIS_BREAKER_REPORTER_ID`
    /// ([`ClientConfig::REPORTER_ID_ENV`]); [`client_id`](Self::client_id) when set; the host
    /// name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`); the client's random id. See
    /// [`Client::reporter_id`](crate::Client::reporter_id).
    #[must_use]
    pub fn reporter_id(mut self, id: impl Into<String>) -> Self {
        self.reporter_id = Some(id.into());
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// [`ConfigError::Field`] naming the first invalid field.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        let d = ClientConfig::default();
        let c = ClientConfig {
            prefix: self.prefix.unwrap_or(d.prefix),
            op_timeout: self.op_timeout.unwrap_or(d.op_timeout),
            degraded: self.degraded.unwrap_or(d.degraded),
            cache_ttl: self.cache_ttl.unwrap_or(d.cache_ttl),
            subscribed_cache_ttl: self.subscribed_cache_ttl.unwrap_or(d.subscribed_cache_ttl),
            flush_interval: self.flush_interval.unwrap_or(d.flush_interval),
            metrics_interval: self.metrics_interval.unwrap_or(d.metrics_interval),
            store_failure_threshold: self.store_failure_threshold.unwrap_or(d.store_failure_threshold),
            client_id: self.client_id,
            reporter_id: self.reporter_id,
            events_keepalive: self.events_keepalive.unwrap_or(d.events_keepalive),
            functions: self.functions.unwrap_or(d.functions),
        };
        for (field, id) in [("client_id", &c.client_id), ("reporter_id", &c.reporter_id)] {
            if let Some(id) = id {
                check(valid_id(id), field, || {
                    format!("must be 1-64 bytes of printable ASCII without whitespace, got {id:?}")
                })?;
            }
        }
        check(crate::name::valid_prefix(&c.prefix), "prefix", || {
            format!("must be 1-100 bytes of printable ASCII without whitespace, `{{`, `}}` or `*`, got {:?}", c.prefix)
        })?;
        at_least_1ms(c.op_timeout, "op_timeout")?;
        at_least_1ms(c.flush_interval, "flush_interval")?;
        at_least_1ms(c.events_keepalive, "events_keepalive")?;
        for (field, ttl) in [("cache_ttl", c.cache_ttl), ("subscribed_cache_ttl", c.subscribed_cache_ttl)] {
            check(ttl <= ClientConfig::MAX_CACHE_TTL, field, || {
                format!(
                    "must be at most {}, got {}: a process would miss transitions nobody announced (keys deleted by hand) for that long",
                    duration::format(ClientConfig::MAX_CACHE_TTL),
                    duration::format(ttl)
                )
            })?;
        }
        at_least_1ms(c.metrics_interval, "metrics_interval")?;
        check(c.store_failure_threshold >= 1, "store_failure_threshold", || "must be at least 1".into())?;
        Ok(c)
    }
}

setters_and_getters! { ClientConfigBuilder => ClientConfig {
    /// Deadline of every Redis operation, connecting included (default 100ms).
    op_timeout: Duration;
    /// What to do with calls while Redis cannot decide them (default [`Degraded::Local`]).
    degraded: Degraded;
    /// Lifetime of a local snapshot while the event subscription is not known to be alive, and
    /// of any snapshot learnt from an event (default 1s, at most 1m; zero asks Redis on every
    /// call, whatever `subscribed_cache_ttl` says).
    cache_ttl: Duration;
    /// Lifetime of a snapshot Redis answered while the event subscription is verified alive
    /// (default 30s, at most 1m; a value under `cache_ttl` means `cache_ttl`). Every transition
    /// is published, so a live subscription keeps snapshots current; this bounds what no event
    /// announces (keys deleted or edited by hand). A dropped or silent subscription marks every
    /// snapshot stale at once.
    subscribed_cache_ttl: Duration;
    /// Interval of the flush of counts that Redis's decisions need (default 1s): successes of a
    /// breaker with a rate rule, for its rolling window.
    flush_interval: Duration;
    /// Interval of the flush of counts that only feed metrics (default 30s; one under
    /// `flush_interval` means `flush_interval`): successes of a breaker without a rate rule, ignored, rejected and
    /// degraded counts. [`Client::flush`](crate::Client::flush) and
    /// [`shutdown`](crate::Client::shutdown) send everything; a process that dies without them
    /// loses at most this much of its metrics, and never a failure.
    metrics_interval: Duration;
    /// Redis errors in a row after which the store is treated as down (default 3).
    store_failure_threshold: u32;
    /// How often the event subscription is checked with a PING (default 1s). A subscription
    /// that does not answer within `op_timeout` is dropped and made again, and every snapshot
    /// asks Redis meanwhile: a silently dead connection is noticed within this interval plus
    /// `op_timeout`.
    events_keepalive: Duration;
    /// Run the scripts as a Redis Functions library, called with FCALL, where the server
    /// (Redis or Valkey >= 7.0) and the user's ACL (`+fcall +function|load`) allow it (default
    /// true); else, and with `false`, each script is sent with EVALSHA. The library is loaded once
    /// (`FUNCTION LOAD`, which Redis keeps in its RDB and AOF and copies to replicas, named
    /// `redis_breaker_<hash of the code>`), so its helpers are made once instead of on every call,
    /// and a config is sent and validated once (calls then name it by an id; a library loaded
    /// anew is sent it again): a failure record costs Redis about half the time.
    functions: bool;
}}

impl TryFrom<ClientConfigBuilder> for ClientConfig {
    type Error = ConfigError;
    fn try_from(b: ClientConfigBuilder) -> Result<Self, ConfigError> {
        b.build()
    }
}

impl ClientConfig {
    /// The longest `cache_ttl` accepted: a process whose events were lost would otherwise miss
    /// other processes' transitions for longer.
    pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
    /// Default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "breaker";
    /// Default deadline of every Redis operation.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(100);
    /// Default lifetime of a local snapshot without a verified event subscription.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);
    /// Default lifetime of a snapshot Redis answered while the event subscription is alive.
    pub const DEFAULT_SUBSCRIBED_CACHE_TTL: Duration = Duration::from_secs(30);
    /// Default interval of the PING that checks the event subscription.
    pub const DEFAULT_EVENTS_KEEPALIVE: Duration = Duration::from_secs(1);
    /// Default interval of the flush of counts Redis's decisions need (rolling windows).
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    /// Default interval of the flush of counts that only feed metrics.
    pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(30);
    /// Default count of Redis errors in a row after which the store is treated as down.
    pub const DEFAULT_STORE_FAILURE_THRESHOLD: u32 = 3;

    /// A builder with every field at its default.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder::default()
    }
    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The client id set in the config, if any (see [`Client::id`](crate::Client::id)).
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
    /// The quorum identity set in the config, if any (see
    /// [`Client::reporter_id`](crate::Client::reporter_id) for the one in use).
    pub fn reporter_id(&self) -> Option<&str> {
        self.reporter_id.as_deref()
    }

    /// Checks what depends on both configs: batches must flush several times per window (a
    /// rolling window's successes; under a quorum, the process's word that it is active and
    /// the repeat of its report go with the background flush too).
    pub(crate) fn check_breaker(&self, config: &Config) -> Result<(), ConfigError> {
        let flushed = config.windowed() || config.under_quorum();
        check(!flushed || self.flush_interval <= config.window / 10, "window", || {
            format!(
                "must be at least 10 x the client's flush_interval ({}), got {}",
                duration::format(self.flush_interval),
                duration::format(config.window)
            )
        })
    }

    /// The environment variable that sets a client's quorum identity when the config does not
    /// ([`ClientConfigBuilder::reporter_id`]): e.g. a pod's or a node's name.
    pub const REPORTER_ID_ENV: &'static str = "REDIS_BREAKER_REPORTER_ID";

    /// The quorum identity of a client whose own id is `client_id`: the config's `reporter_id`,
    /// else `$REDIS_BREAKER_REPORTER_ID`, else the config's `client_id`, else the host name,
    /// else `client_id`. A value from the environment or the host that is not a usable id is
    /// passed over (with a warning for the environment).
    pub(crate) fn resolve_reporter_id(&self, client_id: &str) -> String {
        self.pick_reporter_id(std::env::var(ClientConfig::REPORTER_ID_ENV).ok(), host_name, client_id)
    }

    /// `resolve_reporter_id` with the environment's value and the host's name given.
    fn pick_reporter_id(&self, env: Option<String>, host: impl FnOnce() -> Option<String>, client_id: &str) -> String {
        if let Some(id) = &self.reporter_id {
            return id.clone();
        }
        match env {
            Some(id) if valid_id(&id) => return id,
            Some(id) => tracing::warn!(
                value = %id.escape_debug(),
                "${} must be 1-64 bytes of printable ASCII without whitespace: ignored",
                ClientConfig::REPORTER_ID_ENV
            ),
            None => {}
        }
        if let Some(id) = &self.client_id {
            return id.clone();
        }
        host().filter(|name| valid_id(name)).unwrap_or_else(|| client_id.to_string())
    }
}

/// Whether `id` may name a client or a reporter: 1-64 bytes of printable ASCII, no whitespace.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// This host's name, when it is a usable id: the kernel's (Linux), else `$HOSTNAME`.
fn host_name() -> Option<String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string());
    kernel.into_iter().chain(std::env::var("HOSTNAME").ok()).find(|name| valid_id(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_ttl_has_an_upper_bound() {
        let err = ClientConfig::builder().cache_ttl(Duration::from_secs(3600)).build().expect_err("too long");
        assert!(matches!(err, ConfigError::Field { field: "cache_ttl", .. }), "{err}");
        assert!(ClientConfig::builder().cache_ttl(Duration::from_secs(60)).build().is_ok());
    }

    #[test]
    fn flush_interval_must_fit_ten_times_in_the_window() {
        let client = ClientConfig::default();
        let config = Config::builder().failure_rate(0.5).window(Duration::from_secs(5)).build().expect("valid");
        assert!(matches!(client.check_breaker(&config), Err(ConfigError::Field { field: "window", .. })));
        // A quorum's reports and the word that a process is active go with the background flush.
        let quorum = Config::builder().quorum(2).window(Duration::from_secs(5)).build().expect("valid");
        assert!(matches!(client.check_breaker(&quorum), Err(ConfigError::Field { field: "window", .. })));
        let fraction = Config::builder().quorum_fraction(0.3).window(Duration::from_secs(5)).build().expect("valid");
        assert!(matches!(client.check_breaker(&fraction), Err(ConfigError::Field { field: "window", .. })));
        // The consecutive rule alone keeps no window: any flush_interval goes.
        let consecutive = Config::builder().window(Duration::from_secs(5)).build().expect("valid");
        assert!(client.check_breaker(&consecutive).is_ok());
        assert!(client.check_breaker(&Config::builder().quorum(2).build().expect("valid")).is_ok());
    }

    #[test]
    fn the_quorum_identity_is_the_first_usable_of_config_env_client_id_host_and_random() {
        let plain = ClientConfig::default();
        let host = || Some("web-7".to_string());
        assert_eq!(plain.pick_reporter_id(None, host, "4f1c"), "web-7", "the host by default");
        assert_eq!(plain.pick_reporter_id(None, || None, "4f1c"), "4f1c", "no host name: the random id");
        assert_eq!(plain.pick_reporter_id(None, || Some("a b".into()), "4f1c"), "4f1c", "a host name with a space");
        assert_eq!(plain.pick_reporter_id(Some("pod-3".into()), host, "4f1c"), "pod-3", "the environment");
        assert_eq!(plain.pick_reporter_id(Some(String::new()), host, "4f1c"), "web-7", "an empty one is passed over");
        let with_client_id = ClientConfig::builder().client_id("worker-a").build().expect("valid");
        assert_eq!(with_client_id.pick_reporter_id(None, host, "worker-a"), "worker-a");
        assert_eq!(with_client_id.pick_reporter_id(Some("pod-3".into()), host, "worker-a"), "pod-3");
        let set = ClientConfig::builder().client_id("worker-a").reporter_id("rack-2").build().expect("valid");
        assert_eq!(set.pick_reporter_id(Some("pod-3".into()), host, "worker-a"), "rack-2", "the config first");
        let err = ClientConfig::builder().reporter_id("two words").build().expect_err("a space");
        assert!(matches!(err, ConfigError::Field { field: "reporter_id", .. }), "{err}");
    }

    #[test]
    fn degraded_modes_round_trip_through_their_names() {
        for m in [Degraded::Local, Degraded::FailOpen, Degraded::FailClosed] {
            assert_eq!(m.to_string().parse::<Degraded>(), Ok(m));
        }
        assert!(matches!("open".parse::<Degraded>(), Err(ConfigError::Field { field: "degraded", .. })));
    }

    #[test]
    fn deserializes_with_human_durations_and_kebab_case_modes() {
        let client: ClientConfig =
            serde_json::from_str(r#"{"prefix":"svc","degraded":"fail-closed","op_timeout":"50ms"}"#).expect("valid");
        assert_eq!(client.degraded(), Degraded::FailClosed);
        assert_eq!(client.op_timeout(), Duration::from_millis(50));
        assert!(serde_json::from_str::<ClientConfig>(r#"{"op_timout":"50ms"}"#).is_err(), "unknown fields are refused");
    }
}
