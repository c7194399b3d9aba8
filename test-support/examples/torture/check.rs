//! The checker of the fleet invariants (the README's "Fleet invariants", numbered as there)
//! over one run's history. Each violation prints the seed, the faults around it and the
//! offending history lines.
//!
//! Bounds it applies, from the README's staleness table with this harness's settings
//! (`setup`), plus `TOLERANCE` for scheduling on a loaded two-core machine.

use crate::faults::{Fault, FaultKind};
use crate::history::Collected;
use crate::history::{Decision, Transition};
use crate::setup;
use crate::topology::Kind;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Scheduling tolerance on this machine: a decision this long after a transition may still
/// have been made before its event arrived.
pub(crate) const TOLERANCE_MS: f64 = 100.0;
/// Slack added to `op_timeout + call_timeout` (plus the outcome's own record) for a call.
pub(crate) const CALL_SLACK_MS: f64 = 400.0;
/// How long an outcome may wait in a batch before it must have reached Redis: the metrics
/// flush's interval and a second.
pub(crate) const BATCH_WINDOW_MS: f64 = setup::METRICS_INTERVAL.as_millis() as f64 + 1000.0;

#[derive(Default, Debug)]
pub(crate) struct Summary {
    pub(crate) faults: usize,
    pub(crate) kinds: BTreeSet<&'static str>,
    pub(crate) calls: usize,
    pub(crate) violations: usize,
}

impl Summary {
    pub(crate) fn add(&mut self, other: &Summary) {
        self.faults += other.faults;
        self.kinds.extend(other.kinds.iter().copied());
        self.calls += other.calls;
        self.violations += other.violations;
    }
}

pub(crate) struct Input<'a> {
    pub(crate) kind: Kind,
    pub(crate) seed: u64,
    pub(crate) t0: f64,
    pub(crate) run_end: f64,
    pub(crate) faults: &'a [Fault],
    pub(crate) decisions: &'a [Decision],
    pub(crate) collected: &'a Collected,
    pub(crate) metrics: &'a HashMap<String, HashMap<String, u64>>,
    pub(crate) problems: Vec<String>,
}

/// Whether an operator's write that could not publish its event said so to its caller: an
/// error, or a snapshot that says it was not announced.
pub(crate) fn operator_told(r: &Result<redis_breaker::Snapshot, redis_breaker::StoreError>) -> bool {
    r.is_err() || r.as_ref().is_ok_and(|s| !s.announced)
}

struct Report<'a> {
    input: &'a Input<'a>,
    violations: usize,
}

impl Report<'_> {
    fn violation(&mut self, invariant: &str, what: String, at: f64, lines: &[&Decision]) {
        self.violations += 1;
        let i = self.input;
        println!(
            "VIOLATION [{invariant}] {} seed={} at +{:.3}s: {what}",
            i.kind.as_str(),
            i.seed,
            (at - i.t0) / 1000.0
        );
        for f in i.faults.iter().filter(|f| f.start <= at + 3000.0 && f.end.max(f.start) >= at - 5000.0) {
            println!("    fault +{:.3}s..+{:.3}s {}", (f.start - i.t0) / 1000.0, (f.end - i.t0) / 1000.0, f.describe());
        }
        for d in lines.iter().take(5) {
            println!("    history +{:.3}s {}", (d.t0 - i.t0) / 1000.0, serde_json::to_string(d).unwrap_or_default());
        }
        if lines.len() > 5 {
            println!("    ... {} more lines", lines.len() - 5);
        }
    }
}

/// Until when a fault may keep a worker from learning a transition made while it was in
/// force (the README's staleness bounds for that fault, with this harness's settings).
fn excused_until(f: &Fault) -> f64 {
    let cache = setup::CACHE_TTL.as_secs_f64() * 1000.0;
    let keepalive = setup::KEEPALIVE.as_secs_f64() * 1000.0;
    let op = setup::OP_TIMEOUT.as_secs_f64() * 1000.0;
    (match f.kind {
        // Redis gone or stopped: decided locally, then the drop marks everything stale.
        FaultKind::KillRestart | FaultKind::Rollback | FaultKind::Pause | FaultKind::Failover => f.end + 3000.0,
        FaultKind::Blackhole => f.end + keepalive + op + 1500.0,
        FaultKind::Delay => f.end + 1000.0,
        FaultKind::SilentSubscription => f.end + keepalive + op + 1000.0,
        FaultKind::PubsubKill => f.end + 1000.0,
        // The client must stop trusting a moved slot's breaker at once: the short bound.
        FaultKind::SlotMigration => f.end + cache,
        // A forced open whose event Redis refused: the short bound after the write.
        FaultKind::OperatorNoPublish => f.start + cache,
        _ => f.start,
    }) + TOLERANCE_MS
}

fn affects(f: &Fault, worker: usize) -> bool {
    f.worker().is_none_or(|w| w == worker)
}

pub(crate) fn check(input: &Input) -> Summary {
    let mut r = Report { input, violations: 0 };
    let by_breaker = |b: &'static str| input.decisions.iter().filter(move |d| d.b == b);
    let transitions: Vec<&Transition> = {
        let mut t: Vec<&Transition> = input.collected.transitions.values().collect();
        t.sort_by(|a, b| a.at.total_cmp(&b.at));
        t
    };
    // When each state that `b`'s transitions build on may have been lost: a loss of data (a
    // failover's from its start to its end: the old primary takes writes until it is demoted,
    // and they are lost), or its keys deleted or poisoned by hand.
    let wipes = |b: &str| -> Vec<f64> {
        input
            .faults
            .iter()
            .filter(|f| {
                (f.kind.loses_data() && f.breakers_lost(b))
                    || (matches!(f.kind, FaultKind::DeleteKeys | FaultKind::PoisonKey)
                        && setup::BREAKERS[f.target % setup::BREAKERS.len()].0 == b)
            })
            .flat_map(|f| if f.kind == FaultKind::Failover { vec![f.start, f.end] } else { vec![f.start] })
            .collect()
    };

    // 1. Staleness: no non-probe call admitted after a committed open, beyond the bound.
    for (b, _, shadow) in setup::BREAKERS {
        if shadow {
            continue;
        }
        let wiped = wipes(b);
        let ts: Vec<&&Transition> = transitions.iter().filter(|t| t.b == b).collect();
        for (i, open) in ts.iter().enumerate() {
            if open.to != "open" && open.to != "forced_open" {
                continue;
            }
            let closed = ts[i + 1..]
                .iter()
                .find(|t| t.to == "closed" || t.to == "forced_closed")
                .map_or(input.run_end, |t| t.at);
            let wiped = wiped.iter().copied().filter(|w| *w > open.at).fold(f64::INFINITY, f64::min);
            let end = closed.min(wiped);
            let late: Vec<&Decision> = by_breaker(b)
                // A process that knows Redis is down decides by its in-process breaker (the
                // degraded mode): that is relaxed by the contract, not stale.
                // Started after the bound, and answered before the breaker closed again (an
                // acquire in flight across the close may be answered by the closed state).
                .filter(|d| d.d == "admit" && d.redis && d.t0 > open.at + TOLERANCE_MS && d.t1 < end)
                .filter(|d| {
                    !input
                        .faults
                        .iter()
                        .any(|f| affects(f, d.w) && f.start <= open.at + TOLERANCE_MS && excused_until(f) >= d.t0)
                })
                .collect();
            if let Some(first) = late.first() {
                for t in ts.iter().filter(|t| t.at >= open.at - 1000.0 && t.at <= first.t0 + 1000.0) {
                    println!(
                        "    transition +{:.3}s {b} {} -> {} epoch {} ({}) by {}",
                        (t.at - input.t0) / 1000.0,
                        t.from,
                        t.to,
                        t.epoch,
                        t.reason,
                        t.origin
                    );
                }
                r.violation(
                    "1 staleness",
                    format!(
                        "{b}: {} calls admitted after the {} of epoch {} committed at +{:.3}s ({}), the first {:.0}ms later",
                        late.len(),
                        open.to,
                        open.epoch,
                        (open.at - input.t0) / 1000.0,
                        open.reason,
                        first.t0 - open.at
                    ),
                    first.t0,
                    &late,
                );
            }
        }
    }

    // 2. Probe cap, per half-open epoch, while Redis answers.
    for (b, max, _) in setup::BREAKERS {
        let mut epochs: BTreeMap<(u64, u64), Vec<&Decision>> = BTreeMap::new();
        for d in by_breaker(b).filter(|d| d.d == "probe" && d.st == "half_open" && d.redis) {
            epochs.entry((d.inc, d.ep)).or_default().push(d);
        }
        for probes in epochs.values() {
            let mut edges: Vec<(f64, i32, &Decision)> = Vec::new();
            for d in probes {
                edges.push((d.t1, 1, d));
                edges.push((d.t2, -1, d));
            }
            edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut out = 0;
            let mut open: Vec<&Decision> = Vec::new();
            for (t, delta, d) in edges {
                out += delta;
                if delta > 0 {
                    open.push(d);
                } else {
                    open.retain(|o| !std::ptr::eq(*o, d));
                }
                if out > max as i32 {
                    let excused = input.faults.iter().any(|f| {
                        f.kind.disturbs_probes()
                            && open.iter().any(|o| affects(f, o.w))
                            && f.start <= t
                            && f.end + 1000.0 >= open.iter().map(|o| o.t1).fold(f64::INFINITY, f64::min)
                    });
                    if !excused {
                        r.violation("2 probe cap", format!("{b}: {out} probes out at once (max {max})"), t, &open);
                    }
                    break;
                }
            }
        }
    }

    // 3. One open per epoch, epochs only grow (between losses of data); no process pinned on
    //    a state Redis no longer has.
    for (b, _, _) in setup::BREAKERS {
        let wiped = wipes(b);
        let mut seen: HashMap<(usize, u64), &Transition> = HashMap::new();
        let mut last: Option<&Transition> = None;
        // While a failover goes on, the old primary and the new one both take writes: two
        // histories, neither of which the checker can order.
        let split =
            |at: f64| input.faults.iter().any(|f| f.kind == FaultKind::Failover && f.start <= at && at <= f.end);
        for t in transitions.iter().filter(|t| t.b == b && !split(t.at)) {
            let segment = wiped.iter().filter(|w| **w <= t.at).count();
            if let Some(l) = last
                && wiped.iter().filter(|w| **w <= l.at).count() == segment
                && t.epoch < l.epoch
            {
                r.violation("3 epochs", format!("{b}: epoch went from {} back to {}", l.epoch, t.epoch), t.at, &[]);
            }
            last = Some(t);
            if t.to != "open" && t.to != "forced_open" {
                continue;
            }
            if let Some(prev) = seen.insert((segment, t.epoch), t) {
                r.violation(
                    "3 one open per epoch",
                    format!(
                        "{b}: two opens from epoch {} ({} at +{:.3}s, {})",
                        t.epoch,
                        prev.id,
                        (prev.at - input.t0) / 1000.0,
                        t.id
                    ),
                    t.at,
                    &[],
                );
            }
        }
        let samples: Vec<_> = input.collected.samples.iter().filter(|s| s.b == b).collect();
        let pinned: Vec<&Decision> = by_breaker(b)
            .filter(|d| d.d == "reject" && !d.own && d.redis && d.st != "closed")
            .filter(|d| {
                let near: Vec<_> = samples.iter().filter(|s| s.at >= d.t1 - 2000.0 && s.at <= d.t1 + 500.0).collect();
                !near.is_empty() && near.iter().all(|s| s.inc != Some(d.inc) || s.epoch < d.ep)
            })
            .filter(|d| {
                !input.faults.iter().any(|f| {
                    let lingers = match f.kind {
                        FaultKind::DeleteKeys | FaultKind::PoisonKey => {
                            setup::SUBSCRIBED_CACHE_TTL.as_secs_f64() * 1000.0 + 1000.0
                        }
                        _ => 3000.0,
                    };
                    affects(f, d.w) && f.start <= d.t1 && f.end.max(f.start) + lingers >= d.t1
                })
            })
            .collect();
        if let Some(first) = pinned.first() {
            r.violation(
                "3 pinned",
                format!("{b}: {} rejections from an (incarnation, epoch) Redis did not hold around them", pinned.len()),
                first.t1,
                &pinned,
            );
        }
    }

    // 4. Counts exactly once: the metrics hold every outcome, within what losses allow.
    for (b, _, _) in setup::BREAKERS {
        let m = input.metrics.get(b).cloned().unwrap_or_default();
        let (mut lo_s, mut hi_s, mut lo_f, mut hi_f) = (0u64, 0u64, 0u64, 0u64);
        for d in by_breaker(b) {
            let (definite, possible) = counted(input, b, d);
            if d.success() {
                lo_s += u64::from(definite);
                hi_s += u64::from(possible);
            } else if d.failure() {
                lo_f += u64::from(definite);
                hi_f += u64::from(possible);
            }
        }
        // A worker killed by the nemesis may die between its outcome reaching Redis (a failure
        // is recorded before `execute` returns; a success may go with a flush) and the line
        // that logs the call: one outcome no history holds, per kill and breaker (each worker
        // calls each breaker from one loop, one call at a time).
        let kills = input.faults.iter().filter(|f| f.kind == FaultKind::WorkerRestart).count() as u64;
        let (hi_s, hi_f) = (hi_s + kills, hi_f + kills);
        let (s, f) = (m.get("successes").copied().unwrap_or(0), m.get("failures").copied().unwrap_or(0));
        if s < lo_s || s > hi_s || f < lo_f || f > hi_f {
            r.violation(
                "4 counts",
                format!(
                    "{b}: the metrics hold {s} successes and {f} failures; the history allows {lo_s}..={hi_s} and {lo_f}..={hi_f}"
                ),
                input.run_end,
                &[],
            );
            // Each lane's last applied batch (Redis's clock, ms x 1000 + seq): a lane whose
            // counts stopped reaching Redis long before the end shows here.
            let mut lanes: Vec<(&String, &u64)> = m.iter().filter(|(k, _)| k.starts_with("batch:")).collect();
            lanes.sort_by_key(|(_, v)| **v);
            for (k, v) in lanes {
                println!("    {k}: applied +{:.3}s, seq {}", (*v as f64 / 1000.0 - input.t0) / 1000.0, v % 1000);
            }
        }
    }

    // 5. TTLs: every key has one (a state forced with no duration keeps its keys until reset).
    for k in &input.collected.immortals {
        if k.state == "forced_open" || k.state == "forced_closed" {
            continue;
        }
        r.violation("5 ttl", format!("{} has no TTL (state {:?})", k.key, k.state), k.at, &[]);
    }

    // 6. Quorum: the fleet opens on the quorum rule only when that many hosts failed.
    let window = setup::QUORUM_WINDOW.as_secs_f64() * 1000.0;
    for t in transitions.iter().filter(|t| t.b == "quorum" && t.from == "closed" && t.to == "open") {
        let hosts: BTreeSet<usize> = by_breaker("quorum")
            .filter(|d| d.failure() && d.t2 >= t.at - window - 1000.0 && d.t2 <= t.at + TOLERANCE_MS)
            .map(|d| d.w)
            .collect();
        if hosts.len() < setup::QUORUM as usize {
            r.violation(
                "6 quorum",
                format!(
                    "quorum: the fleet opened ({}) with failures from {} host(s) {hosts:?} within the window (quorum {})",
                    t.reason,
                    hosts.len(),
                    setup::QUORUM
                ),
                t.at,
                &[],
            );
        }
    }

    // 6. Quorum, this process's own breaker: after its own breaker rejected a call with a time
    //    left, the same process lets no call through before that time (short of an operator's
    //    write to the breaker, which may end it).
    for d in by_breaker("quorum").filter(|d| d.d == "reject" && d.own && d.ra > 0.0) {
        let until = d.t1 + d.ra - TOLERANCE_MS;
        let operated = input.faults.iter().any(|f| {
            f.kind == FaultKind::OperatorWrite && f.target == 1 && f.start <= until && f.start >= d.t1 - 1000.0
        });
        if operated {
            continue;
        }
        // A fleet transition in between ends the own trip (it folds into the fleet's).
        let folded = |at: f64| transitions.iter().any(|t| t.b == "quorum" && t.at > d.t1 - TOLERANCE_MS && t.at <= at);
        let early: Vec<&Decision> = by_breaker("quorum")
            .filter(|e| e.pid == d.pid && e.d == "admit" && !e.own && e.t0 > d.t1 && e.t0 < until)
            .filter(|e| !folded(e.t0))
            .collect();
        if let Some(first) = early.first() {
            r.violation(
                "6 own breaker",
                format!(
                    "quorum: worker {} called the downstream {:.0}ms after its own breaker rejected with {:.0}ms left",
                    d.w,
                    first.t0 - d.t1,
                    d.ra
                ),
                first.t0,
                &[d, first],
            );
            break;
        }
    }

    // 7. Liveness: no panic, every worker stops cleanly, no call waits past its bound.
    for p in &input.problems {
        r.violation("7 liveness", p.clone(), input.run_end, &[]);
    }
    let bound = (setup::OP_TIMEOUT.as_secs_f64() * 2.0 + setup::CALL_TIMEOUT.as_secs_f64()) * 1000.0 + CALL_SLACK_MS;
    let slow: Vec<&Decision> = input.decisions.iter().filter(|d| d.t3 - d.t0 > bound).collect();
    if let Some(first) = slow.first() {
        r.violation(
            "7 liveness",
            format!("{} calls took longer than {bound:.0}ms, the first {:.0}ms", slow.len(), first.t3 - first.t0),
            first.t0,
            &slow,
        );
    }

    // 8. Operators are told what their write could not do.
    for f in input.faults.iter().filter(|f| f.told == Some(false)) {
        r.violation("8 operators told", format!("the write succeeded silently: {}", f.detail), f.start, &[]);
    }

    {
        println!("   the faults of this run, as applied:");
        for f in input.faults {
            println!(
                "    fault +{:.3}s..+{:.3}s {}",
                (f.start - input.t0) / 1000.0,
                (f.end.max(f.start) - input.t0) / 1000.0,
                f.describe()
            );
        }
    }
    // A primary the sentinels switched by themselves (no failover scheduled around it) loses
    // what the old primary took until it is a replica again, which no fault accounts for: the
    // checks of counts and epochs after it may fail for that, not for the library.
    for (at, from, to) in &input.collected.switches {
        let scheduled =
            input.faults.iter().any(|f| f.kind == FaultKind::Failover && *at >= f.start && *at <= f.end + 1000.0);
        if !scheduled {
            println!(
                "   NOTE: the sentinels switched the primary from {from} to {to} by themselves, seen at +{:.3}s (not a \
                 scheduled fault): writes to {from} until it was made a replica are lost, unaccounted",
                (at - input.t0) / 1000.0
            );
        }
    }
    let summary = Summary {
        faults: input.faults.len(),
        kinds: input.faults.iter().map(|f| f.kind.name()).collect(),
        calls: input.decisions.len(),
        violations: r.violations,
    };
    println!(
        "   {}: {} faults of {} kinds, {} calls, {} violations",
        input.kind.as_str(),
        summary.faults,
        summary.kinds.len(),
        summary.calls,
        summary.violations
    );
    summary
}

/// Whether the outcome of `d` must be in the metrics (definite) and whether it may be
/// (possible), given the losses of data before the end of the run: Redis keeps what was applied
/// after the last loss, and what the state it restarted from (a rollback, a failover's
/// replica) held.
fn counted(input: &Input, b: &str, d: &Decision) -> (bool, bool) {
    let t = d.t2;
    let w = BATCH_WINDOW_MS;
    let losses: Vec<&Fault> = input.faults.iter().filter(|f| f.kind.loses_data() && f.breakers_lost(b)).collect();
    let sent_by = sent_by(input, d);
    let (mut definite, mut possible) = (false, false);
    // Walk back the lineage of the data Redis ends with: after the last loss, then what the
    // state it restarted from held (a rollback's RDB, a failover's replica), and so on.
    let mut upto = f64::INFINITY;
    loop {
        let last = losses.iter().filter(|f| f.start < upto).max_by(|a, b| a.start.total_cmp(&b.start));
        let (from, lost_until) = match last {
            // A killed server applied what reached it until it was dead (`dead_at`), which may
            // be well after the fault began: an outcome decided in between may be lost.
            Some(f) => (f.start, if f.kind == FaultKind::Failover { f.end } else { f.dead_at.unwrap_or(f.start) }),
            None => (f64::NEG_INFINITY, f64::NEG_INFINITY),
        };
        // Outcomes just before a restore point may not have been sent by then, nor those
        // decided while Redis was out of reach (they wait for its return).
        let hi_definite = if upto.is_finite() { upto - w } else { upto };
        let waited = upto.is_finite()
            && input
                .faults
                .iter()
                .any(|f| f.kind.disturbs_probes() && affects(f, d.w) && f.start <= upto && f.end.max(f.start) + w >= t);
        if t > lost_until && t <= hi_definite && !waited {
            definite = true;
        }
        if sent_by > from && t <= upto {
            possible = true;
        }
        match last.and_then(|f| f.restore_point) {
            Some(restore) => upto = restore,
            None => break,
        }
    }
    // A worker killed by the nemesis loses the counts it had not sent yet: those of the last
    // `w`, and those Redis's absence held back (see `sent_by`).
    let killed = input
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::WorkerRestart && f.target == d.w && t <= f.start && sent_by > f.start);
    if killed {
        definite = false;
    }
    (definite, possible || definite)
}

/// By when the outcome of `d` has reached Redis, unless it was lost on the way: `BATCH_WINDOW_MS`
/// after it was decided, or after the end of a fault that kept its worker from Redis meanwhile,
/// and so on while the next fault comes before it was sent. An outcome decided while Redis is
/// out of reach (or waiting in a batch when it went) is held, in the pending counts or in a
/// batch in doubt, until Redis is back and the metrics flush comes. So a loss of data soon
/// after an outage (on the cluster, a node killed again 10ms after the cluster was whole) is
/// followed by outcomes decided long before it, which reach the new data (seen, seed 6 with
/// `--faults kill_restart,downstream_all`: 810 successes of `rate` more than the checker
/// allowed after five kills of its node 2s apart); and a worker killed soon after such an
/// outage loses outcomes decided more than `w` before its death (seed 2000007: `shadow` 4
/// failures short, a worker killed 0.6s after the node holding `shadow` was back from 3s down).
fn sent_by(input: &Input, d: &Decision) -> f64 {
    let (t, w) = (d.t2, BATCH_WINDOW_MS);
    let holding: Vec<&Fault> = input
        .faults
        .iter()
        .filter(|f| f.kind.disturbs_probes() && affects(f, d.w) && f.end.max(f.start) + w >= t)
        .collect();
    let mut by = t + w;
    loop {
        let later = holding.iter().filter(|f| f.start <= by).map(|f| f.end.max(f.start) + w).fold(by, f64::max);
        if later <= by {
            return by;
        }
        by = later;
    }
}
