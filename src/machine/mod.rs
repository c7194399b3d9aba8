//! The state machine in Rust: the one copy of the semantics of `lua/`, step for step.
//!
//! It serves [`Degraded::Local`](crate::Degraded::Local), [`Client::in_memory`](crate::Client::in_memory),
//! and the property test, which runs it beside the real scripts and compares every reply. Keep
//! each function here in the same shape as its namesake in `lua/lib/`.

use crate::protocol::{Op, Params, Reply, Transition};
use crate::state::State;
use std::collections::BTreeMap;

/// What a caller rejected while every half-open probe is out is told to wait at most (ms), as
/// `HALF_OPEN_RETRY` in `lua/lib/args.lua`: a probe usually ends long before its lease.
pub(crate) const HALF_OPEN_RETRY_MS: u64 = 1000;

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
    /// Forgets the state, probes and window, as a DEL of those keys (or an expiry) would; the
    /// metrics and the reporters stay.
    #[cfg(test)]
    pub(crate) fn lose_keys(&mut self) {
        let metrics = std::mem::take(&mut self.metrics);
        let batches = std::mem::take(&mut self.batches);
        let reporters = std::mem::take(&mut self.reporters);
        let processes = std::mem::take(&mut self.processes);
        let (processes_since, reporters_window, processes_window) =
            (self.processes_since, self.reporters_window, self.processes_window);
        *self = Machine {
            metrics,
            batches,
            reporters,
            processes,
            processes_since,
            reporters_window,
            processes_window,
            ..Machine::default()
        };
    }

    /// Whether batch `b` was counted already: its lane's field holds its seq (`batch_seen` in
    /// `lua/lib/batch.lua`).
    fn batch_seen(&self, b: &crate::protocol::Batch) -> bool {
        b.seq != 0 && b.again && self.batches.get(&b.sender).is_some_and(|v| v % 1000 == b.seq % 1000)
    }

    /// Remembers that batch `b` was counted at `now` (`remember_batch` in `lua/lib/batch.lua`):
    /// a lane's first batch forgets the lanes whose last batch is older than the memory.
    fn remember_batch(&mut self, b: &crate::protocol::Batch, now: u64, metrics_ttl: u64) {
        if b.seq == 0 {
            return;
        }
        let mut v = now.saturating_mul(1000).saturating_add(b.seq % 1000);
        if v > (1 << 53) - 1 {
            v = b.seq % 1000;
        }
        if self.batches.insert(b.sender, v).is_none() {
            let memory = crate::breaker::pending::BATCH_MEMORY_MS.min(metrics_ttl);
            // Lua compares signed numbers: with now < memory nothing is older.
            let before = now.saturating_sub(memory).saturating_mul(1000);
            self.batches.retain(|_, v| *v >= before);
        }
    }

    /// The lanes' batch ids remembered (sender, value), as the metrics hash's `batch:` fields.
    #[cfg(test)]
    pub(crate) fn batch_fields(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.batches.iter().map(|(s, v)| (*s, *v))
    }

    /// How many processes the processes key holds.
    pub(crate) fn process_count(&self) -> u64 {
        self.processes.len() as u64
    }

    /// The reporters as the reporters key holds them (member, score, ...).
    pub(crate) fn flat_reporters(&self) -> Vec<String> {
        self.reporters.iter().flat_map(|(id, at)| [id.clone(), at.to_string()]).collect()
    }

    #[cfg(test)]
    pub(crate) fn reporters(&self) -> &BTreeMap<String, u64> {
        &self.reporters
    }

    #[cfg(test)]
    pub(crate) fn processes(&self) -> &BTreeMap<String, u64> {
        &self.processes
    }

    /// The bookkeeping members of the reporters and processes keys as the scripts write them
    /// (`' window'`, `' since'`; their scores are minus these).
    #[cfg(test)]
    pub(crate) fn quorum_marks(&self) -> [BTreeMap<String, u64>; 2] {
        let mark = |name: &str, v: Option<u64>| v.map(|v| (name.to_string(), v));
        [
            mark(" window", self.reporters_window).into_iter().collect(),
            [mark(" window", self.processes_window), mark(" since", self.processes_since)]
                .into_iter()
                .flatten()
                .collect(),
        ]
    }

    /// A machine that starts from what a process last knew of Redis's state: the in-process
    /// breaker of `Degraded::Local` begins there, not from closed. `open_until` is on the local
    /// machine's clock; a half-open state starts with no probe out; `trips` is unknown, so 1.
    pub(crate) fn seeded(state: State, failures: u64, open_until: u64, now: u64) -> Machine {
        let mut m = Machine { exists: true, state, failures, changed_at: now, ..Machine::default() };
        m.reason = reason::SEEDED.to_string();
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

    /// The stored state as Redis's flat hashes would read (for `Breaker::status` in memory).
    pub(crate) fn flat(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let mut state = vec!["state".to_string(), self.state.as_str().to_string()];
        for (f, v) in [
            ("incarnation", self.incarnation),
            ("epoch", self.epoch),
            ("failures", self.failures),
            ("fseq", self.fseq),
            ("successes", self.successes),
            ("trips", self.trips),
            ("opened_at", self.opened_at),
            ("open_until", self.open_until),
            ("changed_at", self.changed_at),
            ("failed_at", self.failed_at),
        ] {
            state.push(f.to_string());
            state.push(v.to_string());
        }
        state.extend(["reason".to_string(), self.reason.clone(), "config".to_string(), self.config.clone()]);
        if let Some(q) = &self.quorum {
            state.extend(["quorum".to_string(), q.clone()]);
        }
        if self.ttl_at > 0 {
            state.extend(["ttl_at".to_string(), self.ttl_at.to_string()]);
        }
        if self.unannounced {
            state.extend(["announced".to_string(), "0".to_string()]);
        }
        if !self.exists {
            state.clear();
        }
        let probes = self.probes.iter().flat_map(|(id, exp)| [id.clone(), exp.to_string()]).collect();
        let m = &self.metrics;
        let metrics = [
            ("calls", m.calls),
            ("successes", m.successes),
            ("failures", m.failures),
            ("slow", m.slow),
            ("rejected", m.rejected),
            ("timeouts", m.timeouts),
            ("opened", m.opened),
        ]
        .iter()
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect();
        (state, probes, metrics)
    }

    /// The next instant after `now` when something expires: a deadline or a probe lease.
    #[cfg(test)]
    pub(crate) fn next_deadline(&self, now: u64) -> Option<u64> {
        self.probes.values().copied().chain([self.open_until]).filter(|t| *t > now).min()
    }

    #[cfg(test)]
    pub(crate) fn probe_count(&self) -> usize {
        self.probes.len()
    }

    /// The TTL (ms) a script leaves on the state key at `now` while the state is in force (not
    /// closed), as `state_key_ttl` in `lua/lib/commit.lua`; `None` for a forced state with no end.
    #[cfg(test)]
    pub(crate) fn state_key_ttl(&self, p: &Params, now: u64) -> Option<u64> {
        let forever = matches!(self.state, State::ForcedOpen | State::ForcedClosed) && self.open_until == 0;
        if forever {
            return None;
        }
        let horizon = self.probes.values().copied().chain([self.open_until]).max().unwrap_or(0);
        Some(p.state_ttl + horizon.saturating_sub(now))
    }

    /// Forgets one window count, as a script does with a count it cannot read (`b:k` field).
    #[cfg(test)]
    pub(crate) fn forget_bucket(&mut self, field: &str) {
        let parsed = field.split_once(':').and_then(|(b, k)| Some((b.parse::<u64>().ok()?, *k.as_bytes().first()?)));
        if let Some(key) = parsed {
            self.window.remove(&key);
        }
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

    #[cfg(test)]
    pub(crate) fn exists(&self) -> bool {
        self.exists
    }

    /// When the TTLs were last set in full (0: never).
    #[cfg(test)]
    pub(crate) fn ttl_at(&self) -> u64 {
        self.ttl_at
    }

    /// Whether the last transition was not announced.
    #[cfg(test)]
    pub(crate) fn unannounced(&self) -> bool {
        self.unannounced
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
mod reason;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

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
