//! The calling convention of the Lua scripts, written once for both languages.
//!
//! Every script that changes state takes, in this order: the arguments that differ per call
//! ([`CallArgs`]), the caller's config ([`Params`]), then its own ([`Op`]: a permit, a
//! [`Record`], an operator's command, and the [`Batch`] of counts that rides along); it answers
//! a [`Reply`]. The tables here describe that convention once: `store/scripts.rs` encodes each
//! call with them, the Rust machine (`machine/`) takes the same values, and
//! `lua/lib/protocol.lua` is generated from them (`lua.rs`): the names the scripts read their
//! arguments by (`ARGV[ARG.failure_threshold]`, `RECORD.outcome`), how they check the common
//! ones, the order of the reply, the reasons (`reason.rs`) and the limits. The generated file is
//! committed, so the Lua a server runs can be read in `lua/`; a test fails while it is stale,
//! and rewrites it.
//!
//! # A new config field
//!
//! 1. Its public side in `config/` (the field, its default and setter, its validation, and the
//!    fingerprint when it decides transitions).
//! 2. One row in [`Params`] (`params.rs`): how it is read from the config and how the scripts
//!    check it. `cargo test -p redis-breaker --lib protocol` rewrites `lua/lib/protocol.lua`;
//!    every script then finds the value, validated, as `c.<name>` (`parse_config` in
//!    `lua/lib/args.lua`).
//! 3. Its rule, in Lua (`lua/lib/`) and in the Rust twin (`machine/`): the property test runs
//!    both side by side.

mod args;
#[cfg(test)]
mod lua;
mod op;
mod params;
pub(crate) mod reason;
mod reply;

pub(crate) use args::{CallArgs, config_id};
pub use op::Outcome;
pub(crate) use op::{Batch, ControlOp, Op, Record, RecordOutcome, Report};
pub(crate) use params::Params;
pub(crate) use reply::{Ramp, Reply, Transition, Verdict};

/// The largest integer a script handles exactly (2^53 - 1): Lua's numbers are doubles.
pub(crate) const MAX_INT: u64 = (1 << 53) - 1;

/// What a caller rejected while every half-open probe is out is told to wait at most (ms): a
/// probe usually ends long before its lease, and its outcome's event refreshes every snapshot.
pub(crate) const HALF_OPEN_RETRY_MS: u64 = 1000;

/// The member of the processes key whose score is minus the time the key began collecting (ms;
/// the machine keeps it as `processes_since`). Reporter ids hold no whitespace, so it names no
/// process; its negative score keeps it out of every count and sweep.
#[cfg(test)]
pub(crate) const PROCESSES_SINCE: &str = " since";

/// The member of the reporters and processes keys whose score is minus the longest window of
/// the processes that wrote them (ms; the machine keeps it as `reporters_window`,
/// `processes_window`): no writer sweeps an entry that still counts for another with a longer
/// window.
#[cfg(test)]
pub(crate) const LONGEST_WINDOW: &str = " window";
