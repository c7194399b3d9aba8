//! Per-breaker [`Config`], validated once in `build()`, and [`ClientConfig`](crate::ClientConfig)
//! (`client.rs`); the setters and the checks both builders share are in `fields.rs`.

pub(crate) mod client;
mod fields;
#[cfg(test)]
mod tests;

use crate::duration::{self, serde_human};
use crate::error::ConfigError;
use fields::{at_least_1ms, check, fraction, setters_and_getters};
use serde::Deserialize;
use std::time::Duration;

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
    pub(crate) shadow: bool,
    pub(crate) quorum: u32,
    pub(crate) quorum_fraction: Option<f64>,
    pub(crate) recovery_ramp: Duration,
    pub(crate) ramp_start: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failure_threshold: Config::DEFAULT_FAILURE_THRESHOLD,
            success_threshold: Config::DEFAULT_SUCCESS_THRESHOLD,
            half_open_max_probes: Config::DEFAULT_HALF_OPEN_MAX_PROBES,
            base_recovery: Config::DEFAULT_BASE_RECOVERY,
            max_recovery: Config::DEFAULT_MAX_RECOVERY,
            multiplier: Config::DEFAULT_MULTIPLIER,
            jitter: Config::DEFAULT_JITTER,
            call_timeout: Config::DEFAULT_CALL_TIMEOUT,
            probe_lease: Config::DEFAULT_PROBE_LEASE,
            state_ttl: Config::DEFAULT_STATE_TTL,
            metrics_ttl: Config::DEFAULT_METRICS_TTL,
            failure_rate: None,
            slow_call_rate: None,
            slow_call_duration: Config::DEFAULT_SLOW_CALL_DURATION,
            minimum_calls: Config::DEFAULT_MINIMUM_CALLS,
            window: Config::DEFAULT_WINDOW,
            failure_expiry: Config::DEFAULT_FAILURE_EXPIRY,
            shadow: false,
            quorum: 1,
            quorum_fraction: None,
            recovery_ramp: Duration::ZERO,
            ramp_start: Config::DEFAULT_RAMP_START,
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
    shadow: Option<bool>,
    quorum: Option<u32>,
    quorum_fraction: Option<f64>,
    #[serde(with = "serde_human::option")]
    recovery_ramp: Option<Duration>,
    ramp_start: Option<f64>,
}

setters_and_getters! { ConfigBuilder => Config {
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
    /// Shadow mode, for a safe rollout (default false): the breaker decides and records as
    /// usual, trips in Redis like any other, but never rejects a call in this process; each call
    /// it would have rejected counts in `redis_breaker_shadow_rejected_total`, and the first of
    /// each open epoch is logged and sent to subscribers as `EventKind::ShadowRejected`. Not
    /// part of the config fingerprint: shadow and enforcing processes decide alike.
    shadow: bool;
    /// Distinct processes whose own calls must meet the trip rule before the whole fleet opens
    /// (default 1: the fleet's outcomes together decide, one shared trip rule). With a quorum
    /// above 1, each process applies the rules (consecutive failures, rates) to its own calls:
    /// a process that meets them alone opens for itself only (its own backoff and probes,
    /// [`EventKind::OwnOpen`](crate::EventKind::OwnOpen), [`Rejected::own`](crate::Rejected::own))
    /// and reports itself in `<prefix>:{<name>}:reporters` (again every quarter `window` while
    /// it stays open); when `quorum` processes reported within `window`, the fleet opens once,
    /// as it does with a quorum of 1. One bad node (its
    /// own network path, a starved pod) then cannot open the breaker for the healthy ones.
    /// Processes count by their identity ([`Client::reporter_id`](crate::Client::reporter_id),
    /// by default the host's name): one that restarts, or several on one host, count once;
    /// [`Client::shutdown`](crate::Client::shutdown) withdraws a process's reports.
    /// Between 1 and 10000; 2 or 3 suit fleets of ten or more. Part of the config fingerprint
    /// when above 1.
    quorum: u32;
    /// Gentle recovery (default 0: off): after a half-open breaker closes on its probes'
    /// successes, every process admits a fraction of its calls that rises linearly from
    /// `ramp_start` to all of them over this long, so the fleet's load returns to a downstream
    /// that has just recovered (cold caches, a shrunken pool) over the ramp instead of within
    /// the same millisecond. Each process computes the fraction from the ramp's time left that
    /// Redis returns (no clock is compared across hosts) and draws per call; a call held back
    /// fails with [`Error::Rejected`](crate::Error::Rejected) whose state is closed and whose
    /// [`Rejected::admitted`](crate::Rejected::admitted) says the fraction, counts as `throttled`
    /// in metrics and nothing toward a trip. Failures during the ramp count as usual (the rules
    /// may trip again; the next recovery ramps again); forced states and `reset` end it. The
    /// ramp of the process whose probe closed the breaker is the fleet's (the state hash keeps
    /// it). At most 1h. Part of the config fingerprint when on.
    recovery_ramp: Duration;
    /// Where a recovery ramp starts: the fraction of calls admitted just after the breaker
    /// closes (default 0.1), in `[0.001, 1]` (whole thousandths: the state hash keeps it in
    /// per mille). Used only with a `recovery_ramp`.
    ramp_start: f64;
}}

impl ConfigBuilder {
    /// Turns on the failure-rate rule: trip when at least this fraction of the window's calls
    /// failed (e.g. 0.5), once the window holds `minimum_calls`.
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = Some(rate);
        self
    }

    /// Scales the quorum with the fleet: the fleet opens only when at least this fraction of
    /// the processes that recorded calls within `window` reported their own breaker open (e.g.
    /// 0.3), and at least `quorum` of them; it puts the breaker under a quorum even with a
    /// `quorum` of 1. Costs each process a few Redis commands about ten times per window (it
    /// says it is active in `<prefix>:{<name>}:processes`), none per call. The fraction is
    /// decided once that key has collected for a fifth of the window (a new key, or one Redis
    /// lost, counts only part of the fleet): until then a report waits, and the process's
    /// next one (a quarter window later) decides. In (0, 1].
    #[must_use]
    pub fn quorum_fraction(mut self, fraction: f64) -> Self {
        self.quorum_fraction = Some(fraction);
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
            shadow: self.shadow.unwrap_or(d.shadow),
            quorum: self.quorum.unwrap_or(d.quorum),
            quorum_fraction: self.quorum_fraction,
            recovery_ramp: self.recovery_ramp.unwrap_or(d.recovery_ramp),
            ramp_start: self.ramp_start.unwrap_or(d.ramp_start),
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

/// Longest duration a script argument may carry: 2^43 ms, about 278 years, so that a deadline
/// `now + duration` stays an exact integer in Lua (`MAX_DURATION` in the generated `lua/lib/protocol.lua`).
pub(crate) const MAX_DURATION: Duration = Duration::from_millis(1 << 43);

/// The largest quorum (`MAX_QUORUM` in the generated `lua/lib/protocol.lua`).
pub(crate) const MAX_QUORUM: u32 = 10_000;

/// The longest recovery ramp (`MAX_RAMP` in the generated `lua/lib/protocol.lua`): a stored ramp
/// longer than this (set by hand) is ended by the next script that reads it.
pub(crate) const MAX_RAMP: Duration = Duration::from_secs(3600);

impl Config {
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
    /// Default `ramp_start`: a recovery ramp admits a tenth of the calls at first.
    pub const DEFAULT_RAMP_START: f64 = 0.1;

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

    /// The quorum's fraction of the active processes, when set.
    pub fn quorum_fraction(&self) -> Option<f64> {
        self.quorum_fraction
    }

    /// Whether the fleet opens by a quorum of processes: `quorum` above 1, or a
    /// `quorum_fraction`.
    pub fn under_quorum(&self) -> bool {
        self.quorum > 1 || self.quorum_fraction.is_some()
    }

    /// `ramp_start` in per mille, as the state hash keeps it.
    pub(crate) fn ramp_permille(&self) -> u64 {
        (self.ramp_start * 1000.0).round().clamp(1.0, 1000.0) as u64
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
                duration::format(self.base_recovery),
                duration::format(self.max_recovery)
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
                duration::format(self.probe_lease),
                duration::format(self.call_timeout)
            )
        })?;
        fraction(self.failure_rate, "failure_rate")?;
        fraction(self.slow_call_rate, "slow_call_rate")?;
        check(self.minimum_calls >= 1, "minimum_calls", || "must be at least 1".into())?;
        check(self.window >= Duration::from_millis(100) && self.window <= MAX_DURATION, "window", || {
            format!("must be at least 100ms, got {}", duration::format(self.window))
        })?;
        check((1..=MAX_QUORUM).contains(&self.quorum), "quorum", || {
            format!("must be between 1 and {MAX_QUORUM}, got {}", self.quorum)
        })?;
        fraction(self.quorum_fraction, "quorum_fraction")?;
        check(self.recovery_ramp <= MAX_RAMP, "recovery_ramp", || {
            format!("must be at most {}, got {}", duration::format(MAX_RAMP), duration::format(self.recovery_ramp))
        })?;
        check(self.recovery_ramp.is_zero() || self.recovery_ramp >= Duration::from_millis(1), "recovery_ramp", || {
            "must be 0 (off) or at least 1ms".into()
        })?;
        let per_mille = self.ramp_start * 1000.0;
        check(
            self.ramp_start.is_finite()
                && (0.001..=1.0).contains(&self.ramp_start)
                && (per_mille - per_mille.round()).abs() < 1e-6,
            "ramp_start",
            || format!("must be in [0.001, 1] in whole thousandths, got {}", self.ramp_start),
        )?;
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
        // The quorum only when it is not the default: fingerprints of earlier versions still match.
        let text = if self.quorum > 1 { format!("{text}|q{}", self.quorum) } else { text };
        let text = match self.quorum_fraction {
            Some(f) => format!("{text}|qf{f}"),
            None => text,
        };
        // The ramp only when on, for the same reason.
        let text = if self.recovery_ramp.is_zero() {
            text
        } else {
            format!("{text}|r{}:{}", self.recovery_ramp.as_millis(), self.ramp_permille())
        };
        // FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
        let hash =
            text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        format!("{hash:016x}")
    }
}
