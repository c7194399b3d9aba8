//! The Lua scripts of `lua/`, loaded once and run with EVALSHA; their arguments and replies.

use crate::error::StoreError;
use crate::name::Keys;
use crate::protocol::{Batch, Op, Params, Reply, Verdict};
use crate::state::State;
use redis::{Script, ScriptInvocation};

/// The files of `lua/lib/` are the prelude of every script that changes state, joined in this
/// order at compile time: Redis scripts cannot include one another. Each piece is named after
/// its Rust twin (see the header of each file).
macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/lib/clock.lua"),
            include_str!("../lua/lib/args.lua"),
            include_str!("../lua/lib/load.lua"),
            include_str!("../lua/lib/transitions.lua"),
            include_str!("../lua/lib/rules.lua"),
            include_str!("../lua/lib/batch.lua"),
            include_str!("../lua/lib/commit.lua"),
            include_str!(concat!("../lua/", $file))
        ))
    };
}

/// The loaded scripts; each is hashed once and sent with EVALSHA (reloaded once on NOSCRIPT).
#[derive(Debug)]
pub(crate) struct Scripts {
    acquire: Script,
    record: Script,
    control: Script,
    status: Script,
    preflight: Script,
    /// The events channel the scripts publish on (`''`: none).
    channel: String,
    /// This client's id, sent with every call: the events it causes name it.
    origin: String,
    /// Publish each breaker's events on its own channel with SPUBLISH (Redis Cluster).
    sharded: bool,
}

impl Scripts {
    pub(crate) fn new(channel: String, origin: String, sharded: bool) -> Scripts {
        Scripts {
            acquire: script!("acquire.lua"),
            record: script!("record.lua"),
            control: script!("control.lua"),
            status: Script::new(concat!(include_str!("../lua/lib/clock.lua"), include_str!("../lua/status.lua"))),
            preflight: Script::new(include_str!("../lua/preflight.lua")),
            channel,
            origin,
            sharded,
        }
    }

    /// Reads one breaker's keys (`lua/status.lua`, read-only, no prelude).
    pub(crate) fn status(&self, keys: &Keys) -> ScriptInvocation<'_> {
        let mut inv = self.status.prepare_invoke();
        for key in &keys.all {
            inv.key(key);
        }
        inv
    }

    /// Asks whether this user may run what the scripts run on `keys` (`lua/preflight.lua`).
    pub(crate) fn preflight(&self, keys: &Keys) -> ScriptInvocation<'_> {
        let mut inv = self.preflight.prepare_invoke();
        for key in &keys.all {
            inv.key(key);
        }
        if self.sharded {
            inv.arg(&keys.shard_channel).arg("spublish");
        } else {
            inv.arg(&self.channel).arg("publish");
        }
        inv
    }

    /// One invocation: the breaker's keys, the common arguments, then the operation's own.
    pub(crate) fn invocation<'s>(
        &'s self,
        keys: &Keys,
        p: &Params,
        now_ms: Option<u64>,
        rand: f64,
        op: &Op,
    ) -> ScriptInvocation<'s> {
        let script = match op {
            Op::Acquire { .. } => &self.acquire,
            Op::Record(_) => &self.record,
            Op::Control { .. } => &self.control,
        };
        let mut inv = script.prepare_invoke();
        for key in &keys.all {
            inv.key(key);
        }
        match now_ms {
            Some(now) => inv.arg(now),
            None => inv.arg(""),
        };
        inv.arg(rand.to_string())
            .arg(&p.fingerprint)
            .arg(p.failure_threshold)
            .arg(p.success_threshold)
            .arg(p.max_probes)
            .arg(p.base)
            .arg(p.max)
            .arg(p.multiplier.to_string())
            .arg(p.jitter.to_string())
            .arg(p.lease)
            .arg(p.state_ttl)
            .arg(p.metrics_ttl)
            .arg(p.failure_rate.to_string())
            .arg(p.slow_rate.to_string())
            .arg(p.minimum_calls)
            .arg(p.window)
            .arg(&self.channel)
            .arg(&keys.name)
            .arg(p.failure_expiry)
            .arg(&self.origin)
            .arg(if self.sharded { keys.shard_channel.as_str() } else { "" });
        match op {
            Op::Acquire { permit, batch } => {
                inv.arg(permit);
                batch_args(&mut inv, batch);
            }
            Op::Record(r) => {
                inv.arg(r.outcome.as_str())
                    .arg(r.incarnation)
                    .arg(r.epoch)
                    .arg(&r.probe)
                    .arg(u8::from(r.slow))
                    .arg(u8::from(r.timed_out))
                    .arg(r.fseq);
                batch_args(&mut inv, &r.batch);
            }
            Op::Control { op, duration_ms } => {
                inv.arg(op.as_str()).arg(*duration_ms);
            }
        }
        inv
    }
}

fn batch_args(inv: &mut ScriptInvocation<'_>, b: &Batch) {
    inv.arg(b.incarnation)
        .arg(b.epoch)
        .arg(b.fseq)
        .arg(b.successes)
        .arg(b.slow)
        .arg(b.ignored)
        .arg(b.rejected)
        .arg(b.degraded_successes)
        .arg(b.degraded_failures);
}

/// Reads a script's reply (see the header of `lua/lib/args.lua`).
pub(crate) fn parse_reply(fields: Vec<String>, key: &str) -> Result<Reply, StoreError> {
    let bad = |detail: String| StoreError::Protocol { key: key.to_string(), detail };
    let [verdict, state, incarnation, epoch, failures, fseq, remaining, stored_config, reason]: [String; 9] =
        fields.try_into().map_err(|f: Vec<String>| bad(format!("expected 9 fields, got {}", f.len())))?;
    let num = |what: &str, v: &str| v.parse::<u64>().map_err(|_| bad(format!("{what} is {v:?}")));
    let remaining: i64 = remaining.parse().map_err(|_| bad(format!("remaining_ms is {remaining:?}")))?;
    Ok(Reply {
        verdict: Verdict::parse(&verdict).ok_or_else(|| bad(format!("verdict is {verdict:?}")))?,
        state: State::parse(&state).ok_or_else(|| bad(format!("state is {state:?}")))?,
        incarnation: num("incarnation", &incarnation)?,
        epoch: num("epoch", &epoch)?,
        failures: num("failures", &failures)?,
        fseq: num("fseq", &fseq)?,
        remaining_ms: u64::try_from(remaining).ok(),
        stored_config,
        reason,
    })
}
