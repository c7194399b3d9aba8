//! The state machine in Rust: the one copy of the semantics of `lua/`, step for step.
//!
//! It serves [`Degraded::Local`](crate::Degraded::Local), [`Client::in_memory`](crate::Client::in_memory),
//! and the property test, which runs it beside the real scripts and compares every reply. Keep
//! each function here in the same shape as its namesake in `lua/lib/`.

use crate::protocol::{Batch, MAX_INT, Op, Params, Reply, Transition};
use crate::state::State;
use std::collections::BTreeMap;

/// The reason of a state the in-process breaker of a Redis client continues from its snapshot
/// (no Lua twin: the scripts' reasons are in `protocol::reason`).
const SEEDED: &str = "continued from the last state seen in redis";

/// `config::MAX_RAMP` in ms (`MAX_RAMP` in `lua/lib/protocol.lua`).
const RAMP_MAX_MS: u64 = crate::config::MAX_RAMP.as_millis() as u64;

/// Cumulative outcome counters, as in the metrics hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Metrics {
    pub(crate) calls: u64,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
    pub(crate) rejected: u64,
    pub(crate) timeouts: u64,
    pub(crate) opened: u64,
    pub(crate) throttled: u64,
}

/// How long the breaker stays open after its `trips`-th trip in a row (`trip` in
/// `lua/lib/transitions.lua`): `d = min(max, base * multiplier^(trips-1))`, drawn uniformly from
/// `[d*(1-jitter), min(max, d*(1+jitter))]` by `draw` in `[0, 1)`; at least 1 ms.
pub(crate) fn recovery_ms(trips: u64, p: &Params, draw: f64) -> u64 {
    let exponent = trips.saturating_sub(1) as f64;
    let d = (p.max as f64).min(p.base as f64 * p.multiplier.powf(exponent));
    let lo = d * (1.0 - p.jitter);
    let hi = (p.max as f64).min(d * (1.0 + p.jitter));
    ((lo + draw * (hi - lo)).floor() as u64).max(1)
}

/// What a script does with a stored recovery ramp (`ramp_check` in `lua/lib/load.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RampFix {
    /// Ends it: not written by the close that began it, out of bounds, or the caller has none.
    End,
    /// Brings it back to the caller's own ramp from now.
    Cap,
}

/// `ramp_check` of `lua/lib/load.lua`: what a caller whose own ramp is `own_ms` does at `now`
/// with the stored ramp (`None`: keeps it). Lua compares numbers, so sums here cannot overflow
/// what the scripts handle (every field is at most 2^53).
pub(crate) fn ramp_check(
    until: u64,
    ms: u64,
    permille: u64,
    changed_at: u64,
    now: u64,
    own_ms: u64,
) -> Option<RampFix> {
    if until == 0 && ms == 0 && permille == 0 {
        return None;
    }
    if ms > RAMP_MAX_MS
        || !(1..=1000).contains(&permille)
        || until != changed_at.saturating_add(ms)
        || until > now.saturating_add(ms)
        || own_ms == 0
    {
        return Some(RampFix::End);
    }
    (until > now + own_ms).then_some(RampFix::Cap)
}

/// The stored state of one breaker: the state hash, the probe leases and the window.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    exists: bool,
    state: State,
    incarnation: u64,
    epoch: u64,
    failures: u64,
    fseq: u64,
    successes: u64,
    trips: u64,
    opened_at: u64,
    open_until: u64,
    changed_at: u64,
    /// When the last failure of the consecutive rule was recorded.
    failed_at: u64,
    /// The recovery ramp (`start_ramp` in `lua/lib/transitions.lua`): when it ends (ms), its
    /// length (ms) and where it starts (per mille of the calls); all 0 when there is none.
    ramp_until: u64,
    ramp_ms: u64,
    ramp_permille: u64,
    reason: String,
    config: String,
    probes: BTreeMap<String, u64>,
    window: BTreeMap<(u64, u8), u64>,
    /// The window length the buckets are counted in (the first writer's), once stored.
    window_len: Option<u64>,
    /// The quorum rule of the last process that wrote, once one other than "1" was written.
    quorum: Option<String>,
    /// The quorum's reporters: reporter id -> when it reported (the reporters key).
    reporters: BTreeMap<String, u64>,
    /// The processes that recorded calls (quorum fraction): reporter id -> when (the processes key).
    processes: BTreeMap<String, u64>,
    /// When the processes key began collecting (ms; its member `' since'`, scored minus this):
    /// a quorum fraction is decided only once it has for a fifth of the window.
    processes_since: Option<u64>,
    /// The longest window of the processes that wrote the reporters key (its member
    /// `' window'`, scored minus this): nothing younger is swept.
    reporters_window: Option<u64>,
    /// The same for the processes key.
    processes_window: Option<u64>,
    pub(crate) metrics: Metrics,
    /// The metrics hash's `batch:<sender>` fields (`lua/lib/batch.lua`): per lane, when its
    /// last batch was applied (ms) x 1000 + its seq mod 1000.
    batches: BTreeMap<u64, u64>,
    /// When the TTLs of the state and metrics keys were last set in full (`ttl_at` in the state
    /// hash, see `commit` in `lua/lib/commit.lua`); 0: never.
    ttl_at: u64,
    /// The last transition was not announced (`announced` = 0 in the state hash).
    unannounced: bool,
    /// Whether the caller's events reach the events channel (as `may_announce` in
    /// `lua/lib/commit.lua`): always for the in-process breaker, whose events reach this
    /// process's subscribers; the property test clears it for a caller without PUBLISH rights.
    /// (An operator's transition by such a caller is refused before anything is written where
    /// the server can tell, >= 7.0: `lua/control.lua`; the property test expects the refusal
    /// and leaves the twin as it was. Without a publisher the twin writes it unannounced, as
    /// the scripts do before 7.0.)
    pub(crate) publishes: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            exists: false,
            state: State::Closed,
            incarnation: 0,
            epoch: 0,
            failures: 0,
            fseq: 0,
            successes: 0,
            trips: 0,
            opened_at: 0,
            open_until: 0,
            changed_at: 0,
            failed_at: 0,
            ramp_until: 0,
            ramp_ms: 0,
            ramp_permille: 0,
            reason: String::new(),
            config: String::new(),
            probes: BTreeMap::new(),
            window: BTreeMap::new(),
            window_len: None,
            quorum: None,
            reporters: BTreeMap::new(),
            processes: BTreeMap::new(),
            processes_since: None,
            reporters_window: None,
            processes_window: None,
            metrics: Metrics::default(),
            batches: BTreeMap::new(),
            ttl_at: 0,
            unannounced: false,
            publishes: true,
        }
    }
}

/// One call's working state: the machine, what changed, the clock, the randomness.
pub(super) struct Call<'a> {
    m: &'a mut Machine,
    p: &'a Params,
    now: u64,
    rand: f64,
    /// The caller's identity for the quorum (its reporter id, record.lua OWN+19).
    origin: &'a str,
    dirty: bool,
    transitions: Vec<Transition>,
}

impl Machine {
    /// Whether batch `b` was counted already: its lane's field holds its seq (`batch_seen` in
    /// `lua/lib/batch.lua`).
    fn batch_seen(&self, b: &Batch) -> bool {
        b.seq != 0 && b.again && self.batches.get(&b.sender).is_some_and(|v| v % 1000 == b.seq % 1000)
    }

    /// Remembers that batch `b` was counted at `now` (`remember_batch` in `lua/lib/batch.lua`):
    /// a lane's first batch forgets the lanes whose last batch is older than the memory.
    fn remember_batch(&mut self, b: &Batch, now: u64, metrics_ttl: u64) {
        if b.seq == 0 {
            return;
        }
        let mut v = now.saturating_mul(1000).saturating_add(b.seq % 1000);
        if v > MAX_INT {
            v = b.seq % 1000;
        }
        if self.batches.insert(b.sender, v).is_none() {
            let memory = crate::breaker::pending::BATCH_MEMORY_MS.min(metrics_ttl);
            // Lua compares signed numbers: with now < memory nothing is older.
            let before = now.saturating_sub(memory).saturating_mul(1000);
            self.batches.retain(|_, v| *v >= before);
        }
    }

    /// A machine that starts from what a process last knew of Redis's state: the in-process
    /// breaker of `Degraded::Local` begins there, not from closed. `open_until` is on the local
    /// machine's clock; a half-open state starts with no probe out; `trips` is unknown, so 1.
    pub(crate) fn seeded(state: State, failures: u64, open_until: u64, now: u64) -> Machine {
        let mut m = Machine { exists: true, state, failures, changed_at: now, ..Machine::default() };
        m.reason = SEEDED.to_string();
        match state {
            State::Open | State::ForcedOpen | State::HalfOpen => {
                m.trips = 1;
                m.opened_at = now;
                m.open_until = open_until;
            }
            State::ForcedClosed => m.open_until = open_until,
            State::Closed => m.failed_at = now,
        }
        m
    }

    /// What a call let through now holds, when the machine is closed (it decides nothing else:
    /// a closed machine allows every call).
    pub(crate) fn closed_view(&self) -> Option<crate::breaker::snapshot::View> {
        (self.state == State::Closed).then_some(crate::breaker::snapshot::View {
            incarnation: self.incarnation,
            epoch: self.epoch,
            failures: self.failures,
            fseq: self.fseq,
        })
    }

    /// The state it is in.
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Whether this machine's trip is in force at `now` (ms): open with its backoff still
    /// running, or half-open with a probe lease held. An open state whose backoff ended, or a
    /// half-open one with no probe out, waits for a call to decide anything.
    pub(crate) fn trip_in_force(&self, now: u64) -> bool {
        match self.state {
            State::Open => self.open_until > now,
            State::HalfOpen => self.probes.values().any(|until| *until > now),
            _ => false,
        }
    }

    /// Runs one operation at `now` (ms) for the reporter `origin`. `new_incarnation` is used when
    /// the state is created.
    pub(crate) fn run(
        &mut self,
        p: &Params,
        now: u64,
        rand: f64,
        new_incarnation: u64,
        origin: &str,
        op: &Op,
    ) -> (Reply, Vec<Transition>) {
        let stored_config = self.config.clone();
        let existed = self.exists;
        let mut call = Call { m: self, p, now, rand, origin, dirty: false, transitions: Vec::new() };
        if call.m.exists && call.m.incarnation == 0 {
            call.dirty = true;
        }
        // A lease ends at most probe_lease from now (`load_probes` in lua/lib/load.lua): one set
        // further away (by hand, or before the clock went back) is brought back to that.
        if call.m.state == State::HalfOpen {
            for exp in call.m.probes.values_mut() {
                *exp = (*exp).min(now + p.lease);
            }
        }
        if call.m.state == State::Open && call.m.open_until > now + p.max {
            call.m.open_until = now + p.max;
            call.dirty = true;
        }
        // The stored ramp kept, ended or brought back (`load` in lua/lib/load.lua).
        let m = &*call.m;
        match ramp_check(m.ramp_until, m.ramp_ms, m.ramp_permille, m.changed_at, now, p.ramp) {
            Some(RampFix::End) => call.end_ramp(),
            Some(RampFix::Cap) => {
                call.m.ramp_until = now + p.ramp;
                call.m.ramp_ms = call.m.ramp_until - call.m.changed_at;
                call.dirty = true;
            }
            None => {}
        }
        let verdict = match op {
            Op::Acquire { permit, batch } => call.acquire(permit, batch),
            Op::Record(r) => call.record(r),
            Op::Control { op, duration_ms, .. } => call.control(*op, *duration_ms),
        };
        if call.dirty {
            if call.m.incarnation == 0 {
                call.m.incarnation = new_incarnation;
            }
            call.m.exists = true;
            // An operator's write keeps the fingerprint (and quorum) of the last process that wrote.
            if !matches!(op, Op::Control { .. }) {
                call.m.config = p.fingerprint.clone();
                let rule = p.quorum_text();
                if call.m.quorum.as_deref().unwrap_or("1") != rule {
                    call.m.quorum = Some(rule);
                }
            }
        }
        // The TTLs are set in full when a tenth of the shorter one has passed since they last
        // were (or the clock went back), on every write of a state that exists or is made.
        let refresh = p.state_ttl.min(p.metrics_ttl) / 10;
        let m = &mut *call.m;
        let ttl_due = m.ttl_at == 0 || now < m.ttl_at || now - m.ttl_at >= refresh;
        if ttl_due && (call.dirty || existed) {
            m.ttl_at = now;
        }
        if !call.transitions.is_empty() {
            m.unannounced = !m.publishes;
        }
        let transitions = std::mem::take(&mut call.transitions);
        let mut reply = call.reply(verdict);
        reply.stored_config = stored_config;
        (reply, transitions)
    }
}

mod call;
mod stored;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    /// Params with the given recovery settings.
    fn params(base_ms: u64, max_ms: u64, multiplier: f64, jitter: f64) -> Params {
        Params::new(
            &Config::builder()
                .base_recovery(Duration::from_millis(base_ms))
                .max_recovery(Duration::from_millis(max_ms))
                .multiplier(multiplier)
                .jitter(jitter)
                .build()
                .expect("valid config"),
        )
    }

    #[test]
    fn recovery_grows_by_the_multiplier_and_stops_at_the_cap() {
        let p = params(1000, 5000, 2.0, 0.0);
        let open: Vec<u64> = (1..=5).map(|trips| recovery_ms(trips, &p, 0.5)).collect();
        assert_eq!(open, [1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn jitter_spreads_the_draw_and_never_passes_the_cap() {
        let p = params(1000, 1050, 2.0, 0.1);
        assert_eq!(recovery_ms(1, &p, 0.0), 900, "d * (1 - jitter)");
        assert_eq!(recovery_ms(1, &p, 0.999_999), 1049, "up to min(max, d * (1 + jitter))");
        assert_eq!(recovery_ms(3, &p, 0.0), 945, "the capped d is jittered downwards only");
        assert_eq!(recovery_ms(3, &p, 0.999_999), 1049);
    }

    #[test]
    fn recovery_is_at_least_one_millisecond_and_survives_huge_trip_counts() {
        let p = params(1, 1, 1000.0, 0.9);
        assert_eq!(recovery_ms(1, &p, 0.0), 1);
        assert_eq!(recovery_ms(u64::MAX, &params(1000, 300_000, 1000.0, 0.0), 0.5), 300_000);
    }
}
