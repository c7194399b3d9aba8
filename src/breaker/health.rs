//! What a process can report about a breaker without running a call: its [`Snapshot`], where
//! its calls are decided ([`StoreStatus`]), and its [`Health`].

use crate::state::State;
use serde::Serialize;

/// What a process knows of a breaker, from its local snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// The breaker's name.
    pub name: String,
    /// The state when last seen.
    pub state: State,
    /// Changes whenever the stored state was lost and recreated.
    pub incarnation: u64,
    /// +1 on every transition.
    pub epoch: u64,
    /// Failures counted toward the consecutive rule in this closed epoch.
    pub failures: u64,
    /// Whether the snapshot may still decide calls without asking Redis.
    pub fresh: bool,
    /// Why the breaker is in its state, as Redis last said.
    pub reason: String,
    /// Whether the transition into this state was announced on the events channel. False when
    /// Redis refused its event (a user without PUBLISH rights on the channel, e.g. Redis 7's
    /// `acl-pubsub-default resetchannels`): the state is written, but processes that hold an
    /// older snapshot learn it only when theirs expires (up to `subscribed_cache_ttl`), and
    /// every process trusts this state for `cache_ttl` only. The snapshot a
    /// [`force_open`](crate::Breaker::force_open), [`force_close`](crate::Breaker::force_close)
    /// or [`reset`](crate::Breaker::reset) returns says it of that write; an operator's tool
    /// should warn and fail when it is false.
    pub announced: bool,
    /// The recovery ramp of a closed breaker while it runs
    /// ([`ConfigBuilder::recovery_ramp`](crate::ConfigBuilder::recovery_ramp)): the fraction of
    /// calls this process admits now is its [`admitted`](crate::Ramp::admitted).
    pub ramp: Option<crate::Ramp>,
}

impl Snapshot {
    /// The operator's warning when [`announced`](Snapshot::announced) is false, else `None`.
    pub fn unannounced_warning(&self) -> Option<String> {
        (!self.announced).then(|| {
            format!(
                "breaker {} is {} in redis, but its event was not published (the redis user may not publish on the events channel): processes learn it only when their snapshots expire (subscribed_cache_ttl, 30s by default); allow the channel in the ACL (&<prefix>:events)",
                self.name, self.state
            )
        })
    }
}

/// Where a process decides a breaker's calls right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreStatus {
    /// Redis answers and decides.
    Redis,
    /// Redis is treated as down: calls follow the degraded mode.
    RedisDown,
    /// Redis refused this client's credentials (NOAUTH: none given where a password is
    /// required; WRONGPASS: a wrong username or password): calls follow the degraded mode, as
    /// with `RedisDown`, until Redis accepts them. See [`StoreError::Auth`](crate::StoreError::Auth).
    AuthFailed,
    /// The client is in-memory ([`Client::in_memory`](crate::Client::in_memory)).
    InMemory,
}

/// A breaker's health as this process sees it; [`Breaker::health`](crate::Breaker::health) refreshes it from Redis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The snapshot after the refresh.
    pub snapshot: Snapshot,
    /// Where calls are decided.
    pub store: StoreStatus,
    /// The degraded mode used while Redis is down.
    pub degraded_mode: &'static str,
    /// False when the last writer of the state used a different config (a rolling deploy).
    pub config_matches: bool,
    /// This process's config fingerprint.
    pub config_fingerprint: String,
    /// Whether the client's subscription to transitions is live.
    pub events_subscribed: bool,
    /// This client's id ([`Client::id`](crate::Client::id)).
    pub client_id: String,
    /// True when the breaker is in shadow mode (it never rejects a call in this process).
    pub shadow: bool,
    /// How this client's script calls reach Redis: `"functions"` (FCALL of the crate's
    /// Functions library), `"evalsha"`, or `"none"` (in-memory). See
    /// [`ClientConfig::functions`](crate::ClientConfig::functions).
    pub scripts: &'static str,
    /// The breaker's quorum ([`ConfigBuilder::quorum`](crate::ConfigBuilder::quorum); 1: none).
    pub quorum: u32,
    /// The breaker's quorum fraction, when set
    /// ([`ConfigBuilder::quorum_fraction`](crate::ConfigBuilder::quorum_fraction)).
    pub quorum_fraction: Option<f64>,
    /// Under a quorum, the state of this process's own breaker: `Open` or `HalfOpen` while its
    /// own calls failed and the fleet stays closed (it rejects its own calls with
    /// [`Rejected::own`](crate::Rejected::own)). `None` without a quorum.
    pub own_state: Option<State>,
    /// Under a quorum, true while this process counts itself among the fleet's failing
    /// reporters (it reported its own breaker open and has not withdrawn that). It says so
    /// again every quarter `window` while its own trip is in force; once its own backoff ended
    /// with no call to probe, Redis stops counting it a window later.
    pub reporting: bool,
}
