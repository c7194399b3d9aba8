//! What a script answers, whichever side ran it: the [`Reply`] (its fields in the order of
//! `REPLY`) and the [`Transition`]s a call caused.

use crate::state::State;

/// A script's answer about the call it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// acquire: the call may go (closed or forced closed).
    Allowed,
    /// acquire: the call may go as a half-open probe; a lease was taken for its permit.
    Probe,
    /// acquire: the call may not go.
    Rejected,
    /// record: the outcome was applied.
    Applied,
    /// record: the outcome moved no state (another incarnation or epoch, or its lease is gone).
    Stale,
    /// control: done.
    Ok,
}

impl Verdict {
    /// The verdict a script's reply names.
    pub(crate) fn parse(s: &str) -> Option<Verdict> {
        Some(match s {
            "allowed" => Verdict::Allowed,
            "probe" => Verdict::Probe,
            "rejected" => Verdict::Rejected,
            "applied" => Verdict::Applied,
            "stale" => Verdict::Stale,
            "ok" => Verdict::Ok,
            _ => return None,
        })
    }
}

/// A script's reply, whichever side ran it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// The script's answer.
    pub(crate) verdict: Verdict,
    /// The state after the call.
    pub(crate) state: State,
    /// When the state hash was made (Redis TIME in µs): it changes whenever the state was lost.
    pub(crate) incarnation: u64,
    /// +1 on every transition.
    pub(crate) epoch: u64,
    /// Failures counted toward the consecutive rule this closed epoch.
    pub(crate) failures: u64,
    /// +1 on every recorded failure.
    pub(crate) fseq: u64,
    /// Time to the state's next deadline, or `None` when it has none.
    pub(crate) remaining_ms: Option<u64>,
    /// The config fingerprint the state hash held before the call (the last writer's).
    pub(crate) stored_config: String,
    /// Why the state is what it is.
    pub(crate) reason: String,
    /// False while the state's last transition was not announced on the events channel (its
    /// PUBLISH refused, or no channel): this call's own, or an earlier one's that the state hash
    /// remembers. Processes trust such a state for the short bound (`cache_ttl`) only.
    pub(crate) announced: bool,
    /// The recovery ramp of a closed breaker, while it runs.
    pub(crate) ramp: Option<Ramp>,
}

/// A recovery ramp as a reply or an event tells it: the fraction of calls admitted rises
/// linearly from `permille` to all over `len_ms`, of which `left_ms` are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ramp {
    /// Time left (ms), counted from when Redis answered; more than 0.
    pub(crate) left_ms: u64,
    /// The ramp's length (ms).
    pub(crate) len_ms: u64,
    /// The fraction admitted when it began, per mille.
    pub(crate) permille: u64,
}

/// A transition a call caused (published as an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The state before.
    pub(crate) from: State,
    /// The state after.
    pub(crate) to: State,
    /// The epoch it began.
    pub(crate) epoch: u64,
    /// Why.
    pub(crate) reason: String,
}

/// The fields of every script's reply, in their order (`REPLY` in `lua/lib/protocol.lua`, by
/// which `reply` in `lua/lib/commit.lua` places them; `parse_reply` in `store/scripts.rs` reads
/// them into [`Reply`], which a test checks entry by entry).
#[cfg(test)]
pub(crate) const REPLY: [(&str, &str); 13] = [
    ("verdict", "'allowed', 'probe' or 'rejected' (acquire); 'applied' or 'stale' (record); 'ok' (control)."),
    ("state", "The state after the call."),
    ("incarnation", "When the state hash was made (Redis TIME in µs)."),
    ("epoch", "+1 on every transition."),
    ("failures", "Failures counted toward the consecutive rule this closed epoch."),
    ("fseq", "+1 on every recorded failure."),
    (
        "remaining_ms",
        "The time left to the state's next deadline (open_until, the earliest probe lease when all\n\
         are out, a forced state's end), or -1 when it has none.",
    ),
    ("stored_config", "The config fingerprint the state hash held before the call."),
    ("reason", "Why the state is what it is."),
    (
        "announced",
        "0 while the state's last transition was not announced on the events channel (this call's\n\
         own refused, or an earlier one's: the state hash's `announced` field), else 1: processes\n\
         trust a state answered with 0 for the short bound only.",
    ),
    ("ramp_left_ms", "The time left of a closed breaker's recovery ramp, or 0 when none runs."),
    ("ramp_ms", "That ramp's length (0 when none runs)."),
    ("ramp_permille", "Where that ramp started, per mille of the calls admitted (0 when none runs)."),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_reply` reads each field where `REPLY` puts it.
    #[test]
    fn the_reply_is_read_in_the_order_of_its_table() {
        let value = |name: &str| match name {
            "verdict" => "stale",
            "state" => "half_open",
            "incarnation" => "11",
            "epoch" => "12",
            "failures" => "13",
            "fseq" => "14",
            "remaining_ms" => "15",
            "stored_config" => "fp",
            "reason" => "why",
            "announced" => "0",
            "ramp_left_ms" => "16",
            "ramp_ms" => "17",
            "ramp_permille" => "18",
            other => panic!("REPLY names {other}, which Reply does not have"),
        };
        let fields = REPLY.iter().map(|(name, _)| value(name).to_string()).collect();
        let reply = crate::store::scripts::parse_reply(fields, "key").expect("a reply");
        assert_eq!(
            reply,
            Reply {
                verdict: Verdict::Stale,
                state: State::HalfOpen,
                incarnation: 11,
                epoch: 12,
                failures: 13,
                fseq: 14,
                remaining_ms: Some(15),
                stored_config: "fp".into(),
                reason: "why".into(),
                announced: false,
                ramp: Some(Ramp { left_ms: 16, len_ms: 17, permille: 18 }),
            }
        );
    }
}
