//! The operations of one script call on the machine, each in the shape of its namesake in
//! `lua/lib/transitions.lua`, `rules.lua`, `batch.lua` and the scripts (`acquire.lua`,
//! `record.lua`, `control.lua`).

use super::{Call, recovery_ms};
use crate::protocol::{
    Batch, ControlOp, HALF_OPEN_RETRY_MS, Ramp, Record, RecordOutcome, Reply, Report, Transition, Verdict, reason,
};
use crate::state::State;

impl Call<'_> {
    pub(super) fn reply(&self, verdict: Verdict) -> Reply {
        Reply {
            verdict,
            state: self.m.state,
            incarnation: self.m.incarnation,
            epoch: self.m.epoch,
            failures: self.m.failures,
            fseq: self.m.fseq,
            remaining_ms: self.remaining(),
            stored_config: String::new(),
            reason: self.m.reason.clone(),
            announced: !self.m.unannounced,
            ramp: self.ramp_left().map(|left_ms| Ramp {
                left_ms,
                len_ms: self.m.ramp_ms,
                permille: self.m.ramp_permille,
            }),
        }
    }

    /// The time left of a closed breaker's recovery ramp (`ramp_left` in `lua/lib/transitions.lua`).
    fn ramp_left(&self) -> Option<u64> {
        (self.m.state == State::Closed && self.m.ramp_until > self.now).then(|| self.m.ramp_until - self.now)
    }

    /// Ends a recovery ramp (`end_ramp` in `lua/lib/load.lua`).
    pub(super) fn end_ramp(&mut self) {
        let m = &mut *self.m;
        if m.ramp_until > 0 || m.ramp_ms > 0 || m.ramp_permille > 0 {
            (m.ramp_until, m.ramp_ms, m.ramp_permille) = (0, 0, 0);
            self.dirty = true;
        }
    }

    /// Starts the caller's recovery ramp, if it has one (`start_ramp` in `lua/lib/transitions.lua`).
    fn start_ramp(&mut self) {
        if self.p.ramp > 0 {
            let m = &mut *self.m;
            (m.ramp_until, m.ramp_ms, m.ramp_permille) = (self.now + self.p.ramp, self.p.ramp, self.p.ramp_permille);
            self.dirty = true;
        }
    }

    fn matches(&self, incarnation: u64, epoch: u64) -> bool {
        epoch == self.m.epoch && (incarnation == self.m.incarnation || (incarnation == 0 && self.m.epoch == 0))
    }

    fn transition(&mut self, to: State, reason: String) {
        self.transitions.push(Transition { from: self.m.state, to, epoch: self.m.epoch + 1, reason: reason.clone() });
        let m = &mut *self.m;
        m.state = to;
        m.epoch += 1;
        m.changed_at = self.now;
        m.reason = reason;
        m.failures = 0;
        m.successes = 0;
        m.probes.clear();
        self.dirty = true;
        self.end_ramp();
    }

    fn close(&mut self, reason: String) {
        self.transition(State::Closed, reason);
        let m = &mut *self.m;
        m.trips = 0;
        m.opened_at = 0;
        m.open_until = 0;
        self.clear_window();
    }

    fn clear_window(&mut self) {
        self.m.window.clear();
        self.m.window_len = None;
    }

    /// The bucket length (ms) of the window: a tenth of the stored window length, else of ours.
    fn bucket(&self) -> u64 {
        self.m.window_len.unwrap_or(self.p.window) / 10
    }

    fn trip(&mut self, reason: String) {
        self.m.trips += 1;
        let open_ms = recovery_ms(self.m.trips, self.p, self.rand);
        self.transition(State::Open, reason);
        self.m.opened_at = self.now;
        self.m.open_until = self.now + open_ms;
        self.m.metrics.opened += 1;
    }

    fn advance(&mut self) {
        if self.m.state == State::ForcedClosed && self.m.open_until > 0 && self.now >= self.m.open_until {
            self.close(reason::FORCED_CLOSE_EXPIRED.text());
        }
        let m = &mut *self.m;
        if m.state == State::Closed && m.failures > 0 && self.now.saturating_sub(m.failed_at) >= self.p.failure_expiry {
            m.failures = 0;
            self.dirty = true;
        }
    }

    fn purge_leases(&mut self) {
        let now = self.now;
        self.m.probes.retain(|_, exp| *exp > now);
    }

    fn window_sums(&mut self) -> (u64, u64, u64) {
        let cur = self.now / self.bucket();
        self.m.window.retain(|(b, _), _| *b + 10 > cur && *b <= cur);
        let mut sums = (0, 0, 0);
        for ((_, kind), n) in &self.m.window {
            match kind {
                b'c' => sums.0 += n,
                b'f' => sums.1 += n,
                _ => sums.2 += n,
            }
        }
        sums
    }

    fn window_add(&mut self, calls: u64, fails: u64, slow: u64) {
        if !self.p.windowed() || calls == 0 {
            return;
        }
        let cur = self.now / self.bucket();
        for (kind, n) in [(b'c', calls), (b'f', fails), (b's', slow)] {
            if n > 0 {
                *self.m.window.entry((cur, kind)).or_insert(0) += n;
            }
        }
        self.m.window_len.get_or_insert(self.p.window);
    }

    fn check_rules(&mut self) {
        if self.m.state != State::Closed || self.p.under_quorum() {
            return;
        }
        let p = self.p;
        if p.failure_threshold > 0 && self.m.failures >= p.failure_threshold {
            let reason = reason::consecutive(self.m.failures);
            self.trip(reason);
            return;
        }
        if !p.windowed() {
            return;
        }
        let (calls, fails, slow) = self.window_sums();
        if calls < p.minimum_calls {
            return;
        }
        let (fr, sr) = (fails as f64 / calls as f64, slow as f64 / calls as f64);
        if p.failure_rate > 0.0 && fr >= p.failure_rate {
            self.trip(reason::failure_rate(fr, p.failure_rate, calls));
        } else if p.slow_rate > 0.0 && sr >= p.slow_rate {
            self.trip(reason::slow_rate(sr, p.slow_rate, calls));
        }
    }

    fn remaining(&self) -> Option<u64> {
        match self.m.state {
            State::Open | State::ForcedOpen | State::ForcedClosed => {
                (self.m.open_until > 0).then(|| self.m.open_until.saturating_sub(self.now))
            }
            State::HalfOpen => {
                if (self.m.probes.len() as u64) < self.p.max_probes {
                    Some(0)
                } else {
                    self.m.probes.values().min().map(|e| e.saturating_sub(self.now).min(HALF_OPEN_RETRY_MS))
                }
            }
            State::Closed => None,
        }
    }

    fn batch(&mut self, b: &Batch) {
        // A batch sent again after its reply was lost, counted already, counts nothing.
        if self.m.batch_seen(b) {
            return;
        }
        self.m.remember_batch(b, self.now, self.p.metrics_ttl);
        let metrics = &mut self.m.metrics;
        metrics.calls += b.successes + b.ignored + b.degraded_successes + b.degraded_failures;
        metrics.successes += b.successes + b.degraded_successes;
        metrics.failures += b.degraded_failures;
        metrics.slow += b.slow;
        metrics.rejected += b.rejected;
        metrics.throttled += b.throttled;
        if b.successes > 0 && self.m.state == State::Closed && self.matches(b.incarnation, b.epoch) {
            self.window_add(b.successes, 0, b.slow);
            if b.fseq == self.m.fseq && self.m.failures > 0 {
                self.m.failures = 0;
                self.dirty = true;
            }
            self.check_rules();
        }
    }

    pub(super) fn acquire(&mut self, permit: &str, batch: &Batch) -> Verdict {
        self.advance();
        self.batch(batch);
        let m = &*self.m;
        if matches!(m.state, State::Open | State::ForcedOpen) && m.open_until > 0 && self.now >= m.open_until {
            self.transition(State::HalfOpen, reason::RECOVERY.text());
        }
        match self.m.state {
            State::Open | State::ForcedOpen => Verdict::Rejected,
            State::HalfOpen => {
                self.purge_leases();
                if (self.m.probes.len() as u64) < self.p.max_probes {
                    self.m.probes.insert(permit.to_string(), self.now + self.p.lease);
                    Verdict::Probe
                } else {
                    Verdict::Rejected
                }
            }
            State::Closed | State::ForcedClosed => Verdict::Allowed,
        }
    }

    /// A process's report under the quorum rule (`report` in `lua/lib/rules.lua`).
    fn report(&mut self, action: Report) {
        if action == Report::None || self.origin.is_empty() {
            return;
        }
        if action == Report::Recovered {
            self.m.reporters.remove(self.origin);
            return;
        }
        if self.m.state != State::Closed || !self.p.under_quorum() {
            return;
        }
        let n = self.count_with_caller(&self.m.reporters);
        let mut required = self.p.quorum;
        let mut known = true;
        if self.p.fraction > 0.0 {
            let active = self.count_with_caller(&self.m.processes);
            required = required.max((self.p.fraction * active as f64 - 1e-9).ceil() as u64);
            known = self.processes_known();
        }
        if n >= required && known {
            self.trip(reason::quorum(n, required));
            self.m.reporters.clear();
            self.m.reporters_window = None;
        } else {
            let (now, window, origin) = (self.now, self.p.window, self.origin);
            add_caller(&mut self.m.reporters, &mut self.m.reporters_window, origin, now, window);
        }
    }

    /// Entries of `set` within the window, the caller counted whether it is in there or not
    /// (`count_with_caller` in `lua/lib/rules.lua`).
    fn count_with_caller(&self, set: &std::collections::BTreeMap<String, u64>) -> u64 {
        let (now, since) = (self.now, self.now.saturating_sub(self.p.window));
        let others = set.iter().filter(|(id, at)| id.as_str() != self.origin && **at > since && **at <= now).count();
        others as u64 + 1
    }

    /// Whether the processes key has collected for a fifth of the window (`processes_known` in
    /// `lua/lib/rules.lua`): before that a fraction of its count is not decided.
    fn processes_known(&self) -> bool {
        let age = self.m.processes_since.and_then(|since| self.now.checked_sub(since));
        age.is_some_and(|age| age.saturating_mul(5) >= self.p.window)
    }

    /// The caller recorded calls (quorum fraction): it counts among the window's processes.
    fn active(&mut self) {
        let (now, window, origin) = (self.now, self.p.window, self.origin);
        add_caller(&mut self.m.processes, &mut self.m.processes_window, origin, now, window);
        self.m.processes_since.get_or_insert(now);
    }

    pub(super) fn record(&mut self, r: &Record) -> Verdict {
        let verdict = self.record_outcome(r);
        self.report(r.report);
        if r.active && self.p.fraction > 0.0 && !self.origin.is_empty() {
            self.active();
        }
        verdict
    }

    fn record_outcome(&mut self, r: &Record) -> Verdict {
        // A permit's own lease is judged before expired leases are swept.
        let own_lease = !r.probe.is_empty() && self.m.probes.contains_key(&r.probe);
        self.advance();
        self.purge_leases();
        self.batch(&r.batch);
        if r.outcome == RecordOutcome::None {
            return Verdict::Applied;
        }
        if r.outcome != RecordOutcome::Release {
            let metrics = &mut self.m.metrics;
            metrics.calls += 1;
            metrics.successes += u64::from(r.outcome == RecordOutcome::Success);
            metrics.failures += u64::from(r.outcome == RecordOutcome::Failure);
            metrics.slow += u64::from(r.slow);
            metrics.timeouts += u64::from(r.timed_out);
        }

        // Leases are cleared on every transition: one still held belongs to this half-open
        // epoch, whatever epoch the caller names (the release of an acquire whose reply was lost).
        if self.m.state == State::HalfOpen && own_lease {
            self.m.probes.remove(&r.probe);
            match r.outcome {
                RecordOutcome::Success => {
                    self.m.successes += 1;
                    self.dirty = true;
                    if self.m.successes >= self.p.success_threshold {
                        let reason = reason::probes_succeeded(self.m.successes);
                        self.close(reason);
                        self.start_ramp();
                    }
                }
                RecordOutcome::Failure => self.trip(reason::PROBE_FAILED.text()),
                _ => {}
            }
            return Verdict::Applied;
        }
        if !self.matches(r.incarnation, r.epoch) {
            return Verdict::Stale;
        }
        match (self.m.state, r.outcome) {
            (State::Closed, RecordOutcome::Failure) => {
                self.m.failures += 1;
                self.m.fseq += 1;
                self.m.failed_at = self.now;
                self.dirty = true;
                self.window_add(1, 1, u64::from(r.slow));
                self.check_rules();
                Verdict::Applied
            }
            (State::Closed, RecordOutcome::Success) => {
                if r.fseq == self.m.fseq && self.m.failures > 0 {
                    self.m.failures = 0;
                    self.dirty = true;
                }
                self.window_add(1, 0, u64::from(r.slow));
                self.check_rules();
                Verdict::Applied
            }
            (State::Closed, _) => Verdict::Applied,
            (State::HalfOpen, _) => Verdict::Stale,
            (_, RecordOutcome::Ignore | RecordOutcome::Release) => Verdict::Applied,
            _ => Verdict::Stale,
        }
    }

    pub(super) fn control(&mut self, op: ControlOp, duration_ms: u64) -> Verdict {
        // Every operator's command folds the quorum's reports into the state it sets.
        self.m.reporters.clear();
        self.m.reporters_window = None;
        match op {
            // Already closed: no transition; only the counts are cleared.
            ControlOp::Reset if self.m.state == State::Closed => {
                if self.m.failures > 0 {
                    self.m.failures = 0;
                    self.dirty = true;
                }
                self.clear_window();
                self.end_ramp();
            }
            ControlOp::Reset => self.close(reason::RESET.text()),
            ControlOp::ForceOpen | ControlOp::ForceClose => {
                let (to, what) = if op == ControlOp::ForceOpen {
                    (State::ForcedOpen, "forced open")
                } else {
                    (State::ForcedClosed, "forced closed")
                };
                self.transition(to, reason::forced(what, duration_ms));
                self.m.open_until = if duration_ms > 0 { self.now + duration_ms } else { 0 };
                if to == State::ForcedOpen {
                    self.m.opened_at = self.now;
                }
            }
        }
        Verdict::Ok
    }
}

/// Adds `origin` at `now` to a quorum key's entries (`add_caller` in `lua/lib/commit.lua`):
/// entries older than the longest window of the key's writers (`longest`, this caller's
/// `window` included) or from the future are swept first, then `longest` takes `window`.
fn add_caller(
    set: &mut std::collections::BTreeMap<String, u64>,
    longest: &mut Option<u64>,
    origin: &str,
    now: u64,
    window: u64,
) {
    let since = now.saturating_sub(window.max(longest.unwrap_or(0)));
    set.retain(|_, at| *at > since && *at <= now);
    set.insert(origin.to_string(), now);
    *longest = Some(longest.map_or(window, |w| w.max(window)));
}
