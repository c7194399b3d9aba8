//! The property test: random sequences run through the real Lua scripts on a real Redis and
//! through the Rust machine, compared reply by reply and field by field.

use redis_breaker_test_support as support;

use crate::config::Config;
use crate::machine::Machine;
use crate::name::Keys;
use crate::protocol::{Batch, ControlOp, Op, Params, Record, RecordOutcome, Reply, Report, Verdict};
use crate::store::{RedisStore, StoreSettings};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, FileFailurePersistence, TestRunner};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Step {
    /// Acquire into `slot`, carrying a batch stamped by the permit in another slot.
    Acquire {
        slot: usize,
        batch: Option<Counts>,
        /// Made by the second process, whose config differs in its window length.
        second: bool,
        /// Made by the process that may not publish events (`QUIET`).
        quiet: bool,
    },
    /// The permit in `slot` is released by a caller that never saw the acquire's reply: it
    /// names no incarnation or epoch, only the permit id.
    ReleaseLost {
        slot: usize,
    },
    /// A value the scripts increment is set by hand to something that is not an integer.
    Poison {
        metrics: bool,
    },
    Finish {
        slot: usize,
        outcome: RecordOutcome,
        slow: bool,
        timed_out: bool,
        /// Which process records it, what it reports under the quorum rule, and whether it
        /// says it is active (quorum fraction).
        reporter: usize,
        report: Report,
        active: bool,
    },
    Flush {
        counts: Counts,
        second: bool,
        reporter: usize,
        report: Report,
        active: bool,
    },
    Advance {
        ms: u64,
    },
    /// The clock goes back (a failover to a server whose clock is behind).
    Rewind {
        ms: u64,
    },
    /// The TTLs of the state and metrics keys are cut to half by hand, so a renewal shows.
    ShortenTtls,
    /// Jump exactly to the next deadline (open_until or a lease expiry): the boundary cases.
    ToDeadline,
    Control {
        op: ControlOp,
        duration_ms: u64,
        /// Made by an operator who may not publish events (`QUIET`).
        quiet: bool,
    },
    LoseKeys,
}

const SLOTS: usize = 4;
/// Processes (client ids) that record outcomes and report under the quorum rule.
const REPORTERS: usize = 3;
/// The process whose Redis user may not publish on any channel (`resetchannels`): its
/// transitions are not announced.
const QUIET: usize = REPORTERS - 1;
/// The events channel of the other processes.
const CHANNEL: &str = "model:events";

/// Which process records, what it reports, and whether it says it is active.
fn report() -> impl Strategy<Value = (usize, Report, bool)> {
    (
        0..REPORTERS,
        prop_oneof![4 => Just(Report::None), 3 => Just(Report::Failing), 1 => Just(Report::Recovered)],
        prop::bool::weighted(0.4),
    )
}

/// Batched counts, stamped with the snapshot of the permit held in `slot` (or none).
#[derive(Debug, Clone, Copy)]
struct Counts {
    slot: usize,
    successes: u64,
    slow: u64,
    ignored: u64,
    rejected: u64,
    degraded: u64,
    /// The batch id: 0 none, 1 a new one, 2 the last batch with an id sent again as it was
    /// (its reply lost): counted once.
    id: u8,
}

fn counts() -> impl Strategy<Value = Counts> {
    (0..SLOTS, 0..4u64, 0..3u64, 0..2u64, 0..2u64, 0..2u64, 0..3u8).prop_map(
        |(slot, successes, slow, ignored, rejected, degraded, id)| Counts {
            slot,
            successes,
            slow: slow.min(successes),
            ignored,
            rejected,
            degraded,
            id,
        },
    )
}

/// The batch of `counts` as each side names it.
fn batches(held: &[Option<Held>], counts: &Counts) -> (Batch, Batch) {
    let h = held[counts.slot].clone().unwrap_or_default();
    let batch = |incarnation| Batch {
        incarnation,
        epoch: h.epoch,
        fseq: h.fseq,
        successes: counts.successes,
        slow: counts.slow,
        ignored: counts.ignored,
        rejected: counts.rejected,
        degraded_successes: counts.degraded,
        degraded_failures: counts.degraded,
        ..Batch::default()
    };
    (batch(h.redis_incarnation), batch(h.model_incarnation))
}

fn step() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        Just(RecordOutcome::Success),
        Just(RecordOutcome::Failure),
        Just(RecordOutcome::Ignore),
        Just(RecordOutcome::Release),
    ];
    let control = prop_oneof![Just(ControlOp::ForceOpen), Just(ControlOp::ForceClose), Just(ControlOp::Reset)];
    prop_oneof![
        6 => (0..SLOTS, prop::option::weighted(0.3, counts()), prop::bool::weighted(0.3), prop::bool::weighted(0.15))
            .prop_map(|(slot, batch, second, quiet)| Step::Acquire { slot, batch, second, quiet }),
        1 => (0..SLOTS).prop_map(|slot| Step::ReleaseLost { slot }),
        1 => any::<bool>().prop_map(|metrics| Step::Poison { metrics }),
        6 => (0..SLOTS, outcome, any::<bool>(), prop::bool::weighted(0.1), report()).prop_map(
            |(slot, outcome, slow, timed_out, (reporter, report, active))| Step::Finish {
                slot,
                outcome,
                slow,
                timed_out,
                reporter,
                report,
                active
            }
        ),
        2 => (counts(), prop::bool::weighted(0.3), report()).prop_map(|(counts, second, (reporter, report, active))| {
            Step::Flush { counts, second, reporter, report, active }
        }),
        4 => prop_oneof![0..50u64, 50..400u64, 400..3000u64].prop_map(|ms| Step::Advance { ms }),
        1 => (1..1500u64).prop_map(|ms| Step::Rewind { ms }),
        1 => Just(Step::ShortenTtls),
        2 => Just(Step::ToDeadline),
        1 => (control, prop_oneof![Just(0u64), 1..2000u64], prop::bool::weighted(0.3))
            .prop_map(|(op, duration_ms, quiet)| Step::Control { op, duration_ms, quiet }),
        1 => Just(Step::LoseKeys),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        // Biased so that a run takes the rarer ways out of a state: the failure-rate rule alone
        // (no consecutive rule), and closing after the probes succeed (a lower threshold).
        (prop_oneof![2 => Just(0u32), 3 => 1..4u32], prop_oneof![1 => Just(1u32), 1 => 2..4u32], 1..4u32),
        (50..500u64, 0..3000u64, 1.0..3.0f64, 0.0..0.5f64),
        (50..600u64, prop::option::of(0.3..1.0f64), prop::option::of(0.3..1.0f64), 1..6u32, 500..3000u64),
        100..5000u64,
        // A quorum in about a third of the cases: under one the fleet's own rules trip nothing.
        (prop_oneof![3 => Just(1u32), 1 => 2..4u32], prop::option::weighted(0.15, 0.2..1.0f64)),
        // The TTLs: short ones (a tenth of the shorter, when they are set in full again, is
        // 1-6s: the clock's steps cross it), or the defaults (never crossed in a case).
        prop::option::weighted(0.6, (10_000..60_000u64, 10_000..120_000u64)),
    )
        .prop_filter_map(
            "no trip rule",
            |(
                (ft, st, probes),
                (base, extra, mult, jitter),
                (lease, fr, sr, min, win),
                expiry,
                (quorum, fraction),
                ttls,
            )| {
                let mut b = Config::builder()
                    .failure_threshold(ft)
                    .success_threshold(st)
                    .half_open_max_probes(probes)
                    .base_recovery(Duration::from_millis(base))
                    .max_recovery(Duration::from_millis(base + extra))
                    .multiplier(mult)
                    .jitter(jitter)
                    .probe_lease(Duration::from_millis(lease))
                    .call_timeout(Duration::from_millis(lease * 10 / 11))
                    .minimum_calls(min)
                    .window(Duration::from_millis(quorum_window(win, quorum > 1 || fraction.is_some())))
                    .failure_expiry(Duration::from_millis(expiry))
                    .quorum(quorum);
                if let Some((state_ttl, metrics_ttl)) = ttls {
                    b = b.state_ttl(Duration::from_millis(state_ttl)).metrics_ttl(Duration::from_millis(metrics_ttl));
                }
                if let Some(f) = fraction {
                    b = b.quorum_fraction(f);
                }
                if let Some(r) = fr {
                    b = b.failure_rate(r);
                }
                if let Some(r) = sr {
                    b = b.slow_call_rate(r);
                }
                b.build().ok()
            },
        )
}

/// What a permit remembers: the snapshot it was granted under, on each side.
#[derive(Debug, Clone, Default)]
struct Held {
    redis_incarnation: u64,
    model_incarnation: u64,
    epoch: u64,
    fseq: u64,
    probe: String,
    permit: String,
}

fn compare(step: &Step, redis: &Reply, model: &Reply) -> Result<(), TestCaseError> {
    let strip = |r: &Reply| {
        (
            r.verdict,
            r.state,
            r.epoch,
            r.failures,
            r.fseq,
            r.remaining_ms,
            r.stored_config.clone(),
            r.reason.clone(),
            r.announced,
        )
    };
    prop_assert_eq!(strip(redis), strip(model), "reply differs after {:?}", step);
    prop_assert_eq!(redis.incarnation == 0, model.incarnation == 0, "incarnation presence after {:?}", step);
    Ok(())
}

/// One case: the breaker's keys, both configs, the model, the fake clock and the permits held.
struct Case {
    keys: Keys,
    params: Params,
    /// A second process whose window length differs (a rolling deploy): both count in one window.
    second: Params,
    model: Machine,
    now: u64,
    held: Vec<Option<Held>>,
    /// The metrics key was made by hand (a poison step) and no script has set its TTL yet.
    hand_made_metrics: bool,
    next_permit: u64,
    next_incarnation: u64,
    /// Redis and the model each name incarnations their own way; pair them as they appear.
    last_incarnations: (u64, u64),
    /// The last script call set the TTLs in full (the model's `ttl_at` moved).
    renewed: bool,
    /// The last batch sent with an id, as each side names it, and the number of the next.
    last_batch: Option<(Batch, Batch)>,
    next_seq: u64,
    /// The server tells before anything is written that a PUBLISH would be refused (>= 7.0,
    /// `redis.acl_check_cmd`): an operator's transition that could not be announced is refused.
    tells_ahead: bool,
    /// The last script call was refused before it wrote anything: the keys' TTLs are as the
    /// call before left them, not measured from this step's clock.
    refused: bool,
}

/// The op as each side names it, the slot a grant goes to, whether the second process's config
/// runs it, and which reporter (client id) sends it.
type Ops = (Op, Op, Option<usize>, bool, usize);

impl Case {
    fn new(config: Config, second_window: u64, tells_ahead: bool) -> Case {
        Case {
            keys: Keys::new("breaker", &support::unique("model")),
            params: Params::new(&config),
            // (Under a quorum up to 5.5s, against the first's 2-3s: a shorter window must not sweep
            // the reports a longer one still counts.)
            second: Params::new(&Config {
                window: Duration::from_millis(if config.under_quorum() {
                    quorum_window(second_window, true) + second_window
                } else {
                    second_window
                }),
                ..config
            }),
            model: Machine::default(),
            now: 1_700_000_000_000,
            held: vec![None; SLOTS],
            hand_made_metrics: false,
            next_permit: 0,
            next_incarnation: 1,
            last_incarnations: (0, 0),
            renewed: false,
            last_batch: None,
            next_seq: 1,
            tells_ahead,
            refused: false,
        }
    }

    /// Steps that change the world rather than call a script: time, lost keys, poisoned values.
    /// Answers false for the steps that call a script.
    async fn world(&mut self, conn: &mut redis::aio::MultiplexedConnection, step: &Step) -> bool {
        let keys = &self.keys.all;
        match step {
            Step::Advance { ms } => self.now += ms,
            Step::Rewind { ms } => self.now -= ms,
            Step::ShortenTtls => {
                // Cut to half its TTL (real time) so that a renewal shows in PTTL; a key with no
                // TTL (forced until reset, made by hand) or a shorter one is left alone.
                for (key, ttl) in [(&keys[0], self.params.state_ttl), (&keys[3], self.params.metrics_ttl)] {
                    let half = i64::try_from(ttl / 2).unwrap();
                    let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap();
                    if pttl > half {
                        let _: () = redis::cmd("PEXPIRE").arg(key).arg(half).query_async(conn).await.unwrap();
                    }
                }
            }
            Step::ToDeadline => self.now = self.model.next_deadline(self.now).unwrap_or(self.now),
            Step::LoseKeys => {
                let _: () =
                    redis::cmd("DEL").arg(&keys[0]).arg(&keys[1]).arg(&keys[2]).query_async(conn).await.unwrap();
                self.model.lose_keys();
            }
            Step::Poison { metrics: true } => {
                let _: () = redis::cmd("HSET").arg(&keys[3]).arg("calls").arg("abc").query_async(conn).await.unwrap();
                self.model.metrics.calls = 0;
                // A key made by hand has no TTL until a script sets one.
                let pttl: i64 = redis::cmd("PTTL").arg(&keys[3]).query_async(conn).await.unwrap();
                self.hand_made_metrics |= pttl == -1;
            }
            Step::Poison { metrics: false } => {
                // The first bucket count of the window, if there is one.
                let fields: Vec<String> = redis::cmd("HKEYS").arg(&keys[2]).query_async(conn).await.unwrap();
                if let Some(field) = fields.into_iter().find(|f| f != "len") {
                    let _: () = redis::cmd("HSET").arg(&keys[2]).arg(&field).arg("x").query_async(conn).await.unwrap();
                    self.model.forget_bucket(&field);
                }
            }
            _ => return false,
        }
        true
    }

    /// The script call a step makes, or `None` when it has nothing to do (no permit held).
    fn ops(&mut self, step: &Step) -> Option<Ops> {
        Some(match step {
            Step::ReleaseLost { slot } => {
                let h = self.held[*slot].take()?;
                let record = Record::release_unanswered(h.permit);
                (Op::Record(record.clone()), Op::Record(record), None, false, 0)
            }
            Step::Acquire { slot, batch, second, quiet } => {
                self.next_permit += 1;
                let (for_redis, for_model) =
                    batch.map(|c| self.with_id(batches(&self.held, &c), c.id)).unwrap_or_default();
                let permit = format!("p{}", self.next_permit);
                (
                    Op::Acquire { permit: permit.clone(), batch: for_redis },
                    Op::Acquire { permit, batch: for_model },
                    Some(*slot),
                    *second,
                    if *quiet { QUIET } else { 0 },
                )
            }
            Step::Finish { slot, outcome, slow, timed_out, reporter, report, active } => {
                let h = self.held[*slot].take()?;
                let record = |incarnation| Record {
                    outcome: *outcome,
                    incarnation,
                    epoch: h.epoch,
                    probe: h.probe.clone(),
                    slow: *slow,
                    timed_out: *timed_out && *outcome == RecordOutcome::Failure,
                    fseq: h.fseq,
                    batch: Batch::default(),
                    description: if *outcome == RecordOutcome::Failure {
                        format!("error in slot {slot}")
                    } else {
                        String::new()
                    },
                    report: *report,
                    active: *active,
                };
                (
                    Op::Record(record(h.redis_incarnation)),
                    Op::Record(record(h.model_incarnation)),
                    None,
                    false,
                    *reporter,
                )
            }
            Step::Flush { counts, second, reporter, report, active } => {
                let (for_redis, for_model) = self.with_id(batches(&self.held, counts), counts.id);
                let flush = |batch| Op::Record(Record { report: *report, active: *active, ..Record::flush(batch) });
                (flush(for_redis), flush(for_model), None, *second, *reporter)
            }
            Step::Control { op, duration_ms, quiet } => {
                // Half the operators leave a note for the history.
                let note = if duration_ms % 2 == 0 { String::new() } else { format!("note {duration_ms}") };
                let op = Op::Control { op: *op, duration_ms: *duration_ms, note };
                (op.clone(), op, None, false, if *quiet { QUIET } else { 0 })
            }
            _ => return None,
        })
    }

    /// Runs one script call on both sides and compares the replies.
    async fn call(&mut self, stores: &[RedisStore], step: &Step, ops: Ops, rand: f64) -> Result<(), TestCaseError> {
        let (op_redis, op_model, slot, second, reporter) = ops;
        let p = if second { &self.second } else { &self.params };
        let redis = &stores[reporter];
        let got = redis.run(&self.keys, p, &op_redis, Some(self.now), rand).await;
        self.refused = false;
        let origin = reporter_id(reporter);
        // The quiet process's events are refused: its transitions are not announced.
        self.model.publishes = reporter != QUIET;
        // An operator's transition the server can tell would not be announced is refused before
        // anything is written (`lua/control.lua`); the twin, in process, always has a publisher:
        // here it tells whether the op makes a transition, and is left as it was.
        if self.tells_ahead && !self.model.publishes && matches!(op_model, Op::Control { .. }) {
            let (_, transitions) =
                self.model.clone().run(p, self.now, rand, self.next_incarnation * 1000, &origin, &op_model);
            if !transitions.is_empty() {
                stats::add("operator's transition refused (may not publish)");
                (self.refused, self.renewed) = (true, false);
                prop_assert!(
                    matches!(got, Err(crate::StoreError::PublishDenied { .. })),
                    "refused before anything is written after {:?}, got {:?}",
                    step,
                    got
                );
                return Ok(());
            }
        }
        let got = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let (ttl_at, unannounced) = (self.model.ttl_at(), self.model.unannounced());
        let (want, transitions) = self.model.run(p, self.now, rand, self.next_incarnation * 1000, &origin, &op_model);
        self.next_incarnation += 1;
        self.renewed = self.model.ttl_at() != ttl_at;
        stats::count(&want, &transitions, ttl_at, self.model.ttl_at(), self.now);
        if unannounced && !self.model.unannounced() {
            stats::add("announced again (the mark cleared)");
        }
        compare(step, &got, &want)?;
        // Each transition is in the history, the last one newest, with the operator's note.
        if let Some(last) = transitions.last() {
            let history = redis.history(&self.keys, 1).await.map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let entry = history.first().ok_or_else(|| TestCaseError::fail(format!("no history after {step:?}")))?;
            prop_assert_eq!(
                (entry.to.as_str(), entry.epoch),
                (last.to.as_str(), last.epoch),
                "history after {:?}",
                step
            );
            let note = match &op_redis {
                Op::Control { note, .. } if !note.is_empty() => Some(note.clone()),
                _ => None,
            };
            prop_assert_eq!(&entry.note, &note, "history note after {:?}", step);
            let failure = match &op_redis {
                Op::Record(r) if !r.description.is_empty() => Some(r.description.clone()),
                _ => None,
            };
            prop_assert_eq!(&entry.failure, &failure, "history failure after {:?}", step);
        }
        let pair = (got.incarnation, want.incarnation);
        prop_assert_eq!(
            pair.0 == self.last_incarnations.0,
            pair.1 == self.last_incarnations.1,
            "incarnations change together after {:?}",
            step
        );
        self.last_incarnations = pair;
        if let Some(slot) = slot {
            let granted = matches!(got.verdict, Verdict::Allowed | Verdict::Probe);
            let permit = format!("p{}", self.next_permit);
            self.held[slot] = granted.then(|| Held {
                redis_incarnation: got.incarnation,
                model_incarnation: want.incarnation,
                epoch: got.epoch,
                fseq: got.fseq,
                probe: if got.verdict == Verdict::Probe { permit.clone() } else { String::new() },
                permit,
            });
        }
        Ok(())
    }

    /// The whole state hash, field by field, against the machine's flat view (incarnations are
    /// numbered differently on each side: their presence is compared in `call`), the leases,
    /// and the TTL a state in force must keep.
    async fn check_stored(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
        step: &Step,
        second: bool,
    ) -> Result<(), TestCaseError> {
        let keys = &self.keys.all;
        let (mut got, leases): (BTreeMap<String, String>, u64) =
            redis::pipe().hgetall(&keys[0]).zcard(&keys[1]).query_async(conn).await.unwrap();
        let (flat, _, _) = self.model.flat();
        let mut want: BTreeMap<String, String> =
            flat.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
        got.remove("incarnation");
        want.remove("incarnation");
        // A busy state's TTLs are set in full again once a tenth of the shorter has passed:
        // after any script call, `ttl_at` (when they last were) is within that of now, whatever
        // both sides agree on (a call refused before it wrote leaves them as they were).
        if self.model.exists() && !self.refused {
            let refresh = self.params.state_ttl.min(self.params.metrics_ttl) / 10;
            let ttl_at = got.get("ttl_at").and_then(|v| v.parse::<u64>().ok());
            prop_assert!(
                ttl_at.is_some_and(|t| t <= self.now && self.now - t < refresh),
                "ttl_at {:?} at {} (renewed every {}ms) after {:?}",
                ttl_at,
                self.now,
                refresh,
                step
            );
        }
        prop_assert_eq!(got, want, "state hash after {:?}", step);
        prop_assert_eq!(leases, self.model.probe_count() as u64, "probe leases after {:?}", step);

        // The quorum's reporters, and their key's TTL: at most the window (either config's).
        type Entries = Vec<(String, i64)>;
        let (reporters, reporters_pttl, processes): (Entries, i64, Entries) = redis::pipe()
            .zrange_withscores(&keys[5], 0, -1)
            .pttl(&keys[5])
            .zrange_withscores(&keys[6], 0, -1)
            .query_async(conn)
            .await
            .unwrap();
        // Each key's entries, and its bookkeeping members (negative scores: ' window', ' since').
        let split = |entries: Vec<(String, i64)>| {
            let (marks, entries): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, score)| *score < 0);
            let abs = |v: Vec<(String, i64)>| v.into_iter().map(|(m, s)| (m, s.unsigned_abs())).collect();
            (abs(entries), abs(marks))
        };
        let ((reporters, reporter_marks), (processes, process_marks)): ((BTreeMap<_, _>, _), (BTreeMap<_, _>, _)) =
            (split(reporters), split(processes));
        prop_assert_eq!(&reporters, self.model.reporters(), "reporters after {:?}", step);
        prop_assert_eq!(&processes, self.model.processes(), "processes after {:?}", step);
        prop_assert_eq!([reporter_marks, process_marks], self.model.quorum_marks(), "quorum marks after {:?}", step);
        let window = i64::try_from(self.params.window.max(self.second.window)).unwrap();
        prop_assert!(
            reporters_pttl == -2 || (reporters_pttl > 0 && reporters_pttl <= window),
            "reporters TTL {} after {:?}",
            reporters_pttl,
            step
        );

        // Every key has a TTL, however seldom it is set in full: a closed state's at most
        // state_ttl, the metrics' at most metrics_ttl (either config's).
        let (state_ttl, metrics_ttl) = (
            i64::try_from(self.params.state_ttl.max(self.second.state_ttl)).unwrap(),
            i64::try_from(self.params.metrics_ttl.max(self.second.metrics_ttl)).unwrap(),
        );
        let (state_pttl, metrics_pttl): (i64, i64) =
            redis::pipe().pttl(&keys[0]).pttl(&keys[3]).query_async(conn).await.unwrap();
        if self.model.exists() && self.model.state() == crate::State::Closed {
            prop_assert!(state_pttl > 0 && state_pttl <= state_ttl, "closed state TTL {} after {:?}", state_pttl, step);
        }
        prop_assert!(
            metrics_pttl == -2
                || (metrics_pttl > 0 && metrics_pttl <= metrics_ttl)
                || (metrics_pttl == -1 && self.hand_made_metrics),
            "metrics TTL {} after {:?}",
            metrics_pttl,
            step
        );
        if metrics_pttl != -1 {
            self.hand_made_metrics = false;
        }
        // A call that set the TTLs in full (the model says when) set them on the keys: whatever
        // a ShortenTtls step left, each key now lives about its whole TTL (a forced state with
        // no end has none).
        if self.renewed {
            let forever = self.model.state_key_ttl(&self.params, self.now).is_none();
            prop_assert!(
                forever || state_pttl > state_ttl - 2000,
                "state TTL {} not renewed (state_ttl {}) after {:?}",
                state_pttl,
                state_ttl,
                step
            );
            prop_assert!(
                metrics_pttl == -2 || metrics_pttl > metrics_ttl - 2000,
                "metrics TTL {} not renewed (metrics_ttl {}) after {:?}",
                metrics_pttl,
                metrics_ttl,
                step
            );
        }

        // A state in force never expires: every script that read it left state_ttl past its
        // furthest deadline on the key (real time passes too, so allow for the query's delay).
        if self.model.exists() && self.model.state() != crate::State::Closed && !self.refused {
            let p = if second { &self.second } else { &self.params };
            let pttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(conn).await.unwrap();
            match self.model.state_key_ttl(p, self.now) {
                None => prop_assert_eq!(pttl, -1, "a forced state with no end has no TTL after {:?}", step),
                Some(want) => {
                    let want = i64::try_from(want).unwrap();
                    prop_assert!(
                        pttl <= want && pttl > want - 2000,
                        "state TTL {} (want {}) after {:?}",
                        pttl,
                        want,
                        step
                    );
                }
            }
        }
        Ok(())
    }

    /// Gives a batch pair its id (`Counts::id`): a new one from one of three lanes, or none; or
    /// answers the last batch with an id, as it was sent, to be sent again.
    fn with_id(&mut self, (mut for_redis, mut for_model): (Batch, Batch), id: u8) -> (Batch, Batch) {
        match (id, self.last_batch) {
            (2, Some((for_redis, for_model))) => {
                return (Batch { again: true, ..for_redis }, Batch { again: true, ..for_model });
            }
            (0, _) => return (for_redis, for_model),
            _ => {}
        }
        let (sender, seq) = (0xa0 + self.next_seq % 3, self.next_seq);
        self.next_seq += 1;
        (for_redis.sender, for_redis.seq, for_model.sender, for_model.seq) = (sender, seq, sender, seq);
        self.last_batch = Some((for_redis, for_model));
        (for_redis, for_model)
    }

    /// The metrics hash against the model's counters; a poisoned count that no later script
    /// repaired reads as 0, as the model holds it.
    async fn check_metrics(&self, conn: &mut redis::aio::MultiplexedConnection) -> Result<(), TestCaseError> {
        let metrics: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&self.keys.all[3]).query_async(conn).await.unwrap();
        let m = &self.model.metrics;
        let get = |f: &str| metrics.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        prop_assert_eq!(
            (
                get("calls"),
                get("successes"),
                get("failures"),
                get("slow"),
                get("rejected"),
                get("timeouts"),
                get("opened")
            ),
            (m.calls, m.successes, m.failures, m.slow, m.rejected, m.timeouts, m.opened),
            "metrics"
        );
        // The lanes' batch ids the scripts remember (`batch:<sender>`).
        let mut remembered: Vec<(String, String)> =
            metrics.iter().filter(|(f, _)| f.starts_with("batch:")).map(|(f, v)| (f.clone(), v.clone())).collect();
        remembered.sort();
        let want: Vec<(String, String)> =
            self.model.batch_fields().map(|(sender, v)| (format!("batch:{sender:x}"), v.to_string())).collect();
        prop_assert_eq!(remembered, want, "batch ids");
        Ok(())
    }
}

/// A window of at least 2 s under a quorum: the reporters' and processes' keys expire a window
/// after their last write in real time while the case runs on its own clock, so a window
/// shorter than a slow case would lose them under the model's feet. (The clock's steps, up
/// to 3 s, still cross it.)
fn quorum_window(window: u64, under_quorum: bool) -> u64 {
    if under_quorum { window.max(2000) } else { window }
}

/// A connection as a Redis user that may run every command but publish on no channel (Redis
/// 7's `acl-pubsub-default resetchannels`): the `QUIET` process.
async fn quiet_conn(server: &support::TestRedis) -> redis::aio::MultiplexedConnection {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "rb-model-quiet", "reset", "on", "nopass", "~*", "resetchannels", "+@all"])
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    let (scheme, rest) = server.url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://rb-model-quiet:x@{host}");
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// What a run produced, counted (printed with `MODEL_STATS=1`): verdicts, transitions, reasons
/// (digits as #), whether states were announced, and why the TTLs were set in full.
mod stats {
    use crate::protocol::{Reply, Transition};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

    pub(super) fn count(reply: &Reply, transitions: &[Transition], ttl_before: u64, ttl_after: u64, now: u64) {
        let mut counts = COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut add = |k: String| *counts.entry(k).or_insert(0) += 1;
        add(format!("verdict {:?}", reply.verdict));
        add(format!("announced {}", reply.announced));
        for t in transitions {
            add(format!("transition {} -> {}", t.from, t.to));
            let reason: String = t.reason.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
            add(format!("reason {reason}"));
        }
        if ttl_after != ttl_before {
            let why = if ttl_before == 0 {
                "made"
            } else if now < ttl_before {
                "clock went back"
            } else {
                "by age"
            };
            add(format!("ttl set in full: {why}"));
        }
    }

    pub(super) fn add(what: &str) {
        *COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(what.to_string()).or_insert(0) += 1;
    }

    pub(super) fn print() {
        let counts = COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (k, n) in counts.iter() {
            eprintln!("model stats: {n:>7}  {k}");
        }
    }
}

/// The client id of reporter `i`.
fn reporter_id(i: usize) -> String {
    format!("reporter-{i}")
}

async fn run_case(
    stores: &[RedisStore],
    conn: &mut redis::aio::MultiplexedConnection,
    config: Config,
    second_window: u64,
    tells_ahead: bool,
    steps: Vec<(Step, f64)>,
) -> Result<(), TestCaseError> {
    let mut case = Case::new(config, second_window, tells_ahead);
    for (step, rand) in steps {
        if case.world(conn, &step).await {
            continue;
        }
        let Some(ops) = case.ops(&step) else { continue };
        let second = ops.3;
        case.call(stores, &step, ops, rand).await?;
        case.check_stored(conn, &step, second).await?;
    }
    case.check_metrics(conn).await
}

/// A busy closed breaker's keys are kept alive: once a tenth of the shorter TTL has passed since
/// they were last set in full (`ttl_at`), the next script call sets both again, in Lua and in
/// the Rust twin (issue 22, item 9: the property test's configs never crossed it).
#[test]
fn a_busy_keys_ttls_are_set_in_full_when_due() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server = rt.block_on(support::redis());
    rt.block_on(async {
        let mut conn = server.conn().await;
        let settings = StoreSettings {
            op_timeout: Duration::from_secs(5),
            channel: CHANNEL.to_string(),
            origin: "ttl-client".to_string(),
            reporter: "ttl-client".to_string(),
            sharded: false,
            threshold: 3,
            functions: false,
        };
        let store = RedisStore::new(Box::new(conn.clone()), None, settings);
        let config =
            Config::builder().state_ttl(Duration::from_secs(60)).metrics_ttl(Duration::from_secs(600)).build().unwrap();
        let p = Params::new(&config);
        let keys = Keys::new("breaker", &support::unique("ttl-due"));
        let mut model = Machine::default();
        let t0 = 1_700_000_000_000u64;
        let failure = Op::Record(Record { outcome: RecordOutcome::Failure, ..Record::flush(Batch::default()) });
        let flush = Op::Record(Record::flush(Batch::default()));
        let pttl = async |conn: &mut redis::aio::MultiplexedConnection, key: &str| -> i64 {
            redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
        };
        let ttl_at = async |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
            redis::cmd("HGET").arg(keys.state()).arg("ttl_at").query_async(conn).await.unwrap()
        };
        for (at, op) in [(t0, &failure), (t0 + 5_999, &flush), (t0 + 6_000, &flush)] {
            // Cut both TTLs short (real time) before each call, so that a renewal shows.
            for key in [&keys.all[0], &keys.all[3]] {
                let _: () = redis::cmd("PEXPIRE").arg(key).arg(5_000).query_async(&mut conn).await.unwrap();
            }
            store.run(&keys, &p, op, Some(at), 0.5).await.unwrap();
            model.run(&p, at, 0.5, 1000, "ttl-client", op);
            let (state, metrics) = (pttl(&mut conn, &keys.all[0]).await, pttl(&mut conn, &keys.all[3]).await);
            let renewed = at != t0 + 5_999;
            let want = if renewed { at } else { t0 };
            assert_eq!(ttl_at(&mut conn).await, want, "lua: ttl_at after the call at t0 + {}ms", at - t0);
            assert_eq!(model.ttl_at(), want, "rust: ttl_at after the call at t0 + {}ms", at - t0);
            if renewed {
                assert!(state > 58_000, "lua: state TTL {state} set in full at t0 + {}ms", at - t0);
                assert!(metrics > 598_000, "lua: metrics TTL {metrics} set in full at t0 + {}ms", at - t0);
            } else {
                assert!(state <= 5_000 && metrics <= 5_000, "not due yet: left as they were ({state}, {metrics})");
            }
        }
    });
}

#[test]
fn lua_scripts_and_the_rust_machine_agree_step_by_step() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server = rt.block_on(support::redis());
    let tells_ahead = rt.block_on(server.version()) >= (7, 0);
    // Each case sends the scripts either as FCALL of the library (where the server has
    // Functions) or with EVALSHA, from one store per reporter (client id).
    let (stores, conn) = rt.block_on(async {
        let conn = server.conn().await;
        let quiet = quiet_conn(&server).await;
        let store = |functions, reporter| {
            let conn = if reporter == QUIET { quiet.clone() } else { conn.clone() };
            let settings = StoreSettings {
                op_timeout: Duration::from_secs(5),
                channel: CHANNEL.to_string(),
                // Events name the client; the quorum's keys its identity (which must differ).
                origin: format!("client-of-{}", reporter_id(reporter)),
                reporter: reporter_id(reporter),
                sharded: false,
                threshold: 3,
                functions,
            };
            RedisStore::new(Box::new(conn), None, settings)
        };
        let stores: [Vec<RedisStore>; 2] =
            [false, true].map(|functions| (0..REPORTERS).map(|r| store(functions, r)).collect());
        (stores, conn)
    });
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/model_tests.txt"))),
        ..RunnerConfig::default()
    });
    let strategy = (config(), 500..3000u64, prop::collection::vec((step(), 0.0..1.0f64), 1..80), any::<bool>());
    runner
        .run(&strategy, |(config, second_window, steps, functions)| {
            let stores = &stores[usize::from(functions)];
            rt.block_on(run_case(stores, &mut conn.clone(), config, second_window, tells_ahead, steps))
        })
        .unwrap();
    if std::env::var_os("MODEL_STATS").is_some() {
        stats::print();
    }
    // Both ways were taken: the library where the server has Functions (>= 7.0), else EVALSHA.
    let stats = rt.block_on(server.commandstats());
    let fcalls = stats.get("fcall").copied().unwrap_or(0);
    assert!(stats.get("evalsha").copied().unwrap_or(0) > 0, "no case ran with EVALSHA");
    let has_functions = rt.block_on(server.version()) >= (7, 0);
    assert_eq!(fcalls > 0, has_functions, "FCALL calls: {fcalls}; the server has Functions: {has_functions}");
    assert_eq!(stores[1][0].script_mode(), if has_functions { "functions" } else { "evalsha" });
}
