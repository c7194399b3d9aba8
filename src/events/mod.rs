//! Transitions as events: published by the scripts on `<prefix>:events`, applied to every
//! process's snapshots at once, and handed to [`Breaker::subscribe`](crate::Breaker::subscribe).

use crate::protocol::Transition;
use crate::state::State;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::broadcast;

/// What an [`Event`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The breaker changed state (in any process).
    Transition,
    /// Redis became unreachable: this process decides the breaker's calls by the degraded mode.
    StoreDown,
    /// Redis answers again and decides the breaker's calls.
    StoreUp,
    /// A breaker in shadow mode would have rejected calls in this process (sent once per open
    /// epoch); the calls ran.
    ShadowRejected,
    /// Under a quorum ([`ConfigBuilder::quorum`](crate::ConfigBuilder::quorum)): this process's
    /// own calls met the trip rule while the fleet's quorum is not met, so this process alone
    /// opened (or, after a failed probe of its own, opened again); it reported itself to the
    /// fleet. `from` and `to` are its own breaker's states; the fleet's state is unchanged.
    OwnOpen,
    /// Under a quorum: this process's own breaker let a probe through after its own backoff.
    OwnHalfOpen,
    /// Under a quorum: this process's own breaker closed again (its probes succeeded, and its
    /// report to the fleet was withdrawn), or it folded into the fleet's open state.
    OwnClosed,
}

/// One transition of one breaker, or a change in where this process decides calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The breaker's name.
    pub name: String,
    /// The state it left; `None` when that state was unreadable (corrupt) or unknown.
    pub from: Option<State>,
    /// The state it entered.
    pub to: State,
    /// The incarnation of the stored state.
    pub incarnation: u64,
    /// The epoch the transition began.
    pub epoch: u64,
    /// Time to the new state's deadline when it has one (open, forced for a time, half-open
    /// with every probe out).
    #[serde(rename = "retry_after_ms", serialize_with = "as_millis")]
    pub retry_after: Option<Duration>,
    /// Why, in words.
    pub reason: String,
    /// The id of the client whose script call caused the transition
    /// ([`Client::id`](crate::Client::id)), when the event says (events of older versions do
    /// not); `None` for store up/down events.
    pub origin: Option<String>,
    /// True when this process caused the event (its own script call, its in-process breaker,
    /// or its view of Redis going down or up): alerting from every instance of a fleet can act
    /// on these alone and page once, not once per instance.
    pub caused_here: bool,
    /// The recovery ramp a close began ([`ConfigBuilder::recovery_ramp`](crate::ConfigBuilder::recovery_ramp)),
    /// as of the event.
    pub ramp: Option<crate::Ramp>,
}

/// The JSON each script publishes (README, "Redis keys"). Readers tolerate extra fields.
#[derive(Debug, Deserialize)]
pub(crate) struct Wire {
    pub(crate) name: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) incarnation: u64,
    pub(crate) epoch: u64,
    pub(crate) retry_after_ms: i64,
    #[serde(default)]
    pub(crate) fseq: Option<u64>,
    #[serde(default)]
    pub(crate) reason: String,
    #[serde(default)]
    pub(crate) origin: Option<String>,
    /// The recovery ramp a close began (absent: none, or an older version's event).
    #[serde(default)]
    pub(crate) ramp_left_ms: u64,
    #[serde(default)]
    pub(crate) ramp_ms: u64,
    #[serde(default)]
    pub(crate) ramp_permille: u64,
}

impl Wire {
    /// The recovery ramp the event tells, when it tells a sane one.
    pub(crate) fn ramp(&self) -> Option<crate::protocol::Ramp> {
        let max = u64::try_from(crate::config::MAX_RAMP.as_millis()).unwrap_or(u64::MAX);
        let sane = self.ramp_left_ms > 0
            && self.ramp_left_ms <= self.ramp_ms
            && self.ramp_ms <= max
            && (1..=1000).contains(&self.ramp_permille);
        sane.then_some(crate::protocol::Ramp {
            left_ms: self.ramp_left_ms,
            len_ms: self.ramp_ms,
            permille: self.ramp_permille,
        })
    }

    pub(crate) fn parse(payload: &[u8]) -> Option<Wire> {
        serde_json::from_slice(payload).ok()
    }

    /// The event as the client `me` sees it.
    pub(crate) fn event(&self, me: &str) -> Option<Event> {
        Some(Event {
            kind: EventKind::Transition,
            name: self.name.clone(),
            from: State::parse(&self.from),
            to: State::parse(&self.to)?,
            incarnation: self.incarnation,
            epoch: self.epoch,
            retry_after: u64::try_from(self.retry_after_ms).ok().map(Duration::from_millis),
            reason: self.reason.clone(),
            origin: self.origin.clone().filter(|o| !o.is_empty()),
            caused_here: self.origin.as_deref() == Some(me),
            ramp: self.ramp().map(|r| crate::Ramp::of(&r)),
        })
    }
}

/// An event of this process's own breaker under a quorum.
pub(crate) fn own_event(name: &str, me: &str, t: &Transition, incarnation: u64, remaining: Option<u64>) -> Event {
    let kind = match t.to {
        State::Open => EventKind::OwnOpen,
        State::HalfOpen => EventKind::OwnHalfOpen,
        _ => EventKind::OwnClosed,
    };
    Event { kind, ..in_process_event(name, me, t, incarnation, t.epoch, remaining) }
}

pub(crate) fn in_process_event(
    name: &str,
    me: &str,
    t: &Transition,
    incarnation: u64,
    epoch: u64,
    remaining: Option<u64>,
) -> Event {
    Event {
        origin: Some(me.to_string()),
        caused_here: true,
        kind: EventKind::Transition,
        name: name.to_string(),
        from: Some(t.from),
        to: t.to,
        incarnation,
        epoch,
        retry_after: remaining.map(Duration::from_millis),
        reason: t.reason.clone(),
        ramp: None,
    }
}

/// A stream of one breaker's transitions, from [`Breaker::subscribe`](crate::Breaker::subscribe).
#[derive(Debug)]
pub struct Subscription {
    pub(crate) rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next transition. A subscriber that falls more than 64 events behind skips the
    /// oldest. `None` once the breaker's client is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Logs a transition once per process (each process sees each transition once: its own through
/// the event it published, others' through the subscription): warn when the breaker opens,
/// info otherwise, with the facts as fields.
pub(crate) fn log_transition(e: &Event) {
    let from = e.from.map_or("corrupt", State::as_str);
    let to = e.to.as_str();
    let retry_after_ms = e.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (breaker, reason, epoch, caused_here) = (e.name.as_str(), e.reason.as_str(), e.epoch, e.caused_here);
    match e.kind {
        EventKind::OwnOpen => {
            return tracing::warn!(breaker, from, to, reason, retry_after_ms, "this process's own breaker opened");
        }
        EventKind::OwnHalfOpen | EventKind::OwnClosed => {
            return tracing::info!(breaker, from, to, reason, "this process's own breaker moved");
        }
        _ => {}
    }
    match e.to {
        State::Open | State::ForcedOpen => {
            tracing::warn!(breaker, from, to, reason, epoch, retry_after_ms, caused_here, "breaker opened")
        }
        State::HalfOpen => {
            tracing::info!(breaker, from, to, reason, epoch, retry_after_ms, caused_here, "breaker half-open")
        }
        _ => tracing::info!(breaker, from, to, reason, epoch, caused_here, "breaker closed"),
    }
}

/// A duration as whole milliseconds in JSON (`null` for none), as everywhere else the crate and
/// its CLI print one.
fn as_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    /// The kinds as JSON (the console's `/api/events`, a subscriber that serializes events): the
    /// own breaker's under a quorum are `own_*`.
    #[test]
    fn kinds_serialize_in_snake_case() {
        let names: Vec<String> = [
            EventKind::Transition,
            EventKind::StoreDown,
            EventKind::StoreUp,
            EventKind::ShadowRejected,
            EventKind::OwnOpen,
            EventKind::OwnHalfOpen,
            EventKind::OwnClosed,
        ]
        .iter()
        .map(|k| serde_json::to_string(k).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "\"transition\"",
                "\"store_down\"",
                "\"store_up\"",
                "\"shadow_rejected\"",
                "\"own_open\"",
                "\"own_half_open\"",
                "\"own_closed\""
            ]
        );
    }
}
