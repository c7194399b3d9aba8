//! `lua/lib/protocol.lua`, generated from the tables of this module, and the tests that keep it
//! current and keep the Lua to the names it defines.

use super::args::{ACQUIRE, BATCH, CONFIG_ID, CONTROL, COUNT, CallArgs, Check, Own, RECORD, Spec};
use super::reason::REASONS;
use super::reply::REPLY;
use super::{HALF_OPEN_RETRY_MS, LONGEST_WINDOW, MAX_INT, PROCESSES_SINCE, Params};
use std::fmt::Write;

/// The generated file, from the crate's root.
const PATH: &str = "lua/lib/protocol.lua";

/// The first of a script's own arguments: the common ones (the per-call ones, the config's
/// fingerprint and its id) come before it; the rest of the config comes after them.
fn own_from() -> usize {
    1 + CallArgs::SPEC.len() + 2
}

/// The common arguments by position: the per-call ones, the fingerprint, the config id.
fn common() -> Vec<&'static Spec> {
    CallArgs::SPEC.iter().chain(&Params::SPEC[..1]).chain(std::iter::once(&CONFIG_ID)).collect()
}

/// The config arguments that follow a script's own, when they are sent (all of `Params` but the
/// fingerprint, which is common).
fn config_rows() -> &'static [Spec] {
    &Params::SPEC[1..]
}

/// A value of a limit as Lua writes it.
enum Value {
    Int(u64),
    Text(&'static str),
}

/// The limits the scripts share with Rust: the Lua name, the value, and where Rust keeps it.
fn limits() -> Vec<(&'static str, Value, &'static str)> {
    let max_duration = u64::try_from(crate::config::MAX_DURATION.as_millis()).unwrap_or(u64::MAX);
    vec![
        ("OWN", Value::Int(own_from() as u64), "the first of a script's own arguments"),
        ("MAX_INT", Value::Int(MAX_INT), "protocol::MAX_INT"),
        ("MAX_DURATION", Value::Int(max_duration), "config::MAX_DURATION: a deadline now + this stays exact"),
        ("MAX_QUORUM", Value::Int(crate::config::MAX_QUORUM.into()), "config::MAX_QUORUM"),
        (
            "MAX_RAMP",
            Value::Int(u64::try_from(crate::config::MAX_RAMP.as_millis()).unwrap_or(u64::MAX)),
            "config::MAX_RAMP",
        ),
        ("PER_MILLE", Value::Int(1000), "a recovery ramp's start is kept in per mille of the calls"),
        ("HISTORY_LEN", Value::Int(100), "entries the history stream keeps (about: MAXLEN ~)"),
        ("HALF_OPEN_RETRY", Value::Int(HALF_OPEN_RETRY_MS), "protocol::HALF_OPEN_RETRY_MS"),
        ("BATCH_MEMORY", Value::Int(crate::breaker::pending::BATCH_MEMORY_MS), "breaker::pending::BATCH_MEMORY_MS"),
        ("PROCESSES_SINCE", Value::Text(PROCESSES_SINCE), "protocol::PROCESSES_SINCE"),
        ("LONGEST_WINDOW", Value::Text(LONGEST_WINDOW), "protocol::LONGEST_WINDOW"),
    ]
}

/// A Lua string literal; the tables hold no quote or backslash (a test checks).
fn quoted(s: &str) -> String {
    format!("'{s}'")
}

/// A doc comment as Lua comment lines, indented by `indent`.
fn comment(out: &mut String, indent: &str, doc: &str) {
    for line in doc.lines() {
        let line = line.trim();
        if line.is_empty() {
            out.push_str(indent);
            out.push_str("--\n");
        } else {
            let _ = writeln!(out, "{indent}-- {line}");
        }
    }
}

/// A table of names to positions, each with its doc.
fn positions<'a>(out: &mut String, name: &str, doc: &str, rows: impl Iterator<Item = (&'a str, usize, &'a str)>) {
    comment(out, "", doc);
    let _ = writeln!(out, "local {name} = {{");
    for (field, at, doc) in rows {
        comment(out, "  ", doc);
        let _ = writeln!(out, "  {field} = {at},");
    }
    out.push_str("}\n\n");
}

/// The Lua expression that reads and checks the argument at `at` (a Lua expression: a number, or
/// `at + n` in `read_config`) with `int_arg`, `float_arg`, `str_arg` of `lua/lib/args.lua`; `min`
/// of [`Check::IntFrom`] is that field of the config table `c`.
fn checked(at: &str, spec: &Spec) -> String {
    let name = quoted(spec.error);
    match spec.check {
        Check::Clock => format!("int_arg({at}, {name}, 0, MAX_INT)"),
        Check::Int { min, max } => format!("int_arg({at}, {name}, {min}, {max})"),
        Check::IntFrom { min, max } => format!("int_arg({at}, {name}, c.{min}, {max})"),
        Check::Float { min, max } => format!("float_arg({at}, {name}, {min}, {max})"),
        Check::Text { min, max } => format!("str_arg({at}, {name}, {max}, {})", min == 0),
    }
}

/// A script's own arguments, from `OWN`, then where its config begins when it is sent.
fn own_table(out: &mut String, name: &str, script: &str, rows: &[Own]) {
    let mut at = own_from();
    let mut rows: Vec<(&str, usize, &str)> = rows
        .iter()
        .map(|r| {
            let row = (r.name, at, r.doc);
            at += r.width;
            row
        })
        .collect();
    rows.push((
        "config",
        at,
        "Where the rest of the caller's config (CONFIG) begins: its last arguments, sent when the\n\
         scripts run with EVALSHA, or when the library does not know the config id yet.",
    ));
    positions(out, name, &format!("The own arguments of {script}, from OWN."), rows.into_iter());
}

/// The text of `lua/lib/protocol.lua`.
pub(super) fn render() -> String {
    let mut out = String::from(
        "-- redis-breaker lib/protocol.lua: the scripts' calling convention by name: their arguments, how the\n\
         -- common ones are checked, the reply's order, the reasons and the limits (Rust twin: src/protocol/).\n\
         -- GENERATED from the tables of src/protocol/ by `cargo test -p redis-breaker --lib protocol`, which\n\
         -- rewrites it when they change: edit those, not this file. Joined after lib/clock.lua in front of\n\
         -- every script that changes state (`lib!` in src/store/scripts.rs).\n\n",
    );
    out.push_str("-- Limits (where Rust keeps each).\n");
    for (name, value, home) in limits() {
        let value = match value {
            Value::Int(n) => n.to_string(),
            Value::Text(s) => quoted(s),
        };
        let _ = writeln!(out, "local {name} = {value} -- {home}");
    }
    out.push('\n');

    positions(
        &mut out,
        "ARG",
        "The common arguments of every script, by name (ARGV[ARG.<name>]): per call (CallArgs), then the\n\
         caller's config fingerprint and id; the rest of the config (Params) follows the script's own\n\
         (CONFIG, from <script>.config), when it is sent.",
        common().into_iter().enumerate().map(|(i, s)| (s.field, i + 1, s.doc)),
    );
    positions(
        &mut out,
        "CONFIG",
        "The rest of the config, by offset from its first argument (ARGV[at + CONFIG.<name>]).",
        config_rows().iter().enumerate().map(|(i, s)| (s.field, i, s.doc)),
    );

    out.push_str(
        "-- Reads the arguments that differ per call into the config table c, each checked with int_arg,\n\
         -- float_arg or str_arg of lib/args.lua (passed in: this file comes before it); `now` is Redis's clock,\n\
         -- for a clock argument ''.\n\
         local function read_call(c, now, int_arg, float_arg, str_arg)\n",
    );
    for (i, spec) in CallArgs::SPEC.iter().enumerate() {
        let (at, field) = (i + 1, spec.field);
        let value = checked(&at.to_string(), spec);
        if let Check::Clock = spec.check {
            let _ = writeln!(out, "  if ARGV[{at}] == '' then c.{field} = now else c.{field} = {value} end");
        } else {
            let _ = writeln!(out, "  c.{field} = {value}");
        }
    }
    let fingerprint = CallArgs::SPEC.len() + 1;
    let _ = write!(
        out,
        "end\n\n\
         -- The config arguments: the fingerprint, then the rest from ARGV[at] on (CONFIG), validated once per\n\
         -- config id where the scripts run as a library (see parse_config in lib/args.lua).\n\
         local CONFIG_LEN = {len}\n\n\
         -- A config table: the config arguments, each checked (as in read_call), with room for those that\n\
         -- differ per call.\n\
         local function read_config(at, int_arg, float_arg, str_arg)\n",
        len = config_rows().len()
    );
    // An argument whose bound is another's value is read once the table holds that one.
    let after = |spec: &Spec| matches!(spec.check, Check::IntFrom { .. });
    let position = |i: usize| if i == 0 { fingerprint.to_string() } else { format!("at + {}", i - 1) };
    out.push_str("  local c = {\n");
    for (i, spec) in Params::SPEC.iter().enumerate() {
        let value = if after(spec) { "0".to_string() } else { checked(&position(i), spec) };
        let _ = writeln!(out, "    {} = {value},", spec.field);
    }
    for spec in CallArgs::SPEC {
        let empty = if let Check::Text { .. } = spec.check { "''" } else { "0" };
        let _ = writeln!(out, "    {} = {empty},", spec.field);
    }
    out.push_str("  }\n");
    for (i, spec) in Params::SPEC.iter().enumerate().filter(|(_, spec)| after(spec)) {
        let _ = writeln!(out, "  c.{} = {}", spec.field, checked(&position(i), spec));
    }
    out.push_str("  return c\nend\n\n");

    own_table(&mut out, "ACQUIRE", "acquire.lua", &ACQUIRE);
    own_table(&mut out, "RECORD", "record.lua", &RECORD);
    own_table(&mut out, "CONTROL", "control.lua", &CONTROL);
    positions(
        &mut out,
        "COUNT",
        "The arguments of count.lua, from ARGV 1 (it takes none of the common ones).",
        COUNT.iter().enumerate().map(|(i, r)| (r.name, i + 1, r.doc)),
    );
    positions(
        &mut out,
        "BATCH",
        "A batch of counts (Rust: `Batch`), by offset from its first argument (see parse_batch in\n\
         lib/batch.lua).",
        BATCH.iter().enumerate().map(|(i, name)| (*name, i, "")),
    );
    positions(
        &mut out,
        "REPLY",
        "The reply of every script, by position (Rust: `Reply`, read by parse_reply in src/store/scripts.rs).",
        REPLY.iter().enumerate().map(|(i, (name, doc))| (*name, i + 1, *doc)),
    );

    out.push_str(
        "-- Every reason a script writes into the state hash, once (string.format templates; Rust:\n\
         -- src/protocol/reason.rs fills the same).\n\
         local REASON = {\n",
    );
    for (name, reason) in REASONS {
        let _ = writeln!(out, "  {name} = {},", quoted(reason.0));
    }
    out.push_str("}\n");
    out
}

/// Every name the tables give the Lua, by table.
fn names() -> Vec<(&'static str, Vec<&'static str>)> {
    let own = |rows: &[Own]| rows.iter().map(|r| r.name).chain(["config"]).collect();
    vec![
        ("ARG", common().iter().map(|s| s.field).collect()),
        ("CONFIG", config_rows().iter().map(|s| s.field).collect()),
        ("ACQUIRE", own(&ACQUIRE)),
        ("RECORD", own(&RECORD)),
        ("CONTROL", own(&CONTROL)),
        ("COUNT", COUNT.iter().map(|r| r.name).collect()),
        ("BATCH", BATCH.to_vec()),
        ("REPLY", REPLY.iter().map(|(name, _)| *name).collect()),
        ("REASON", REASONS.iter().map(|(name, _)| *name).collect()),
    ]
}

#[test]
fn the_lua_prelude_is_generated_from_these_tables() {
    let path = format!("{}/{PATH}", env!("CARGO_MANIFEST_DIR"));
    let want = render();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let rewritten = std::fs::write(&path, &want).is_ok();
        panic!(
            "{PATH} was stale (the tables of src/protocol/ changed){}: review the change, build again and commit it",
            if rewritten { "; it is now rewritten" } else { ", and could not be rewritten" }
        );
    }
}

#[test]
fn the_tables_hold_nothing_a_lua_literal_would_need_to_escape() {
    let texts = limits().into_iter().filter_map(|(_, v, _)| if let Value::Text(s) = v { Some(s) } else { None });
    let specs = common().into_iter().chain(Params::SPEC).flat_map(|s| [s.field, s.error]);
    for s in texts.chain(specs).chain(REASONS.iter().map(|(_, reason)| reason.0)) {
        assert!(!s.contains(['\'', '\\', '\n']), "{s:?}");
    }
    for spec in common().into_iter().chain(Params::SPEC) {
        if let Check::Text { min, .. } = spec.check {
            assert!(min <= 1, "{}: str_arg says only whether it may be empty", spec.field);
        }
    }
    assert!(
        !CallArgs::SPEC.iter().any(|s| matches!(s.check, Check::IntFrom { .. })),
        "read_call knows no other argument's value"
    );
    let limits: Vec<&str> = limits().iter().map(|(name, _, _)| *name).collect();
    for spec in CallArgs::SPEC.iter().chain(Params::SPEC) {
        if let Check::Int { max, .. } | Check::IntFrom { max, .. } = spec.check {
            assert!(limits.contains(&max), "{}: no limit {max}", spec.field);
        }
        if let Check::IntFrom { min, .. } = spec.check {
            let bound = Params::SPEC.iter().find(|s| s.field == min);
            assert!(
                bound.is_some_and(|b| !matches!(b.check, Check::IntFrom { .. })),
                "{}: {min} is not a config field read in the table's constructor",
                spec.field
            );
        }
    }
}

/// A name the Lua reads from one of the generated tables that they do not hold would be nil when
/// a script runs: every `ARG.x`, `RECORD.x`, `REASON.x`, ... in `lua/` is one of theirs.
#[test]
fn the_scripts_read_only_names_the_tables_define() {
    let tables = names();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["lua", "lua/lib"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).expect("lua/") {
            let path = entry.expect("a file of lua/").path();
            if path.extension().is_some_and(|e| e == "lua") && !path.ends_with(PATH) {
                files.push(path);
            }
        }
    }
    let mut read = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("a lua file");
        for (table, fields) in &tables {
            let needle = format!("{table}.");
            for (at, _) in text.match_indices(&needle) {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let name: String =
                    text[at + needle.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(fields.contains(&name.as_str()), "{}: {table}.{name} is not in the table", path.display());
                read += 1;
            }
        }
    }
    assert!(read > 30, "the scripts read their arguments by name ({read} reads found)");
}
