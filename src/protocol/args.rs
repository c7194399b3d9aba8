//! The common arguments of every script, as blocks declared once with [`arguments!`]: each block
//! is a struct whose fields are the arguments in their order, its encoding (`write`), and in tests
//! its rows (`SPEC`: the name, how the scripts check the value, and its doc), from which
//! `lua/lib/protocol.lua` is generated. Also the encoding of a value ([`Wire`]) and, for tests,
//! the tables of each script's own arguments.

use redis::ToRedisArgs;

/// How a value goes on the wire: integers and text as they are, floats as Rust prints them
/// (`0.1`, `2`), a clock that is not set as the empty string.
pub(crate) trait Wire {
    /// Appends the value as one argument.
    fn write(&self, out: &mut Vec<Vec<u8>>);
}

impl Wire for u64 {
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        self.write_redis_args(out);
    }
}

impl Wire for f64 {
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        out.push(self.to_string().into_bytes());
    }
}

impl Wire for str {
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        out.push(self.as_bytes().to_vec());
    }
}

impl Wire for String {
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        self.as_str().write(out);
    }
}

impl Wire for &str {
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        (*self).write(out);
    }
}

impl Wire for bool {
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        u64::from(*self).write(out);
    }
}

impl Wire for Option<u64> {
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        match self {
            Some(v) => v.write(out),
            None => "".write(out),
        }
    }
}

/// How a script checks a common argument before anything is written (`read_call` and
/// `read_config` in the generated `lua/lib/protocol.lua`); a value it refuses answers `ERR redis-breaker: bad argument <name>`.
/// These are the scripts' own defences against any caller: [`Config`](crate::Config) validates
/// what users set, more strictly.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    /// `''` (Redis's clock) or an integer in `[0, MAX_INT]`.
    Clock,
    /// An integer in `[min, max]`, `max` named among the limits.
    Int { min: u64, max: &'static str },
    /// An integer at least the value of the config field `min`, at most the limit `max`.
    IntFrom { min: &'static str, max: &'static str },
    /// A number in `[min, max]`.
    Float { min: f64, max: f64 },
    /// Text of `min` to `max` bytes.
    Text { min: usize, max: usize },
}

/// One common argument as `lua/lib/protocol.lua` lists it.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// Its name: the struct's field, the key of `ARG`, the field of the scripts' config table.
    pub(crate) field: &'static str,
    /// Its name in the error that refuses it (the name the user knows it by).
    pub(crate) error: &'static str,
    /// How the scripts check it.
    pub(crate) check: Check,
    /// Its doc comment, one line per line.
    pub(crate) doc: &'static str,
}

/// Declares a block of common arguments: `struct Name { field: Type, check, "error name"; ... }`
/// gives the struct (a field per argument, in order, each with its doc), `write` (the
/// arguments in that order) and, in tests, `SPEC` (the rows `lua/lib/protocol.lua` is generated
/// from). With `from Config` each row also says how it is read from the config
/// (`field: Type = |c| expr, ...`), which gives `new`.
macro_rules! arguments {
    (
        $(#[$attr:meta])*
        struct $name:ident from $config:ty {
            $( $(#[doc = $doc:literal])* $field:ident: $ty:ty = |$c:ident| $from:expr, $check:expr, $error:literal; )*
        }
    ) => {
        arguments! {
            $(#[$attr])*
            struct $name { $( $(#[doc = $doc])* $field: $ty, $check, $error; )* }
        }

        impl $name {
            /// Reads every argument of the block from `config`.
            pub(crate) fn new(config: &$config) -> $name {
                $name { $( $field: { let $c = config; $from }, )* }
            }
        }
    };
    (
        $(#[$attr:meta])*
        struct $name:ident $(<$lt:lifetime>)? {
            $( $(#[doc = $doc:literal])* $field:ident: $ty:ty, $check:expr, $error:literal; )*
        }
    ) => {
        $(#[$attr])*
        pub(crate) struct $name $(<$lt>)? {
            $( $(#[doc = $doc])* pub(crate) $field: $ty, )*
        }

        impl $(<$lt>)? $name $(<$lt>)? {
            /// Appends the block's arguments in their order.
            pub(crate) fn write(&self, out: &mut Vec<Vec<u8>>) {
                $( $crate::protocol::args::Wire::write(&self.$field, out); )*
            }

            /// The block's rows, in order, for `lua/lib/protocol.lua`.
            #[cfg(test)]
            pub(crate) const SPEC: &'static [$crate::protocol::args::Spec] = &[$(
                $crate::protocol::args::Spec {
                    field: stringify!($field),
                    error: $error,
                    check: $check,
                    doc: concat!($($doc, "\n",)*),
                },
            )*];
        }
    };
}
pub(crate) use arguments;

arguments! {
    /// The common arguments that differ from call to call (ARGV 1 ..): the clock, the draw, and
    /// who is calling about which breaker.
    #[derive(Debug, Clone, Copy)]
    struct CallArgs<'a> {
        /// The caller's clock (ms): '' = Redis TIME; only tests send one.
        now: Option<u64>, Check::Clock, "now_ms";
        /// A uniform draw in [0, 1) for the jitter of the recovery timeout, from the caller:
        /// Redis seeds its own math.random alike on every start.
        rand: f64, Check::Float { min: 0.0, max: 1.0 }, "rand";
        /// The events channel ('' = none).
        channel: &'a str, Check::Text { min: 0, max: 512 }, "events channel";
        /// The breaker's name, for its events.
        name: &'a str, Check::Text { min: 1, max: 200 }, "name";
        /// The caller's client id, for its events, so that each process can tell the
        /// transitions it caused ('' = none).
        origin: &'a str, Check::Text { min: 0, max: 64 }, "origin";
        /// '' = events go to `channel` with PUBLISH; else the breaker's own channel
        /// `<prefix>:{<name>}:events`, in its slot, with SPUBLISH (Redis Cluster: a transition
        /// travels within its shard), falling back to PUBLISH on `channel` where SPUBLISH is
        /// unknown (< 7.0).
        shard_channel: &'a str, Check::Text { min: 0, max: 512 }, "shard channel";
    }
}

/// The common argument after the fingerprint: the config id, which names the caller's config
/// (its fingerprint and the rest, [`config_id`]). The library keeps each config it validated under
/// its id, so a call may leave the rest of the config out; one the library does not know is
/// refused before anything is written, and sent again in full.
#[cfg(test)]
pub(crate) const CONFIG_ID: Spec = Spec {
    field: "config_id",
    error: "config id",
    check: Check::Text { min: 1, max: 40 },
    doc: "The config id: the SHA-1 (hex) of the fingerprint and the rest of the config, each\n\
          followed by a NUL byte. Where the scripts run as a library, the config it names, once\n\
          validated in full, is kept under it, and a call may leave the rest out; a library that\n\
          does not know it refuses such a call before anything is written (see parse_config).",
};

/// The config id of a config written as `args` (the fingerprint, then the rest, as `Params::write`
/// writes them): the SHA-1 (hex) of each followed by a NUL byte, as `parse_config` in
/// `lua/lib/args.lua` computes it (`redis.sha1hex`) before it keeps a config under the id.
pub(crate) fn config_id(args: &[Vec<u8>]) -> String {
    let mut text = Vec::with_capacity(args.iter().map(|a| a.len() + 1).sum());
    for a in args {
        text.extend_from_slice(a);
        text.push(0);
    }
    redis::Script::new(&String::from_utf8_lossy(&text)).get_hash().to_string()
}

/// One of a script's own arguments (from `OWN`, after the common ones): its name in the
/// script's table of `lua/lib/protocol.lua` (`RECORD.outcome`), the arguments it spans, and
/// what it is. `Op::write` writes them in this order (a test compares them entry by entry).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Own {
    /// Its name.
    pub(crate) name: &'static str,
    /// How many arguments it spans (a batch: all of [`BATCH`]).
    pub(crate) width: usize,
    /// Its doc comment.
    pub(crate) doc: &'static str,
}

/// An own argument that spans one ARGV.
#[cfg(test)]
const fn own(name: &'static str, doc: &'static str) -> Own {
    Own { name, width: 1, doc }
}

/// The batch of counts, which spans all of [`BATCH`].
#[cfg(test)]
const fn batch(doc: &'static str) -> Own {
    Own { name: "batch", width: BATCH.len(), doc }
}

/// The last argument of a script that carries a batch.
#[cfg(test)]
const BATCH_ID: Own = own(
    "batch_id",
    "The batch's id: '', `<sender>:<seq>`, or `<sender>:<seq>:again` when sent again after its\n\
     reply was lost (see parse_batch in lib/batch.lua): a batch counted already counts nothing.",
);

/// The own arguments of `lua/acquire.lua`.
#[cfg(test)]
pub(crate) const ACQUIRE: [Own; 3] = [
    own("permit", "The permit id (1-64 bytes, unique per permit)."),
    batch("The caller's pending batch (BATCH), counted first."),
    BATCH_ID,
];

/// The own arguments of `lua/record.lua`.
#[cfg(test)]
pub(crate) const RECORD: [Own; 13] = [
    own(
        "outcome",
        "'success' | 'failure' | 'ignore' | 'release' (a permit dropped with no outcome: frees its\n\
         probe lease, counts nothing) | 'none' (a flush of the batch alone).",
    ),
    own("incarnation", "The incarnation the permit was granted in."),
    own("epoch", "The epoch the permit was granted in."),
    own("probe", "The probe id ('' when the permit holds no lease)."),
    own("slow", "Whether the call was slow (0|1)."),
    own("timed_out", "Whether the call timed out (0|1)."),
    own("fseq", "The fseq the permit's process had seen."),
    batch("The caller's pending batch (BATCH)."),
    own("description", "A failure's one-line description for the history (0-200 bytes; '' = none)."),
    own(
        "report",
        "The caller's report under the quorum rule: '' | 'failing' (its own breaker opened, or is\n\
         still open: said again every quarter window) | 'recovered' (it closed again); see\n\
         `report` in lib/rules.lua.",
    ),
    own(
        "active",
        "With a quorum_fraction (0|1): the caller recorded calls and counts among the processes of\n\
         the window (sent about ten times per window, not with every record).",
    ),
    own(
        "reporter",
        "The caller's identity for the quorum (1-64 bytes; '' = none): the member its report and its\n\
         word that it is active write in KEYS[6] and KEYS[7]. Processes with one identity (one host,\n\
         across restarts) count as one; the events still name the caller's own client id (ARG.origin).",
    ),
    BATCH_ID,
];

/// The arguments of `lua/count.lua`, from ARGV 1 (it takes none of the common ones): written by
/// `Record::write_count`.
#[cfg(test)]
pub(crate) const COUNT: [Own; 5] = [
    own("now", "The caller's clock (ms): '' = Redis TIME; only tests send one."),
    own(
        "config_id",
        "The caller's config id (ARG.config_id): a config the library does not know, or one with a\n\
         window or a quorum, is record.lua's.",
    ),
    own("incarnation", "The incarnation the permit was granted in."),
    own("epoch", "The epoch the permit was granted in."),
    BATCH_ID,
];

/// The own arguments of `lua/control.lua`.
#[cfg(test)]
pub(crate) const CONTROL: [Own; 3] = [
    own("op", "'force_open' | 'force_close' | 'reset'."),
    own("duration_ms", "How long a forced state lasts (0 = until reset)."),
    own("note", "The operator's note for the history (0-200 bytes; '' = none)."),
];

/// A batch of counts (`Batch`), by offset from its first argument: `Batch::write` writes them in
/// this order, `parse_batch` in `lua/lib/batch.lua` reads them by these names.
#[cfg(test)]
pub(crate) const BATCH: [&str; 10] = [
    "incarnation",
    "epoch",
    "fseq",
    "successes",
    "slow",
    "ignored",
    "rejected",
    "degraded_successes",
    "degraded_failures",
    "throttled",
];
