//! Errors: what a protected call returns, and what building or reaching a breaker can fail with.

use crate::State;
use crate::ticks::Deadline;
use std::time::{Duration, Instant};

/// What [`Breaker::execute`](crate::Breaker::execute) returns when the call did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The breaker is open (or half-open with every probe out): the call was not made.
    #[error(transparent)]
    Rejected(Rejected),
    /// The call ran and returned this error.
    #[error("the protected call failed: {0}")]
    Inner(E),
    /// The call took longer than `call_timeout`; it was dropped and counted as a failure.
    #[error(transparent)]
    Timeout(TimedOut),
}

/// A call the breaker turned away; returned by [`Breaker::acquire`](crate::Breaker::acquire), and
/// inside [`Error::Rejected`].
///
/// It holds the state's deadline, not a duration: [`retry_after`](Rejected::retry_after) (and
/// the message) reads the clock when asked, so the time it tells is the time left then, never
/// longer. A rejection costs no precise clock read until someone asks.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// The state that rejected the call.
    pub state: State,
    /// True when this process's own breaker rejected the call (under a quorum, its own calls
    /// failed while the fleet stays closed); `state` is then its own breaker's state.
    pub own: bool,
    left: Left,
}

/// When a rejected call may be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// At this instant of this process's monotonic clock: the deadline of the snapshot, or of
    /// Redis's reply counted from when its request was sent.
    Until(Deadline),
    /// This long, as decided on the client's own clock (the in-process breaker's, which may be
    /// a test's `FakeClock`), or as given to [`Rejected::new`].
    For(Duration),
    /// Forced open until an operator resets it.
    Never,
    /// Closed, held back by a recovery ramp that admitted this fraction (per mille) of calls:
    /// worth retrying after this short pause (a retry at once would defeat the ramp).
    Ramp(u16, Duration),
}

impl Rejected {
    /// A rejection by `state`, worth retrying after `retry_after` (`None`: forced open until
    /// reset), which [`retry_after`](Rejected::retry_after) then tells as given. For tests and
    /// for code that turns calls away on the breaker's behalf.
    pub fn new(state: State, retry_after: Option<Duration>) -> Rejected {
        Rejected { state, own: false, left: retry_after.map_or(Left::Never, Left::For) }
    }

    /// A rejection whose deadline is `until` on this process's monotonic clock (`None`: forced
    /// open until reset).
    #[inline]
    pub(crate) fn until(state: State, until: Option<Deadline>, own: bool) -> Rejected {
        Rejected { state, own, left: until.map_or(Left::Never, Left::Until) }
    }

    /// A call a closed breaker's recovery ramp held back while it admitted `admitted` of them,
    /// with `ramp_left` of the ramp to run: worth retrying after a pause drawn from half to all
    /// of the shorter of a second and the ramp's time left, so that callers that retry a
    /// held-back call do not turn the ramp into a delay of one draw.
    pub(crate) fn ramp(admitted: f64, ramp_left: Duration) -> Rejected {
        let permille = (admitted * 1000.0).floor().clamp(0.0, 1000.0) as u16;
        // Half to all of the shorter of a second and the ramp's time left (integer nanoseconds:
        // `Duration::mul_f64`'s checked conversion cost the held-back path a few nanoseconds).
        let half = u64::try_from(ramp_left.min(Duration::from_secs(1)).as_nanos()).unwrap_or(0) / 2;
        let pause = Duration::from_nanos(half + (crate::ramp::unit() * half as f64) as u64);
        Rejected { state: State::Closed, own: false, left: Left::Ramp(permille, pause) }
    }

    /// When a recovery ramp held the call back ([`ConfigBuilder::recovery_ramp`](crate::ConfigBuilder::recovery_ramp)):
    /// the fraction of calls it admitted then (to the thousandth, rounded down); `state` is then
    /// [`State::Closed`], and [`retry_after`](Rejected::retry_after) a short pause (at most a
    /// second, drawn per rejection: a retry at once would only draw again, and callers that
    /// retry held-back calls would defeat the ramp). `None` for every other rejection.
    pub fn admitted(&self) -> Option<f64> {
        match self.left {
            Left::Ramp(permille, _) => Some(f64::from(permille) / 1000.0),
            _ => None,
        }
    }

    /// A rejection decided on the client's own clock, `retry_after` from then.
    pub(crate) fn after(state: State, retry_after: Option<Duration>, own: bool) -> Rejected {
        Rejected { own, ..Rejected::new(state, retry_after) }
    }

    /// How long until a call may be let through, counted now (zero once the deadline passed);
    /// `None` when forced open until reset. Each call reads the clock: ask once and keep the
    /// answer when one figure must serve twice. A rejection decided by the in-process breaker
    /// (in-memory client, degraded `Local`, a quorum's own breaker) tells the time left on the
    /// client's clock when it decided, as that clock may be a test's
    /// [`FakeClock`](crate::FakeClock).
    pub fn retry_after(&self) -> Option<Duration> {
        match self.left {
            Left::Until(at) => Some(at.left(Instant::now())),
            Left::For(d) => Some(d),
            Left::Never => None,
            Left::Ramp(_, pause) => Some(pause),
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Left::Ramp(permille, pause) = self.left {
            return write!(
                f,
                "circuit breaker is {}, {}: this call was held back; retry after {}ms",
                self.state,
                ramp_text(permille),
                pause.as_millis()
            );
        }
        let own = if self.own { " in this process" } else { "" };
        write!(f, "circuit breaker is {}{own}; {}", self.state, retry_text(self.retry_after()))
    }
}

impl std::fmt::Debug for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejected")
            .field("state", &self.state)
            .field("retry_after", &self.retry_after())
            .field("own", &self.own)
            .field("admitted", &self.admitted())
            .finish()
    }
}

impl std::error::Error for Rejected {}

impl<E> From<Rejected> for Error<E> {
    fn from(r: Rejected) -> Self {
        Error::Rejected(r)
    }
}

/// A call that took longer than its breaker's `call_timeout` (the duration): it was dropped and
/// counted as a failure. Inside [`Error::Timeout`], and the error a tower `BreakerService` adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the protected call timed out after {}ms", .after.as_millis())]
#[non_exhaustive]
pub struct TimedOut {
    /// The `call_timeout` the call exceeded.
    pub after: Duration,
}

impl TimedOut {
    /// A timeout after `after` (for tests and for services that time calls out themselves).
    pub fn new(after: Duration) -> TimedOut {
        TimedOut { after }
    }
}

/// A recovery ramp's word: `recovering: 35% admitted`.
pub(crate) fn ramp_text(permille: u16) -> String {
    let tenths = u32::from(permille);
    if tenths % 10 == 0 {
        format!("recovering: {}% admitted", tenths / 10)
    } else {
        format!("recovering: {}.{}% admitted", tenths / 10, tenths % 10)
    }
}

pub(crate) fn retry_text(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("retry after {}ms", d.as_millis()),
        None => "forced open until an operator resets it".to_string(),
    }
}

impl<E> Error<E> {
    /// True when the breaker rejected the call without running it.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected(_))
    }

    /// The inner error, when the call ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }
}

/// A config or breaker name that cannot be used; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field broke its rule.
    #[error("invalid config: {field} {reason}")]
    Field {
        /// The field's name, as in the builder and in config files.
        field: &'static str,
        /// The rule it broke, and the value it had.
        reason: String,
    },
    /// A breaker name broke the naming rule.
    #[error("invalid breaker name {name:?}: {reason}")]
    Name {
        /// The refused name (as given, possibly cut short).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The oldest server version this crate supports (Redis and Valkey number alike).
pub(crate) const MIN_SERVER: (u32, u32) = (6, 2);

/// Redis could not carry out an operation; the message says which key or command, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis did not answer within `op_timeout`. A write may still have been applied.
    #[error("redis did not answer within {}ms", .0.as_millis())]
    Timeout(Duration),
    /// Redis could not be reached, the connection broke, or the server serves nobody yet
    /// (LOADING after a restart, MASTERDOWN from a replica cut off from its primary,
    /// CLUSTERDOWN, TRYAGAIN, READONLY from a demoted master). The message includes Redis's own
    /// error, which is therefore not also given as `source()` (a report prints it once).
    #[error("redis is unreachable: {0}")]
    Unreachable(redis::RedisError),
    /// Redis answered with an error about this breaker's keys or scripts (WRONGTYPE, NOPERM,
    /// a refused argument): not an outage. The message includes Redis's own error.
    #[error("redis refused the operation on {key}: {error}")]
    Refused {
        /// The breaker's state key.
        key: String,
        /// Redis's own error (of the [`redis`](crate::redis) crate this one re-exports).
        error: redis::RedisError,
    },
    /// The operation is not available on this kind of client.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The TLS connection to Redis failed (an unknown CA, a server name that does not match its
    /// certificate, a client certificate the server refused): an outage until the certificates
    /// are fixed. The message includes the TLS library's own words.
    #[error(
        "TLS with redis failed: {0} (check the CA, the server's name or IP in its certificate, and the client certificate)"
    )]
    Tls(redis::RedisError),
    /// The Redis user may not run commands the scripts need on this breaker's keys or events
    /// channel (found before the first script call, with `redis.acl_check_cmd`, Redis >= 7.0):
    /// nothing was written. Calls are decided by the degraded mode; asked again every few
    /// seconds, so fixing the ACL is noticed.
    #[error(
        "the redis user may not run {} on {key} or its events channel; add them to its ACL (docs/keys.md's minimal ACL lists all); nothing was written",
        .commands.join(", ")
    )]
    Denied {
        /// The breaker's state key.
        key: String,
        /// The commands refused, lower case (`hdel`, `pttl`, ...).
        commands: Vec<String>,
    },
    /// An operator's write ([`force_open`](crate::Breaker::force_open),
    /// [`force_close`](crate::Breaker::force_close), [`reset`](crate::Breaker::reset) and their
    /// `_noted` forms) was refused before anything was written: it would change the state, and
    /// the redis user may not publish the transition's event on the breaker's events channel,
    /// so processes holding an older snapshot would go on deciding from it for up to
    /// `subscribed_cache_ttl` (30s by default). Redis and Valkey >= 7.0 tell this ahead
    /// (`redis.acl_check_cmd`); before 7.0 the write is made and the returned
    /// [`Snapshot::announced`](crate::Snapshot::announced) is false. Grant the user the channel
    /// (`grant` says which) and write again. Transitions caused by calls are never refused.
    #[error(
        "the redis user may not publish on {channel}, so no process would hear of this write: nothing was written; grant it {grant} in its ACL and write again"
    )]
    PublishDenied {
        /// The breaker's state key.
        key: String,
        /// The channel the event would have gone to (`<prefix>:events`, or the breaker's own
        /// `<prefix>:{<name>}:events` where events are sharded).
        channel: String,
        /// What the ACL lacks, e.g. `&breaker:events (and +publish)`.
        grant: String,
    },
    /// The server is older than the oldest this crate supports: calls are decided by the
    /// degraded mode, and the server is asked again every few seconds (an upgrade is noticed).
    #[error("{server} {found} is older than {}.{}, the oldest server this crate supports; upgrade it", MIN_SERVER.0, MIN_SERVER.1)]
    ServerTooOld {
        /// The server's name as it reports it (`redis`, `valkey`).
        server: String,
        /// The version it reports (`6.0.9`), or what was learnt of it.
        found: String,
    },
    /// An argument of the operation is out of range (e.g. a `force_open` duration beyond what
    /// the scripts accept); nothing was sent to Redis.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Redis refused this client's credentials: NOAUTH (the server wants a password and none
    /// was given) or WRONGPASS (a wrong username or password, or a disabled user). Nothing ran.
    /// Like an outage, calls are decided by the degraded mode at once, and `store_status()` and
    /// `health().store` say [`StoreStatus::AuthFailed`](crate::StoreStatus::AuthFailed) until
    /// Redis accepts the credentials (asked again with backoff, so a fixed ACL is noticed). The
    /// message includes Redis's own words, never the password.
    #[error(
        "redis refused this client's credentials: {0} (check the username and password given for redis, and the user's ACL)"
    )]
    Auth(redis::RedisError),
    /// Redis answered something this crate cannot read.
    #[error("unexpected reply from redis for {key}: {detail}")]
    Protocol {
        /// The breaker's state key.
        key: String,
        /// What was wrong with the reply.
        detail: String,
    },
}

impl StoreError {
    /// True when the error says Redis is unreachable or slow (an outage), rather than refusing
    /// one breaker's operation.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Timeout(_) | StoreError::Unreachable(_) | StoreError::Tls(_) | StoreError::Auth(_))
    }

    pub(crate) fn from_redis(e: redis::RedisError, key: &str) -> StoreError {
        // NOAUTH (no password given) and WRONGPASS (a wrong one) come back as server errors of
        // those codes on a command; a refused AUTH while connecting as AuthenticationFailed. A
        // client with no password whose first command is long (a script) is answered
        // "Protocol error: unauthenticated multibulk length" (or "bulk length") instead.
        let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
            || e.to_string().contains("Protocol error: unauthenticated");
        if auth {
            return StoreError::Auth(e);
        }
        if let Some(denied) = publish_denied(&e, key) {
            return denied;
        }
        let outage = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_unrecoverable_error()
            // The sentinels name no primary (yet): nothing can be decided through Redis.
            || e.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel
            // The server answers but serves nobody yet, and ran nothing: it is loading its data
            // after a restart (LOADING), a replica cut off from its primary (MASTERDOWN), a
            // cluster without its slots covered or moving a slot (CLUSTERDOWN, TRYAGAIN).
            || matches!(
                e.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                        | redis::ServerErrorKind::MasterDown
                        | redis::ServerErrorKind::ClusterDown
                        | redis::ServerErrorKind::TryAgain
                )
            );
        let said = e.to_string().to_ascii_lowercase();
        let tls = ["certificate", "tls", "handshake", "received fatal alert", "unknownissuer"]
            .iter()
            .any(|w| said.contains(w));
        if tls && (outage || e.kind() == redis::ErrorKind::Io) {
            return StoreError::Tls(e);
        }
        if outage { StoreError::Unreachable(e) } else { StoreError::Refused { key: key.to_string(), error: e } }
    }
}

/// `lua/control.lua`'s refusal of an operator's transition that Redis would not announce:
/// `ERR redis-breaker: this user may not publish on <channel>: nothing was written; grant <grant>`.
/// (Prefixes and breaker names hold no space, so the channel ends at the first ": nothing".)
fn publish_denied(e: &redis::RedisError, key: &str) -> Option<StoreError> {
    const SAID: &str = "redis-breaker: this user may not publish on ";
    let rest = e.detail()?.strip_prefix(SAID)?;
    let (channel, grant) = rest.split_once(": nothing was written; grant ")?;
    Some(StoreError::PublishDenied { key: key.to_string(), channel: channel.to_string(), grant: grant.to_string() })
}
