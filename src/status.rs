//! What operators read about one breaker: its state hash, probes, metrics and TTLs.

use crate::state::State;
use serde::Serialize;
use std::collections::HashMap;

/// Everything Redis holds about one breaker, read in one script (`lua/status.lua`). A breaker
/// with no keys reads as closed, epoch 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// Changes whenever the stored state was lost and recreated (0: no state stored).
    pub incarnation: u64,
    /// +1 on every transition.
    pub epoch: u64,
    /// Failures counted toward the consecutive rule.
    pub failures: u64,
    /// +1 on every recorded failure.
    pub fseq: u64,
    /// Probe successes this half-open epoch.
    pub successes: u64,
    /// Opens since the last full close (the backoff exponent).
    pub trips: u64,
    /// Start of this open epoch (ms since the Unix epoch, Redis clock; 0 when not open).
    pub opened_at_ms: u64,
    /// End of the open or forced epoch (0 when none, or forced until reset).
    pub open_until_ms: u64,
    /// Time of the last transition.
    pub changed_at_ms: u64,
    /// Time left until the state's deadline, when it has one (0 once it has passed).
    pub retry_after_ms: Option<u64>,
    /// True when an open (or forced open) breaker's deadline has passed: the next call moves it
    /// to half-open and takes a probe.
    pub recovery_due: bool,
    /// Why the breaker is in its state.
    pub reason: String,
    /// Fingerprint of the config of the last writer.
    pub config: String,
    /// False when the transition into this state was not announced on the events channel (its
    /// writer's Redis user may not publish): the state hash holds `announced` = 0 until an
    /// announced transition replaces it, and every process trusts the state for `cache_ttl`
    /// only. True for a breaker with no keys.
    pub announced: bool,
    /// The recovery ramp of a closed breaker while it runs (the state hash's `ramp_until`,
    /// `ramp_ms`, `ramp_permille`), as of `now_ms`: its [`admitted`](crate::Ramp::admitted) is
    /// the fraction of calls each process admits.
    pub ramp: Option<crate::Ramp>,
    /// Half-open probes out now.
    pub probes: Vec<Probe>,
    /// Cumulative outcome counters.
    pub metrics: Metrics,
    /// The quorum of the last process that wrote the state (1 when none was set): how many
    /// processes must report their own breaker open before the fleet opens
    /// ([`ConfigBuilder::quorum`](crate::ConfigBuilder::quorum)).
    pub quorum: u64,
    /// The quorum's fraction of the processes that recorded calls within the window, when the
    /// last writer set one ([`ConfigBuilder::quorum_fraction`](crate::ConfigBuilder::quorum_fraction)).
    pub quorum_fraction: Option<f64>,
    /// With a quorum fraction: the processes that said they recorded calls recently (about
    /// the last window; the key's entries are swept as processes add themselves).
    pub processes: u64,
    /// The processes whose own breaker opened, newest first: the entries of the reporters key.
    /// Those reported within the window count toward the quorum; older ones (see `age_ms`)
    /// no longer count and are swept at the next report.
    pub reporters: Vec<Reporter>,
    /// Remaining TTL of each key in ms: `None` for a key that does not exist, -1 for no TTL.
    pub ttl_ms: KeyTtls,
    /// Redis's clock when the status was read (ms since the Unix epoch): the times above are
    /// on this clock, so an age is `now_ms` minus one of them, whatever the reader's clock says.
    pub now_ms: u64,
}

/// A leased half-open probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Probe {
    /// The permit id.
    pub id: String,
    /// Time left on its lease.
    pub expires_in_ms: i64,
}

/// A process that reported its own breaker open (under a quorum), from `<prefix>:{<name>}:reporters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Reporter {
    /// Its identity for the quorum ([`Client::reporter_id`](crate::Client::reporter_id): by
    /// default its host's name).
    pub id: String,
    /// When it last reported (ms since the Unix epoch, Redis clock).
    pub reported_at_ms: u64,
    /// How long ago that was, when read (ms).
    pub age_ms: u64,
}

/// The metrics hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Calls that ran (successes, failures and ignored).
    pub calls: u64,
    /// Successful calls.
    pub successes: u64,
    /// Failed calls (timeouts included).
    pub failures: u64,
    /// Calls at least `slow_call_duration` long.
    pub slow: u64,
    /// Calls rejected without running.
    pub rejected: u64,
    /// Calls that exceeded `call_timeout`.
    pub timeouts: u64,
    /// Times the breaker opened.
    pub opened: u64,
    /// Calls a recovery ramp held back (not in `rejected`).
    pub throttled: u64,
    /// When the metrics hash was created (ms since the Unix epoch).
    pub since_ms: u64,
}

impl Metrics {
    /// Failures over calls that succeeded or failed; `None` before any.
    pub fn failure_rate(&self) -> Option<f64> {
        let decided = self.successes + self.failures;
        (decided > 0).then(|| self.failures as f64 / decided as f64)
    }
}

/// Remaining TTL of each key of a breaker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyTtls {
    /// The state hash.
    pub state: Option<i64>,
    /// The probes sorted set.
    pub probes: Option<i64>,
    /// The rate-rule window.
    pub window: Option<i64>,
    /// The metrics hash.
    pub metrics: Option<i64>,
    /// The quorum's reporters.
    pub reporters: Option<i64>,
}

fn ttl(pttl: i64) -> Option<i64> {
    (pttl != -2).then_some(pttl)
}

fn pairs(flat: &[String]) -> HashMap<&str, &str> {
    flat.chunks_exact(2).map(|kv| (kv[0].as_str(), kv[1].as_str())).collect()
}

/// What `lua/status.lua` returns.
pub(crate) struct Raw {
    pub(crate) now_ms: u64,
    pub(crate) state: Vec<String>,
    pub(crate) probes: Vec<String>,
    pub(crate) metrics: Vec<String>,
    pub(crate) reporters: Vec<String>,
    pub(crate) processes: u64,
    pub(crate) pttl: [i64; 5],
}

impl Status {
    pub(crate) fn from_raw(name: &str, raw: Raw) -> Status {
        let h = pairs(&raw.state);
        let num = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let stored = h.get("state").copied();
        let state = stored.and_then(State::parse).unwrap_or(State::Closed);
        let mut reason = h.get("reason").map(|r| r.to_string()).unwrap_or_default();
        if let Some(bad) = stored.filter(|s| State::parse(s).is_none()) {
            reason = format!("corrupt state {bad:?}: the next call resets it to closed");
        }
        let open_until = num("open_until");
        let has_deadline = matches!(state, State::Open | State::ForcedOpen | State::ForcedClosed) && open_until > 0;
        let m = pairs(&raw.metrics);
        let metric = |f: &str| m.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let probes = raw
            .probes
            .chunks_exact(2)
            .map(|p| Probe {
                id: p[0].clone(),
                expires_in_ms: (p[1].parse::<i64>().unwrap_or(0) - i64::try_from(raw.now_ms).unwrap_or(i64::MAX))
                    .max(0),
            })
            .collect();
        let mut reporters: Vec<Reporter> = raw
            .reporters
            .chunks_exact(2)
            .map(|r| {
                let at = r[1].parse::<f64>().map_or(0, |v| v as u64);
                Reporter { id: r[0].clone(), reported_at_ms: at, age_ms: raw.now_ms.saturating_sub(at) }
            })
            .collect();
        // The quorum rule as stored: "<quorum>" or "<quorum>:<fraction>" (absent: 1).
        let rule = h.get("quorum").map_or((1, None), |text| {
            let (q, f) = text.split_once(':').map_or((*text, None), |(q, f)| (q, Some(f)));
            (q.parse::<u64>().ok().filter(|q| *q >= 1).unwrap_or(1), f.and_then(|f| f.parse::<f64>().ok()))
        });
        // The recovery ramp, when one runs and is sane (the next script ends one that is not;
        // it may also bring it back to the writer's own ramp, which a reader cannot know).
        let (ramp_until, ramp_ms, permille) = (num("ramp_until"), num("ramp_ms"), num("ramp_permille"));
        let max_ramp = u64::try_from(crate::config::MAX_RAMP.as_millis()).unwrap_or(u64::MAX);
        let ramp = (state == State::Closed
            && ramp_until > raw.now_ms
            && ramp_ms <= max_ramp
            && (1..=1000).contains(&permille)
            && ramp_until == num("changed_at").saturating_add(ramp_ms)
            && ramp_until - raw.now_ms <= ramp_ms)
            .then(|| {
                crate::Ramp::new(
                    std::time::Duration::from_millis(ramp_until - raw.now_ms),
                    std::time::Duration::from_millis(ramp_ms),
                    u16::try_from(permille).unwrap_or(1000),
                )
            });
        reporters.sort_by(|a, b| b.reported_at_ms.cmp(&a.reported_at_ms).then_with(|| a.id.cmp(&b.id)));
        Status {
            name: name.to_string(),
            state,
            incarnation: num("incarnation"),
            epoch: num("epoch"),
            failures: num("failures"),
            fseq: num("fseq"),
            successes: num("successes"),
            trips: num("trips"),
            opened_at_ms: num("opened_at"),
            open_until_ms: open_until,
            changed_at_ms: num("changed_at"),
            retry_after_ms: has_deadline.then(|| open_until.saturating_sub(raw.now_ms)),
            recovery_due: matches!(state, State::Open | State::ForcedOpen) && has_deadline && open_until <= raw.now_ms,
            reason,
            config: h.get("config").map(|c| c.to_string()).unwrap_or_default(),
            announced: !h.contains_key("announced"),
            ramp,
            probes,
            quorum: rule.0,
            quorum_fraction: rule.1,
            processes: raw.processes,
            reporters,
            metrics: Metrics {
                calls: metric("calls"),
                successes: metric("successes"),
                failures: metric("failures"),
                slow: metric("slow"),
                rejected: metric("rejected"),
                timeouts: metric("timeouts"),
                opened: metric("opened"),
                throttled: metric("throttled"),
                since_ms: metric("since"),
            },
            now_ms: raw.now_ms,
            ttl_ms: KeyTtls {
                state: ttl(raw.pttl[0]),
                probes: ttl(raw.pttl[1]),
                window: ttl(raw.pttl[2]),
                metrics: ttl(raw.pttl[3]),
                reporters: ttl(raw.pttl[4]),
            },
        }
    }
}

/// One transition from a breaker's history stream (`<prefix>:{<name>}:history`), as
/// [`Breaker::history`](crate::Breaker::history) reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The stream entry's id (`<ms>-<seq>`).
    pub id: String,
    /// When it happened (ms since the Unix epoch, Redis clock).
    pub at_ms: u64,
    /// The state before: a state's name, or `corrupt` when a corrupt state was reset.
    pub from: String,
    /// The state after.
    pub to: String,
    /// Why.
    pub reason: String,
    /// The epoch the transition started.
    pub epoch: u64,
    /// Opens since the last full close, after the transition.
    pub trips: u64,
    /// The id of the client whose call (or operator's command) caused it.
    pub origin: String,
    /// An operator's note, for a forced state or a reset made with one.
    pub note: Option<String>,
    /// The description of the failure that caused it, when its caller gave one
    /// ([`Permit::failure_described`](crate::Permit::failure_described)).
    pub failure: Option<String>,
    /// The config fingerprint of the process whose call caused it (`None` for an operator's
    /// command): different ones within a short time mean processes with different configs.
    pub config: Option<String>,
    /// The recovery ramp a close began, as it began (`left` is its whole length).
    pub ramp: Option<crate::Ramp>,
}

impl HistoryEntry {
    /// An entry from its stream id and flat field list; fields it does not know are ignored,
    /// missing ones read as empty or 0.
    pub(crate) fn from_fields(id: String, fields: &[(String, String)]) -> HistoryEntry {
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let num = |name: &str| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        HistoryEntry {
            at_ms: num("time"),
            from: get("from").unwrap_or_default(),
            to: get("to").unwrap_or_default(),
            reason: get("reason").unwrap_or_default(),
            epoch: num("epoch"),
            trips: num("trips"),
            origin: get("origin").unwrap_or_default(),
            note: get("note"),
            config: get("config"),
            failure: get("failure"),
            ramp: match (num("ramp_ms"), num("ramp_permille")) {
                (ms, permille) if ms > 0 && (1..=1000).contains(&permille) => {
                    let length = std::time::Duration::from_millis(ms);
                    Some(crate::Ramp::new(length, length, u16::try_from(permille).unwrap_or(1000)))
                }
                _ => None,
            },
            id,
        }
    }
}
