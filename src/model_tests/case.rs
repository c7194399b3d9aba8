//! One case: the breaker's keys, both sides' state, the fake clock and the permits held; how a
//! step changes the world or becomes a script call run on both sides, and the replies compared.

use super::steps::{Counts, Step, quorum_window};
use super::{QUIET, SLOTS, reporter_id, stats, support};
use crate::config::Config;
use crate::machine::Machine;
use crate::name::Keys;
use crate::protocol::{Batch, Op, Params, Record, RecordOutcome, Reply, Verdict};
use crate::store::RedisStore;
use proptest::prelude::*;
use std::time::Duration;

/// The statistic of a failure sent as `lua/count.lua` first (with the library).
pub(super) const COUNT_FIRST: &str = "a failure that only counts, sent as count.lua first";

/// What a permit remembers: the snapshot it was granted under, on each side.
#[derive(Debug, Clone, Default)]
pub(super) struct Held {
    pub(super) redis_incarnation: u64,
    pub(super) model_incarnation: u64,
    pub(super) epoch: u64,
    pub(super) fseq: u64,
    pub(super) probe: String,
    pub(super) permit: String,
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
        throttled: counts.throttled,
        ..Batch::default()
    };
    (batch(h.redis_incarnation), batch(h.model_incarnation))
}

/// The replies of both sides, but the incarnations (each side numbers them its own way: only
/// whether there is one is compared).
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
            r.ramp,
        )
    };
    prop_assert_eq!(strip(redis), strip(model), "reply differs after {:?}", step);
    prop_assert_eq!(redis.incarnation == 0, model.incarnation == 0, "incarnation presence after {:?}", step);
    Ok(())
}

/// One case: the breaker's keys, both configs, the model, the fake clock and the permits held.
pub(super) struct Case {
    pub(super) keys: Keys,
    pub(super) params: Params,
    /// A second process whose window length differs (a rolling deploy): both count in one window.
    pub(super) second: Params,
    pub(super) model: Machine,
    pub(super) now: u64,
    pub(super) held: Vec<Option<Held>>,
    /// The metrics key was made by hand (a poison step) and no script has set its TTL yet.
    pub(super) hand_made_metrics: bool,
    pub(super) next_permit: u64,
    pub(super) next_incarnation: u64,
    /// Redis and the model each name incarnations their own way; pair them as they appear.
    pub(super) last_incarnations: (u64, u64),
    /// The last script call set the TTLs in full (the model's `ttl_at` moved).
    pub(super) renewed: bool,
    /// The last batch sent with an id, as each side names it, and the number of the next.
    pub(super) last_batch: Option<(Batch, Batch)>,
    pub(super) next_seq: u64,
    /// The server tells before anything is written that a PUBLISH would be refused (>= 7.0,
    /// `redis.acl_check_cmd`): an operator's transition that could not be announced is refused.
    pub(super) tells_ahead: bool,
    /// The last script call was refused before it wrote anything: the keys' TTLs are as the
    /// call before left them, not measured from this step's clock.
    pub(super) refused: bool,
}

/// The op as each side names it, the slot a grant goes to, whether the second process's config
/// runs it, and which reporter (client id) sends it.
pub(super) type Ops = (Op, Op, Option<usize>, bool, usize);

impl Case {
    /// A case of `config`; the second process's window is `second_window` ms.
    pub(super) fn new(config: Config, second_window: u64, tells_ahead: bool) -> Case {
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
                // Another ramp: the one of the process whose probe closes the breaker is the fleet's.
                recovery_ramp: config.recovery_ramp / 2,
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
    pub(super) async fn world(&mut self, conn: &mut redis::aio::MultiplexedConnection, step: &Step) -> bool {
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
    pub(super) fn ops(&mut self, step: &Step) -> Option<Ops> {
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
                    failures_seen: 0,
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
    pub(super) async fn call(
        &mut self,
        stores: &[RedisStore],
        step: &Step,
        ops: Ops,
        rand: f64,
    ) -> Result<(), TestCaseError> {
        let (op_redis, op_model, slot, second, reporter) = ops;
        let p = if second { &self.second } else { &self.params };
        let redis = &stores[reporter];
        if let Op::Record(r) = &op_redis
            && r.only_counts(p)
            && redis.script_mode() == "functions"
        {
            stats::add(COUNT_FIRST);
        }
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
}
