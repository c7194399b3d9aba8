//! The Lua scripts of `lua/`, and how they reach Redis: as a Functions library called with
//! FCALL (Redis and Valkey >= 7.0, when the user's ACL allows it), else each script with
//! EVALSHA; their arguments and replies.

use crate::error::StoreError;
use crate::name::Keys;
use crate::protocol::{CallArgs, Op, Params, Ramp, Reply, Verdict, config_id};
use crate::state::State;
use redis::{Cmd, Script};
use std::sync::OnceLock;

/// The files of `lua/lib/`, joined in this order in front of every script that changes state:
/// Redis scripts cannot include one another. Each piece is named after its Rust twin (see the
/// header of each file); `protocol.lua` is generated from the tables of `src/protocol/`.
macro_rules! lib {
    () => {
        concat!(
            include_str!("../../lua/lib/clock.lua"),
            include_str!("../../lua/lib/protocol.lua"),
            include_str!("../../lua/lib/args.lua"),
            include_str!("../../lua/lib/load.lua"),
            include_str!("../../lua/lib/transitions.lua"),
            include_str!("../../lua/lib/rules.lua"),
            include_str!("../../lua/lib/batch.lua"),
            include_str!("../../lua/lib/commit.lua"),
            include_str!("../../lua/lib/count.lua"),
        )
    };
}

/// One script for EVALSHA: a header, the lib, then the script's own file. The header makes
/// `KEYS` and `ARGV` locals (the lib reads them as upvalues, which the library's functions set
/// per call) and says that nothing outlives the call.
macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            "local KEYS, ARGV = KEYS, ARGV\nlocal PERSISTENT = false\n",
            lib!(),
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

/// The scripts that change state, by the name their function has in the library.
const BODIES: [(&str, &str); 4] = [
    ("acquire", include_str!("../../lua/acquire.lua")),
    ("record", include_str!("../../lua/record.lua")),
    ("control", include_str!("../../lua/control.lua")),
    // A failure that only counts, sent alone: a library's function only (see `Call::count`).
    ("count", include_str!("../../lua/count.lua")),
];

/// The same scripts as one Functions library, named after a hash of its code so processes
/// running different versions of the crate each find their own: `redis_breaker_<hash>` with
/// the functions `rb_<hash>_acquire`, `_record`, `_control` and `_count`. Redis runs a library's code
/// when it loads it, with none of Lua's globals in reach, so the code only defines `init`; the
/// first call of any function runs it, which makes the lib's helpers and tables once for the
/// life of the library (not on every call, as with EVALSHA) and lets a config's validation be
/// kept (`PERSISTENT`).
#[derive(Debug)]
pub(crate) struct Library {
    /// The code sent with FUNCTION LOAD.
    pub(crate) code: String,
    /// `redis_breaker_<hash>`.
    pub(crate) name: String,
    /// `rb_<hash>_`: each function is this and the script's name.
    prefix: String,
}

impl Library {
    /// Built once per process.
    pub(crate) fn get() -> &'static Library {
        static LIBRARY: OnceLock<Library> = OnceLock::new();
        LIBRARY.get_or_init(|| {
            let mut body = String::from(
                "local KEYS, ARGV\nlocal PERSISTENT = true\nlocal scripts = nil\n\nlocal function init()\n",
            );
            body.push_str(lib!());
            for (name, code) in BODIES {
                body.push_str(&format!("\nlocal function {name}_main()\n{code}\nend\n"));
            }
            body.push_str("return {");
            for (name, _) in BODIES {
                body.push_str(&format!(" {name} = {name}_main,"));
            }
            body.push_str(" }\nend\n\n");
            // The hash of the code names the library (SHA-1, as Redis names scripts).
            let hash = Script::new(&body).get_hash()[..16].to_string();
            let prefix = format!("rb_{hash}_");
            let mut code = format!("#!lua name=redis_breaker_{hash}\n{body}");
            for (name, _) in BODIES {
                code.push_str(&format!(
                    "redis.register_function('{prefix}{name}', function(keys, args)\n  \
                     if scripts == nil then scripts = init() end\n  \
                     KEYS, ARGV = keys, args\n  \
                     return scripts.{name}()\nend)\n"
                ));
            }
            Library { code, name: format!("redis_breaker_{hash}"), prefix }
        })
    }
}

/// The loaded scripts; each is hashed once and sent with EVALSHA (reloaded once on NOSCRIPT),
/// or called as a function of [`Library`].
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
    /// This client's identity for a quorum, sent with every record (`RECORD.reporter`): the
    /// member its reports and its word that it is active write.
    reporter: String,
    /// Publish each breaker's events on its own channel with SPUBLISH (Redis Cluster).
    sharded: bool,
}

/// One call of a script that changes state: which script, its keys and arguments.
pub(crate) struct Call<'s> {
    script: &'s Script,
    name: &'static str,
    keys: &'s [String; 7],
    /// The common arguments (the config by its fingerprint and id) and the script's own.
    args: Vec<Vec<u8>>,
    /// The rest of the config, which goes last: always with EVALSHA; with FCALL only when the
    /// library does not know the config id yet.
    config: Vec<Vec<u8>>,
    /// A failure that only counts (`Record::only_counts`): the arguments of `lua/count.lua`.
    count: Option<Vec<Vec<u8>>>,
}

/// What a script answers, before anything is written, to a call that left out the rest of a
/// config it does not know (a library loaded anew: a restart, a failover, FUNCTION FLUSH).
const UNKNOWN_CONFIG: &str = "redis-breaker: unknown config";

/// Whether `e` is the scripts' refusal of a config id they do not know ([`UNKNOWN_CONFIG`]).
pub(crate) fn unknown_config(e: &redis::RedisError) -> bool {
    e.to_string().contains(UNKNOWN_CONFIG)
}

/// Whether `e` says the server has no such function: the library is not loaded (a new server,
/// `FUNCTION FLUSH`).
pub(crate) fn function_missing(e: &redis::RedisError) -> bool {
    e.to_string().to_ascii_lowercase().contains("function not found")
}

impl Call<'_> {
    /// A failure that only counts, as FCALL of the library's `count` with the state and metrics
    /// keys: it answers the record's reply, or `['general']` when the failure must go as a
    /// record after all (nothing was written then).
    pub(crate) fn count(&self, library: &Library) -> Option<Cmd> {
        let args = self.count.as_ref()?;
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(format!("{}count", library.prefix)).arg(2).arg(&self.keys[0]).arg(&self.keys[3]);
        for a in args {
            cmd.arg(a.as_slice());
        }
        Some(cmd)
    }

    /// The call as EVALSHA, which loads the script and retries once on NOSCRIPT; it carries the
    /// whole config (a script sent with EVALSHA keeps nothing between calls).
    pub(crate) fn evalsha(&self) -> redis::ScriptInvocation<'_> {
        let mut inv = self.script.prepare_invoke();
        for key in self.keys {
            inv.key(key);
        }
        for a in self.args.iter().chain(&self.config) {
            inv.arg(a.as_slice());
        }
        inv
    }

    /// The call as FCALL of its function in `library`: the config by its id alone, or with
    /// `full`, the rest of it too (which the library then keeps under the id).
    pub(crate) fn fcall(&self, library: &Library, full: bool) -> Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(format!("{}{}", library.prefix, self.name)).arg(self.keys.len()).arg(self.keys.as_slice());
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
        if full {
            for a in &self.config {
                cmd.arg(a.as_slice());
            }
        }
        cmd
    }
}

impl Scripts {
    pub(crate) fn new(channel: String, origin: String, reporter: String, sharded: bool) -> Scripts {
        Scripts {
            acquire: script!("acquire.lua"),
            record: script!("record.lua"),
            control: script!("control.lua"),
            status: Script::new(concat!(include_str!("../../lua/lib/clock.lua"), include_str!("../../lua/status.lua"))),
            preflight: Script::new(include_str!("../../lua/preflight.lua")),
            channel,
            origin,
            reporter,
            sharded,
        }
    }

    /// Reads one breaker's keys (`lua/status.lua`, read-only, no prelude).
    pub(crate) fn status(&self, keys: &Keys) -> redis::ScriptInvocation<'_> {
        let mut inv = self.status.prepare_invoke();
        for key in &keys.all {
            inv.key(key);
        }
        inv
    }

    /// Asks whether this user may run what the scripts run on `keys` (`lua/preflight.lua`),
    /// and whether it may call and load the library.
    pub(crate) fn preflight(&self, keys: &Keys) -> redis::ScriptInvocation<'_> {
        let mut inv = self.preflight.prepare_invoke();
        for key in &keys.all {
            inv.key(key);
        }
        if self.sharded {
            inv.arg(&keys.shard_channel).arg("spublish");
        } else {
            inv.arg(&self.channel).arg("publish");
        }
        inv.arg(format!("{}record", Library::get().prefix));
        inv
    }

    /// One call: the breaker's keys, the common arguments, then the operation's own.
    pub(crate) fn call<'s>(&'s self, keys: &'s Keys, p: &Params, now_ms: Option<u64>, rand: f64, op: &Op) -> Call<'s> {
        let (script, name) = match op {
            Op::Acquire { .. } => (&self.acquire, "acquire"),
            Op::Record(_) => (&self.record, "record"),
            Op::Control { .. } => (&self.control, "control"),
        };
        let mut call =
            Call { script, name, keys: &keys.all, args: Vec::with_capacity(24), config: Vec::new(), count: None };
        let shard_channel = if self.sharded { keys.shard_channel.as_str() } else { "" };
        let common = CallArgs {
            now: now_ms,
            rand,
            channel: &self.channel,
            name: &keys.name,
            origin: &self.origin,
            shard_channel,
        };
        common.write(&mut call.args);
        // The config: its fingerprint and id with the common arguments, the rest last.
        p.write(&mut call.config);
        let id = config_id(&call.config);
        if let Op::Record(r) = op
            && r.only_counts(p)
        {
            let mut count = Vec::with_capacity(5);
            r.write_count(now_ms, &id, &mut count);
            call.count = Some(count);
        }
        let rest = call.config.split_off(1);
        call.args.append(&mut call.config);
        call.args.push(id.into_bytes());
        op.write(&self.reporter, &mut call.args);
        call.config = rest;
        call
    }
}

/// Reads a script's reply (see the header of `lua/lib/args.lua`).
pub(crate) fn parse_reply(fields: Vec<String>, key: &str) -> Result<Reply, StoreError> {
    let bad = |detail: String| StoreError::Protocol { key: key.to_string(), detail };
    let [
        verdict,
        state,
        incarnation,
        epoch,
        failures,
        fseq,
        remaining,
        stored_config,
        reason,
        announced,
        ramp_left,
        ramp_ms,
        ramp_permille,
    ]: [String; 13] =
        fields.try_into().map_err(|f: Vec<String>| bad(format!("expected 13 fields, got {}", f.len())))?;
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
        announced: match announced.as_str() {
            "1" => true,
            "0" => false,
            _ => return Err(bad(format!("announced is {announced:?}"))),
        },
        ramp: match num("ramp_left_ms", &ramp_left)? {
            0 => None,
            left_ms => Some(Ramp {
                left_ms,
                len_ms: num("ramp_ms", &ramp_ms)?,
                permille: num("ramp_permille", &ramp_permille)?,
            }),
        },
    })
}
