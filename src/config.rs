//! Per-breaker [`Config`] and client-wide [`ClientConfig`], each validated once in `build()`.

use crate::duration::{format_duration, serde_human};
use crate::error::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// Default `failure_threshold`: consecutive failures that open a closed breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Default `success_threshold`: probe successes that close a half-open breaker.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 2;
/// Default `half_open_max_probes`: probes out at once, fleet-wide.
pub const DEFAULT_HALF_OPEN_MAX_PROBES: u32 = 1;
/// Default `base_recovery`: the open time after the first trip.
pub const DEFAULT_BASE_RECOVERY: Duration = Duration::from_secs(30);
/// Default `max_recovery`: the cap on the open time.
pub const DEFAULT_MAX_RECOVERY: Duration = Duration::from_secs(300);
/// Default `multiplier` of the open time per further trip in a row.
pub const DEFAULT_MULTIPLIER: f64 = 2.0;
/// Default `jitter`: the open time is drawn from `d * (1 ± jitter)`.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Default `call_timeout`: a call that takes longer fails with [`Error::Timeout`](crate::Error::Timeout).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `probe_lease`: how long a half-open probe holds its permit at most. It outlives the
/// default `call_timeout` by more than the required margin (a tenth of the call timeout).
pub const DEFAULT_PROBE_LEASE: Duration = Duration::from_secs(35);
/// Default `state_ttl`: an idle breaker's keys expire this long after the last write.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(3600);
/// Default `metrics_ttl`: the metrics hash expires this long after the last write.
pub const DEFAULT_METRICS_TTL: Duration = Duration::from_secs(86_400);
/// Default `failure_expiry`: failures of the consecutive rule are forgotten when none was
/// recorded for this long, so sparse failures of a quiet service do not add up to a trip.
pub const DEFAULT_FAILURE_EXPIRY: Duration = Duration::from_secs(60);
/// Default `minimum_calls` in the window before a rate rule may trip.
pub const DEFAULT_MINIMUM_CALLS: u32 = 20;
/// Default `window` of the rate rules.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default `slow_call_duration`: a call at least this long is slow (when the slow rule is on).
pub const DEFAULT_SLOW_CALL_DURATION: Duration = Duration::from_secs(5);

/// The settings of one breaker. Every process that names the breaker should use the same; each
/// script call is decided by its caller's config, and a difference shows in
/// [`Health::config_matches`](crate::Health).
///
/// ```
/// use redis_breaker::Config;
/// use std::time::Duration;
///
/// let config = Config::builder()
///     .failure_threshold(3)
///     .base_recovery(Duration::from_secs(10))
///     .failure_rate(0.5)
///     .build()?;
/// assert_eq!(config.failure_threshold(), 3);
/// # Ok::<(), redis_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ConfigBuilder")]
pub struct Config {
    pub(crate) failure_threshold: u32,
    pub(crate) success_threshold: u32,
    pub(crate) half_open_max_probes: u32,
    pub(crate) base_recovery: Duration,
    pub(crate) max_recovery: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) call_timeout: Duration,
    pub(crate) probe_lease: Duration,
    pub(crate) state_ttl: Duration,
    pub(crate) metrics_ttl: Duration,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Duration,
    pub(crate) minimum_calls: u32,
    pub(crate) window: Duration,
    pub(crate) failure_expiry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            half_open_max_probes: DEFAULT_HALF_OPEN_MAX_PROBES,
            base_recovery: DEFAULT_BASE_RECOVERY,
            max_recovery: DEFAULT_MAX_RECOVERY,
            multiplier: DEFAULT_MULTIPLIER,
            jitter: DEFAULT_JITTER,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            probe_lease: DEFAULT_PROBE_LEASE,
            state_ttl: DEFAULT_STATE_TTL,
            metrics_ttl: DEFAULT_METRICS_TTL,
            failure_rate: None,
            slow_call_rate: None,
            slow_call_duration: DEFAULT_SLOW_CALL_DURATION,
            minimum_calls: DEFAULT_MINIMUM_CALLS,
            window: DEFAULT_WINDOW,
            failure_expiry: DEFAULT_FAILURE_EXPIRY,
        }
    }
}

/// Builds a [`Config`]; start from [`Config::builder`]. Unset fields keep their defaults.
///
/// It also reads from any serde format (with human durations such as `"30s"`), refusing unknown
/// fields, so a service can keep per-breaker settings in its own config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigBuilder {
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    half_open_max_probes: Option<u32>,
    #[serde(with = "serde_human::option")]
    base_recovery: Option<Duration>,
    #[serde(with = "serde_human::option")]
    max_recovery: Option<Duration>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
    #[serde(with = "serde_human::option")]
    call_timeout: Option<Duration>,
    #[serde(with = "serde_human::option")]
    probe_lease: Option<Duration>,
    #[serde(with = "serde_human::option")]
    state_ttl: Option<Duration>,
    #[serde(with = "serde_human::option")]
    metrics_ttl: Option<Duration>,
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    #[serde(with = "serde_human::option")]
    slow_call_duration: Option<Duration>,
    minimum_calls: Option<u32>,
    #[serde(with = "serde_human::option")]
    window: Option<Duration>,
    #[serde(with = "serde_human::option")]
    failure_expiry: Option<Duration>,
}

macro_rules! setters_and_getters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {
        impl ConfigBuilder {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = Some(value);
                    self
                }
            )*
        }
        impl Config {
            $(
                $(#[$doc])*
                pub fn $field(&self) -> $ty {
                    self.$field
                }
            )*
        }
    };
}

setters_and_getters! {
    /// Consecutive failures that open a closed breaker (default 5; 0 turns the rule off).
    failure_threshold: u32;
    /// Probe successes that close a half-open breaker (default 2).
    success_threshold: u32;
    /// Half-open probes out at once across the whole fleet (default 1).
    half_open_max_probes: u32;
    /// Open time after the first trip (default 30s).
    base_recovery: Duration;
    /// Cap on the open time (default 5m).
    max_recovery: Duration;
    /// Growth of the open time per further trip in a row (default 2).
    multiplier: f64;
    /// Spread of the open time, a fraction in `[0, 1)` (default 0.1).
    jitter: f64;
    /// Longest a call may take; a longer one is a failure (default 30s). `probe_lease` must
    /// outlive it by a tenth of it: `call_timeout + call_timeout / 10 <= probe_lease`.
    call_timeout: Duration;
    /// Longest a half-open probe holds its permit (default 35s); see `call_timeout`.
    probe_lease: Duration;
    /// How long an idle breaker's keys live after the last write (default 1h).
    state_ttl: Duration;
    /// How long the metrics hash lives after the last write (default 24h).
    metrics_ttl: Duration;
    /// Slow-call duration: a call that takes at least this long is slow (default 5s).
    slow_call_duration: Duration;
    /// Calls the window must hold before a rate rule may trip (default 20).
    minimum_calls: u32;
    /// Length of the rolling window of the rate rules, 10 buckets (default 60s).
    window: Duration;
    /// The consecutive-failure count starts again when no failure was recorded for this long
    /// (default 1m): two failures half an hour apart are not consecutive.
    failure_expiry: Duration;
}

impl ConfigBuilder {
    /// Turns on the failure-rate rule: trip when at least this fraction of the window's calls
    /// failed (e.g. 0.5), once the window holds `minimum_calls`.
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = Some(rate);
        self
    }

    /// Turns on the slow-call rule: trip when at least this fraction of the window's calls took
    /// `slow_call_duration` or longer.
    #[must_use]
    pub fn slow_call_rate(mut self, rate: f64) -> Self {
        self.slow_call_rate = Some(rate);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// [`ConfigError::Field`] naming the first invalid field and the rule it breaks.
    pub fn build(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let c = Config {
            failure_threshold: self.failure_threshold.unwrap_or(d.failure_threshold),
            success_threshold: self.success_threshold.unwrap_or(d.success_threshold),
            half_open_max_probes: self.half_open_max_probes.unwrap_or(d.half_open_max_probes),
            base_recovery: self.base_recovery.unwrap_or(d.base_recovery),
            max_recovery: self.max_recovery.unwrap_or(d.max_recovery),
            multiplier: self.multiplier.unwrap_or(d.multiplier),
            jitter: self.jitter.unwrap_or(d.jitter),
            call_timeout: self.call_timeout.unwrap_or(d.call_timeout),
            probe_lease: self.probe_lease.unwrap_or(d.probe_lease),
            state_ttl: self.state_ttl.unwrap_or(d.state_ttl),
            metrics_ttl: self.metrics_ttl.unwrap_or(d.metrics_ttl),
            failure_rate: self.failure_rate,
            slow_call_rate: self.slow_call_rate,
            slow_call_duration: self.slow_call_duration.unwrap_or(d.slow_call_duration),
            minimum_calls: self.minimum_calls.unwrap_or(d.minimum_calls),
            window: self.window.unwrap_or(d.window),
            failure_expiry: self.failure_expiry.unwrap_or(d.failure_expiry),
        };
        c.validate()?;
        Ok(c)
    }
}

impl TryFrom<ConfigBuilder> for Config {
    type Error = ConfigError;
    fn try_from(b: ConfigBuilder) -> Result<Self, ConfigError> {
        b.build()
    }
}

fn check(ok: bool, field: &'static str, rule: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::Field { field, reason: rule() }) }
}

fn at_least_1ms(d: Duration, field: &'static str) -> Result<(), ConfigError> {
    check(d >= Duration::from_millis(1), field, || format!("must be at least 1ms, got {}", format_duration(d)))
}

fn fraction(rate: Option<f64>, field: &'static str) -> Result<(), ConfigError> {
    match rate {
        None => Ok(()),
        Some(r) => check(r > 0.0 && r <= 1.0, field, || format!("must be in (0, 1], got {r}")),
    }
}

/// Longest duration a script argument may carry: 2^43 ms, about 278 years, so that a deadline
/// `now + duration` stays an exact integer in Lua (`MAX_DURATION` in `lua/lib/args.lua`).
pub(crate) const MAX_DURATION: Duration = Duration::from_millis(1 << 43);

impl Config {
    /// A builder with every field at its default.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The failure-rate threshold, when that rule is on.
    pub fn failure_rate(&self) -> Option<f64> {
        self.failure_rate
    }

    /// The slow-call-rate threshold, when that rule is on.
    pub fn slow_call_rate(&self) -> Option<f64> {
        self.slow_call_rate
    }

    pub(crate) fn windowed(&self) -> bool {
        self.failure_rate.is_some() || self.slow_call_rate.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check(self.success_threshold >= 1, "success_threshold", || "must be at least 1".into())?;
        check(self.half_open_max_probes >= 1, "half_open_max_probes", || "must be at least 1".into())?;
        for (d, field) in [
            (self.base_recovery, "base_recovery"),
            (self.max_recovery, "max_recovery"),
            (self.call_timeout, "call_timeout"),
            (self.probe_lease, "probe_lease"),
            (self.state_ttl, "state_ttl"),
            (self.metrics_ttl, "metrics_ttl"),
            (self.slow_call_duration, "slow_call_duration"),
            (self.failure_expiry, "failure_expiry"),
        ] {
            at_least_1ms(d, field)?;
            check(d <= MAX_DURATION, field, || "is too long".into())?;
        }
        check(self.max_recovery >= self.base_recovery, "max_recovery", || {
            format!(
                "must be at least base_recovery ({}), got {}",
                format_duration(self.base_recovery),
                format_duration(self.max_recovery)
            )
        })?;
        check(self.multiplier.is_finite() && (1.0..=1000.0).contains(&self.multiplier), "multiplier", || {
            format!("must be between 1 and 1000, got {}", self.multiplier)
        })?;
        check((0.0..1.0).contains(&self.jitter), "jitter", || format!("must be in [0, 1), got {}", self.jitter))?;
        // The lease starts on Redis's clock before the acquire reply travels, the call's timer
        // after it arrives: the lease must outlive the call by a margin, or a hung probe's
        // timeout reaches Redis after its lease and the breaker stays half-open for ever.
        check(self.call_timeout + self.call_timeout / 10 <= self.probe_lease, "call_timeout", || {
            format!(
                "must leave probe_lease ({}) a tenth more than itself (call_timeout + call_timeout/10 <= probe_lease), got {}: a timed-out probe could outlive its lease",
                format_duration(self.probe_lease),
                format_duration(self.call_timeout)
            )
        })?;
        fraction(self.failure_rate, "failure_rate")?;
        fraction(self.slow_call_rate, "slow_call_rate")?;
        check(self.minimum_calls >= 1, "minimum_calls", || "must be at least 1".into())?;
        check(self.window >= Duration::from_millis(100) && self.window <= MAX_DURATION, "window", || {
            format!("must be at least 100ms, got {}", format_duration(self.window))
        })?;
        check(self.failure_threshold > 0 || self.windowed(), "failure_threshold", || {
            "is 0 (rule off) and no rate rule is on: the breaker could never open".into()
        })
    }

    /// A short fingerprint of every field that decides a transition; the state hash records the
    /// last writer's, so a fleet running two configs shows it.
    pub(crate) fn fingerprint(&self) -> String {
        let text = format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{:?}|{}|{}|{}",
            self.failure_threshold,
            self.success_threshold,
            self.half_open_max_probes,
            self.base_recovery.as_millis(),
            self.max_recovery.as_millis(),
            self.multiplier,
            self.jitter,
            self.probe_lease.as_millis(),
            self.slow_call_duration.as_millis(),
            self.failure_rate,
            self.slow_call_rate,
            self.minimum_calls,
            self.window.as_millis(),
            self.failure_expiry.as_millis(),
        );
        // FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
        let hash =
            text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        format!("{hash:016x}")
    }
}

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

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "breaker";
/// Default deadline of every Redis operation.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(100);
/// Default lifetime of a local snapshot.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Default interval of the PING that checks the event subscription.
pub const DEFAULT_EVENTS_KEEPALIVE: Duration = Duration::from_secs(2);
/// Longest `cache_ttl` accepted.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default interval between flushes of batched counts.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default count of Redis errors in a row after which the store is treated as down.
pub const DEFAULT_STORE_FAILURE_THRESHOLD: u32 = 3;

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
    pub(crate) flush_interval: Duration,
    pub(crate) store_failure_threshold: u32,
    pub(crate) client_id: Option<String>,
    pub(crate) events_keepalive: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            prefix: DEFAULT_PREFIX.to_string(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            degraded: Degraded::Local,
            cache_ttl: DEFAULT_CACHE_TTL,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            store_failure_threshold: DEFAULT_STORE_FAILURE_THRESHOLD,
            client_id: None,
            events_keepalive: DEFAULT_EVENTS_KEEPALIVE,
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
    flush_interval: Option<Duration>,
    store_failure_threshold: Option<u32>,
    client_id: Option<String>,
    #[serde(with = "serde_human::option")]
    events_keepalive: Option<Duration>,
}

impl ClientConfigBuilder {
    /// Key prefix (default `breaker`): keys are `<prefix>:{<name>}:state` and so on.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// Deadline of every Redis operation, connecting included (default 100ms).
    #[must_use]
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = Some(d);
        self
    }
    /// What to do with calls while Redis cannot decide them (default [`Degraded::Local`]).
    #[must_use]
    pub fn degraded(mut self, mode: Degraded) -> Self {
        self.degraded = Some(mode);
        self
    }
    /// Lifetime of a local snapshot (default 1s, at most 1m; zero asks Redis on every call).
    #[must_use]
    pub fn cache_ttl(mut self, d: Duration) -> Self {
        self.cache_ttl = Some(d);
        self
    }
    /// Interval between flushes of batched counts (default 1s).
    #[must_use]
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = Some(d);
        self
    }
    /// Redis errors in a row after which the store is treated as down (default 3).
    #[must_use]
    pub fn store_failure_threshold(mut self, n: u32) -> Self {
        self.store_failure_threshold = Some(n);
        self
    }
    /// How often the event subscription is checked with a PING (default 2s). A subscription
    /// that does not answer within `max(op_timeout, 1s)` is dropped and made again, and every
    /// snapshot asks Redis meanwhile: a silently dead connection is noticed within about
    /// this interval plus that deadline.
    #[must_use]
    pub fn events_keepalive(mut self, d: Duration) -> Self {
        self.events_keepalive = Some(d);
        self
    }
    /// This client's id, carried by the events its script calls cause (default: 16 random hex
    /// digits, new for each client). 1-64 bytes of printable ASCII without whitespace.
    #[must_use]
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
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
            flush_interval: self.flush_interval.unwrap_or(d.flush_interval),
            store_failure_threshold: self.store_failure_threshold.unwrap_or(d.store_failure_threshold),
            client_id: self.client_id,
            events_keepalive: self.events_keepalive.unwrap_or(d.events_keepalive),
        };
        if let Some(id) = &c.client_id {
            check(!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()), "client_id", || {
                format!("must be 1-64 bytes of printable ASCII without whitespace, got {id:?}")
            })?;
        }
        check(crate::name::valid_prefix(&c.prefix), "prefix", || {
            format!("must be 1-100 bytes of printable ASCII without whitespace, `{{`, `}}` or `*`, got {:?}", c.prefix)
        })?;
        at_least_1ms(c.op_timeout, "op_timeout")?;
        at_least_1ms(c.flush_interval, "flush_interval")?;
        at_least_1ms(c.events_keepalive, "events_keepalive")?;
        check(c.cache_ttl <= MAX_CACHE_TTL, "cache_ttl", || {
            format!(
                "must be at most {}, got {}: a process would miss other processes' transitions for that long when an event is lost",
                format_duration(MAX_CACHE_TTL),
                format_duration(c.cache_ttl)
            )
        })?;
        check(c.store_failure_threshold >= 1, "store_failure_threshold", || "must be at least 1".into())?;
        Ok(c)
    }
}

impl TryFrom<ClientConfigBuilder> for ClientConfig {
    type Error = ConfigError;
    fn try_from(b: ClientConfigBuilder) -> Result<Self, ConfigError> {
        b.build()
    }
}

impl ClientConfig {
    /// A builder with every field at its default.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder::default()
    }
    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The deadline of every Redis operation.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }
    /// The degraded mode.
    pub fn degraded(&self) -> Degraded {
        self.degraded
    }
    /// The lifetime of a local snapshot.
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }
    /// The interval between flushes of batched counts.
    pub fn flush_interval(&self) -> Duration {
        self.flush_interval
    }
    /// Redis errors in a row after which the store is treated as down.
    pub fn store_failure_threshold(&self) -> u32 {
        self.store_failure_threshold
    }
    /// How often the event subscription is checked.
    pub fn events_keepalive(&self) -> Duration {
        self.events_keepalive
    }
    /// The client id set in the config, if any (see [`Client::id`](crate::Client::id)).
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Checks what depends on both configs: batches must flush several times per window.
    pub(crate) fn check_breaker(&self, config: &Config) -> Result<(), ConfigError> {
        check(!config.windowed() || self.flush_interval <= config.window / 10, "window", || {
            format!(
                "must be at least 10 x the client's flush_interval ({}), got {}",
                format_duration(self.flush_interval),
                format_duration(config.window)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<Config, ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn every_invalid_field_is_named() {
        let b = Config::builder;
        assert_eq!(field_of(b().success_threshold(0).build()), "success_threshold");
        assert_eq!(field_of(b().half_open_max_probes(0).build()), "half_open_max_probes");
        assert_eq!(field_of(b().base_recovery(Duration::ZERO).build()), "base_recovery");
        assert_eq!(field_of(b().max_recovery(Duration::from_secs(1)).build()), "max_recovery");
        assert_eq!(field_of(b().multiplier(0.5).build()), "multiplier");
        assert_eq!(field_of(b().multiplier(f64::NAN).build()), "multiplier");
        assert_eq!(field_of(b().jitter(1.0).build()), "jitter");
        assert_eq!(field_of(b().jitter(-0.1).build()), "jitter");
        assert_eq!(field_of(b().call_timeout(Duration::from_secs(60)).build()), "call_timeout");
        let equal = Duration::from_secs(10);
        assert_eq!(field_of(b().call_timeout(equal).probe_lease(equal).build()), "call_timeout");
        let lease = Duration::from_secs(11);
        assert!(b().call_timeout(equal).probe_lease(lease).build().is_ok(), "a tenth more is enough");
        let d = Config::default();
        assert!(d.call_timeout() + d.call_timeout() / 10 <= d.probe_lease(), "the defaults keep the margin");
        assert_eq!(field_of(b().probe_lease(Duration::ZERO).build()), "probe_lease");
        assert_eq!(field_of(b().state_ttl(Duration::ZERO).build()), "state_ttl");
        assert_eq!(field_of(b().metrics_ttl(Duration::ZERO).build()), "metrics_ttl");
        assert_eq!(field_of(b().failure_rate(0.0).build()), "failure_rate");
        assert_eq!(field_of(b().failure_rate(1.5).build()), "failure_rate");
        assert_eq!(field_of(b().slow_call_rate(f64::NAN).build()), "slow_call_rate");
        assert_eq!(field_of(b().slow_call_duration(Duration::ZERO).build()), "slow_call_duration");
        assert_eq!(field_of(b().minimum_calls(0).build()), "minimum_calls");
        assert_eq!(field_of(b().failure_rate(0.5).window(Duration::from_millis(50)).build()), "window");
        assert_eq!(field_of(b().failure_threshold(0).build()), "failure_threshold");
        assert_eq!(field_of(b().base_recovery(Duration::from_secs(u64::MAX / 2)).build()), "base_recovery");
    }

    #[test]
    fn deserializes_human_durations_and_refuses_unknown_fields() {
        let c: Config =
            serde_json::from_str(r#"{"failure_threshold":3,"base_recovery":"10s","window":"1m","failure_rate":0.5}"#)
                .expect("valid config");
        assert_eq!(c.base_recovery(), Duration::from_secs(10));
        assert_eq!(c.failure_rate(), Some(0.5));
        let unknown = serde_json::from_str::<Config>(r#"{"failure_treshold":3}"#).expect_err("unknown field");
        assert!(unknown.to_string().contains("failure_treshold"), "{unknown}");
        let invalid = serde_json::from_str::<Config>(r#"{"jitter":2}"#).expect_err("invalid");
        assert!(invalid.to_string().contains("jitter"), "{invalid}");
        let duration = serde_json::from_str::<Config>(r#"{"probe_lease":"30 seconds"}"#).expect_err("bad duration");
        assert!(duration.to_string().contains("30s"), "{duration}");
        let client: ClientConfig =
            serde_json::from_str(r#"{"prefix":"svc","degraded":"fail-closed","op_timeout":"50ms"}"#).expect("valid");
        assert_eq!(client.degraded(), Degraded::FailClosed);
    }

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
    }

    #[test]
    fn fingerprint_changes_with_the_config() {
        let a = Config::default().fingerprint();
        assert_eq!(a.len(), 16);
        assert_eq!(a, Config::default().fingerprint());
        assert_ne!(a, Config::builder().failure_threshold(6).build().expect("valid").fingerprint());
    }
}
