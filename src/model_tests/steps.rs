//! The steps a case is made of and the configs it runs, as proptest strategies.

use super::{REPORTERS, SLOTS};
use crate::config::Config;
use crate::protocol::{ControlOp, RecordOutcome, Report};
use proptest::prelude::*;
use std::time::Duration;

/// One step of a case: a script call made on both sides, or a change of the world around them.
#[derive(Debug, Clone)]
pub(super) enum Step {
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
    ReleaseLost { slot: usize },
    /// A value the scripts increment is set by hand to something that is not an integer.
    Poison { metrics: bool },
    /// The permit in `slot` reports its outcome.
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
    /// A process flushes its batched counts.
    Flush { counts: Counts, second: bool, reporter: usize, report: Report, active: bool },
    /// The clock moves on.
    Advance { ms: u64 },
    /// The clock goes back (a failover to a server whose clock is behind).
    Rewind { ms: u64 },
    /// The TTLs of the state and metrics keys are cut to half by hand, so a renewal shows.
    ShortenTtls,
    /// Jump exactly to the next deadline (open_until or a lease expiry): the boundary cases.
    ToDeadline,
    /// An operator's command.
    Control {
        op: ControlOp,
        duration_ms: u64,
        /// Made by an operator who may not publish events (`QUIET`).
        quiet: bool,
    },
    /// The state, probes and window keys are lost (a DEL, an expiry, a flush).
    LoseKeys,
}

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
pub(super) struct Counts {
    pub(super) slot: usize,
    pub(super) successes: u64,
    pub(super) slow: u64,
    pub(super) ignored: u64,
    pub(super) rejected: u64,
    pub(super) degraded: u64,
    pub(super) throttled: u64,
    /// The batch id: 0 none, 1 a new one, 2 the last batch with an id sent again as it was
    /// (its reply lost): counted once.
    pub(super) id: u8,
}

/// Batched counts, a few of each (slow among the successes).
fn counts() -> impl Strategy<Value = Counts> {
    (0..SLOTS, 0..4u64, 0..3u64, 0..2u64, 0..2u64, 0..2u64, 0..2u64, 0..3u8).prop_map(
        |(slot, successes, slow, ignored, rejected, degraded, throttled, id)| Counts {
            slot,
            successes,
            slow: slow.min(successes),
            ignored,
            rejected,
            degraded,
            throttled,
            id,
        },
    )
}

/// A step, weighted toward the script calls.
pub(super) fn step() -> impl Strategy<Value = Step> {
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

/// A config with at least one trip rule, small enough that a case crosses every deadline.
pub(super) fn config() -> impl Strategy<Value = Config> {
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
        // A recovery ramp in about half the cases (its length crossed by the clock's steps).
        prop::option::weighted(0.5, (1..5000u64, 1..=1000u64)),
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
                ramp,
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
                if let Some((ms, permille)) = ramp {
                    b = b.recovery_ramp(Duration::from_millis(ms)).ramp_start(permille as f64 / 1000.0);
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

/// A window of at least 2 s under a quorum: the reporters' and processes' keys expire a window
/// after their last write in real time while the case runs on its own clock, so a window
/// shorter than a slow case would lose them under the model's feet. (The clock's steps, up
/// to 3 s, still cross it.)
pub(super) fn quorum_window(window: u64, under_quorum: bool) -> u64 {
    if under_quorum { window.max(2000) } else { window }
}
