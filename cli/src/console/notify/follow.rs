//! Following the fleet's transitions: the event subscription, deduplication, and the minimum
//! interval per breaker.

use super::{Counters, Filter};
use crate::console::alerts::now_ms;
use redis_breaker::{Event, EventKind, State, Subscription};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Transitions remembered for deduplication.
pub(super) const SEEN: usize = 4096;

/// How long a transition found by a shared read (its breaker's epoch moved since the last read)
/// waits for its event before it is notified as missed: an event is heard within milliseconds
/// while the subscription is live, so one still unheard after this was lost with the
/// subscription (dropped, or refused).
pub(super) const MISSED_AFTER: Duration = Duration::from_secs(2);

/// Breakers whose newest transition is remembered (the order guard of missed transitions);
/// beyond this the memory starts again (the guard then lets an older one through at worst).
const LATEST_KEPT: usize = 65_536;

/// One fleet transition: the facts of a library [`Event`] that a notification carries.
#[derive(Debug, Clone)]
pub(super) struct Transition {
    pub(super) name: String,
    pub(super) from: Option<State>,
    pub(super) to: State,
    pub(super) reason: String,
    pub(super) epoch: u64,
    pub(super) incarnation: u64,
    pub(super) origin: Option<String>,
}

impl From<Event> for Transition {
    fn from(e: Event) -> Transition {
        Transition {
            name: e.name,
            from: e.from,
            to: e.to,
            reason: e.reason,
            epoch: e.epoch,
            incarnation: e.incarnation,
            origin: e.origin,
        }
    }
}

/// A transition on its way to the receivers.
#[derive(Debug)]
pub(super) struct Draft {
    pub(super) event: Transition,
    pub(super) suppressed: u64,
    pub(super) at_ms: u64,
}

/// The task that follows the fleet's transitions.
pub(super) struct Follow {
    pub(super) gate: Gate,
    pub(super) seen: Seen,
    pub(super) inbox: mpsc::Sender<Draft>,
    pub(super) filter: Arc<Mutex<Option<Filter>>>,
    pub(super) counters: Counters,
    pub(super) receivers: u64,
    /// Transitions found by the shared reads, waiting [`MISSED_AFTER`] for their event.
    pub(super) found: VecDeque<(Instant, Transition)>,
    /// Each breaker's newest transition heard or found: (incarnation, epoch).
    pub(super) latest: HashMap<String, (u64, u64)>,
}

impl Follow {
    /// Follows until the shutdown signal, then passes on what the minimum interval holds back
    /// (each breaker's last transition), so that a receiver's last word on a breaker is its
    /// last state. When the subscription ends first, the held-back transitions are still sent
    /// when their interval ends.
    /// Transitions the shared reads found (`reads`) that no event told within [`MISSED_AFTER`]
    /// are notified too: those made while the subscription was down.
    pub(super) async fn run(
        mut self,
        mut events: Subscription,
        mut reads: mpsc::UnboundedReceiver<Transition>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut subscribed = true;
        loop {
            let found_due = self.found.front().map(|(at, _)| *at + MISSED_AFTER);
            let due = [self.gate.next_due(), found_due].into_iter().flatten().min();
            let event = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                () = sleep_until(due) => {
                    let now = Instant::now();
                    while self.found.front().is_some_and(|(at, _)| *at + MISSED_AFTER <= now) {
                        if let Some((_, t)) = self.found.pop_front() {
                            self.missed(t, now);
                        }
                    }
                    for d in self.gate.flush(now) {
                        self.pass(d);
                    }
                    continue;
                }
                Some(t) = reads.recv() => {
                    self.found.push_back((Instant::now(), t));
                    continue;
                }
                e = events.recv(), if subscribed => match e {
                    Some(e) => e,
                    None => {
                        subscribed = false;
                        continue;
                    }
                },
            };
            // Own*, StoreDown/Up and ShadowRejected are this process's view, not the fleet's.
            if event.kind != EventKind::Transition || !self.wanted(&event.name) {
                continue;
            }
            let event = Transition::from(event);
            if !self.seen.first(&event) {
                continue;
            }
            self.remember(&event);
            if let Some(d) = self.gate.admit(event, Instant::now(), &self.counters) {
                self.pass(d);
            }
        }
        for d in self.gate.drain() {
            self.pass(d);
        }
    }

    /// A transition a read found and no event told: notified unless it was heard meanwhile,
    /// or a newer one of its breaker was (its document would then arrive after a later state).
    fn missed(&mut self, t: Transition, now: Instant) {
        if !self.wanted(&t.name) || self.newer_known(&t) || !self.seen.first(&t) {
            return;
        }
        tracing::info!(breaker = %t.name, epoch = t.epoch, to = %t.to, "a transition no event told (the subscription was down): notified from the read");
        self.remember(&t);
        if let Some(d) = self.gate.admit(t, now, &self.counters) {
            self.pass(d);
        }
    }

    fn newer_known(&self, t: &Transition) -> bool {
        self.latest.get(&t.name).is_some_and(|&(incarnation, epoch)| incarnation == t.incarnation && epoch >= t.epoch)
    }

    fn remember(&mut self, t: &Transition) {
        if self.newer_known(t) {
            return;
        }
        if self.latest.len() >= LATEST_KEPT {
            self.latest.clear();
        }
        self.latest.insert(t.name.clone(), (t.incarnation, t.epoch));
    }

    fn wanted(&self, name: &str) -> bool {
        self.filter.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_none_or(|keep| keep(name))
    }

    fn pass(&self, d: Draft) {
        if self.inbox.try_send(d).is_err() {
            self.counters.dropped.inc_by(self.receivers);
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The transitions already passed on, by breaker, incarnation, epoch and state entered: each
/// fleet transition once, however many times it is heard.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) set: HashSet<(String, u64, u64, &'static str)>,
    order: VecDeque<(String, u64, u64, &'static str)>,
}

impl Seen {
    /// True the first time `e`'s transition is seen (among the last [`SEEN`]).
    pub(super) fn first(&mut self, e: &Transition) -> bool {
        let key = (e.name.clone(), e.incarnation, e.epoch, e.to.as_str());
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The minimum interval per breaker.
pub(super) struct Gate {
    interval: Duration,
    breakers: HashMap<String, Held>,
}

struct Held {
    /// When the last notification of this breaker was passed on.
    sent: Instant,
    /// Transitions held back since and replaced by a later one.
    suppressed: u64,
    /// The last transition held back, sent when the interval ends.
    pending: Option<Draft>,
}

/// Breakers remembered before the ones whose interval has passed are forgotten.
const GATE_KEPT: usize = 1024;

impl Gate {
    pub(super) fn new(interval: Duration) -> Gate {
        Gate { interval, breakers: HashMap::new() }
    }

    /// `event` to send now, or `None` when it is held back until the breaker's interval ends.
    pub(super) fn admit(&mut self, event: Transition, now: Instant, counters: &Counters) -> Option<Draft> {
        let draft = Draft { event, suppressed: 0, at_ms: now_ms() };
        if self.interval.is_zero() {
            return Some(draft);
        }
        if self.breakers.len() >= GATE_KEPT {
            let interval = self.interval;
            self.breakers.retain(|_, h| h.pending.is_some() || now < h.sent + interval);
        }
        let name = draft.event.name.clone();
        let mut suppressed = 0;
        if let Some(h) = self.breakers.get_mut(&name) {
            if h.pending.take().is_some() {
                h.suppressed += 1;
                counters.suppressed.inc();
            }
            if now < h.sent + self.interval {
                h.pending = Some(draft);
                return None;
            }
            suppressed = h.suppressed;
        }
        self.breakers.insert(name, Held { sent: now, suppressed: 0, pending: None });
        Some(Draft { suppressed, ..draft })
    }

    /// When the next held-back transition is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.breakers.values().filter(|h| h.pending.is_some()).map(|h| h.sent + self.interval).min()
    }

    /// The held-back transitions whose interval has ended: each breaker's last one, saying how
    /// many before it were not sent.
    pub(super) fn flush(&mut self, now: Instant) -> Vec<Draft> {
        let mut out = Vec::new();
        for h in self.breakers.values_mut() {
            if now >= h.sent + self.interval
                && let Some(d) = h.pending.take()
            {
                out.push(Draft { suppressed: h.suppressed, ..d });
                h.sent = now;
                h.suppressed = 0;
            }
        }
        out
    }

    /// Every held-back transition, due or not (at shutdown): each breaker's last one, saying
    /// how many before it were not sent.
    pub(super) fn drain(&mut self) -> Vec<Draft> {
        self.breakers
            .values_mut()
            .filter_map(|h| {
                let d = h.pending.take()?;
                Some(Draft { suppressed: std::mem::take(&mut h.suppressed), ..d })
            })
            .collect()
    }
}
