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
    /// [`Rejected::local`](crate::Rejected)). `None` without a quorum.
    pub local_state: Option<State>,
    /// Under a quorum, true while this process counts itself among the fleet's failing
    /// reporters (it reported its own breaker open and has not withdrawn that). It says so
    /// again every quarter `window` while its own trip is in force; once its own backoff ended
    /// with no call to probe, Redis stops counting it a window later.
    pub reporting: bool,
}
