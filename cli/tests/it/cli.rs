//! The `redis-breaker` binary, run as a user would, against a real Redis.

use redis_breaker::redis;
use redis_breaker_test_support as support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn cli(redis: &TestRedis) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-breaker"));
    c.env("REDIS_URL", &redis.url);
    c
}

fn run(redis: &TestRedis, args: &[&str]) -> Output {
    cli(redis).args(args).output().expect("run redis-breaker")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit status")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn exec_passes_the_commands_status_and_trips_the_breaker() {
    let redis = redis().await;
    let name = unique("cli-exec");
    let o = run(&redis, &["exec", &name, "--failure-threshold", "2", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&o), 3, "the command's own status");
    let o = run(&redis, &["exec", &name, "--failure-threshold", "2", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&o), 3);
    let o = run(&redis, &["exec", &name, "--failure-threshold", "2", "--", "sh", "-c", "echo ran; exit 0"]);
    assert_eq!(code(&o), 75, "rejected: {}", stderr(&o));
    assert!(stdout(&o).is_empty(), "a rejected command does not run");
    assert!(stderr(&o).contains("is open; retry after"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    let o = run(&redis, &["exec", &name, "--rejected-exit-code", "9", "--", "true"]);
    assert_eq!(code(&o), 9);
    assert_eq!(state_hash(&redis, &name).await["state"], "open");
}

/// Gentle recovery from the command line: a run whose probe closes the breaker with
/// `--recovery-ramp` starts the fleet's ramp; `status`, `list` and `history` show it; most runs
/// right after the close are held back (exit 75, "recovering: N% admitted").
#[tokio::test]
async fn exec_takes_a_recovery_ramp_and_status_list_and_history_show_it() {
    let redis = redis().await;
    let name = unique("cli-ramp");
    let opts = [
        "--failure-threshold",
        "1",
        "--success-threshold",
        "1",
        "--base-recovery",
        "100ms",
        "--max-recovery",
        "100ms",
        "--jitter",
        "0",
        "--recovery-ramp",
        "1h",
        "--ramp-start",
        "0.01",
    ];
    let exec = |cmd: &str| {
        let mut args = vec!["exec", name.as_str()];
        args.extend(opts);
        args.extend(["--", "sh", "-c", cmd]);
        run(&redis, &args)
    };
    assert_eq!(code(&exec("exit 3")), 3);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(code(&exec("exit 0")), 0, "the probe closes the breaker");
    let o = run(&redis, &["status", &name]);
    let text = stdout(&o);
    assert!(text.contains("state:       closed"), "{text}");
    assert!(text.contains("ramping:     1%") || text.contains("ramping:     1."), "{text}");
    assert!(text.contains("left of 1h"), "{text}");
    let o = run(&redis, &["list"]);
    assert!(stdout(&o).contains("closed (ramping: 1"), "{}", stdout(&o));
    let o = run(&redis, &["history", &name]);
    assert!(stdout(&o).contains("ramping from 1% over 1h"), "{}", stdout(&o));
    let o = run(&redis, &["status", &name, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(status["ramp"]["start_permille"], 10, "{status}");
    // At about 1% admitted (it reaches 2% after 36s), nearly every run is held back.
    let held: Vec<Output> = (0..5).map(|_| exec("echo ran")).filter(|o| code(o) == 75).collect();
    assert!(held.len() >= 3, "runs held back by the ramp: {}", held.len());
    assert!(stderr(&held[0]).contains("is closed, recovering: 1"), "{}", stderr(&held[0]));
    assert!(stdout(&held[0]).is_empty(), "a run held back does not run");
    let o = run(&redis, &["exec", &name, "--ramp-start", "0", "--", "true"]);
    assert_eq!(code(&o), 2, "a bad ramp start is a usage error: {}", stderr(&o));
    assert!(stderr(&o).contains("ramp_start"), "{}", stderr(&o));
}

/// Each `exec` run is its own process to the quorum: one failing run reports itself and the
/// breaker stays closed; the third failing run within the window opens it. `status` shows the
/// quorum and who reported.
#[tokio::test]
async fn exec_runs_are_reporters_under_a_quorum_and_status_names_them() {
    let redis = redis().await;
    let name = unique("cli-quorum");
    let exec = ["exec", &name, "--failure-threshold", "1", "--quorum", "3", "--", "sh", "-c", "exit 2"];
    // Runs on three hosts: each its own reporter (runs on one host share its identity).
    let on = |host: &str, args: &[&str]| {
        cli(&redis).env("REDIS_BREAKER_REPORTER_ID", host).args(args).output().expect("run redis-breaker")
    };
    assert_eq!(code(&on("host-1", &exec)), 2);
    assert_eq!(code(&on("host-2", &exec)), 2);
    let o = run(&redis, &["status", &name]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("state:       closed"), "{text}");
    assert!(text.contains("quorum:      3 (2 reported their own breaker open: "), "{text}");
    let o = run(&redis, &["status", &name, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(status["quorum"], 3);
    assert_eq!(status["reporters"].as_array().map(Vec::len), Some(2), "{status}");
    assert_eq!(code(&on("host-3", &exec)), 2);
    let o = run(&redis, &["exec", &name, "--failure-threshold", "1", "--quorum", "3", "--", "true"]);
    assert_eq!(code(&o), 75, "the third failing run opened the breaker: {}", stderr(&o));
    let state = state_hash(&redis, &name).await;
    assert_eq!((state["state"].as_str(), state["reason"].as_str()), ("open", "failing processes 3 >= quorum 3"));
    let o = run(&redis, &["exec", &name, "--quorum", "0", "--", "true"]);
    assert_eq!(code(&o), 2, "a bad quorum is a usage error");
    assert!(stderr(&o).contains("quorum"), "{}", stderr(&o));
    // One call per run: a quorum without a threshold of 1 could never open the breaker.
    let o = run(&redis, &["exec", &unique("cli-quorum-threshold"), "--quorum", "3", "--", "true"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--failure-threshold 1"), "{}", stderr(&o));
    let rate = ["--failure-threshold", "0", "--failure-rate", "0.5", "--minimum-calls", "1", "--quorum", "2"];
    let o = run(&redis, &[&["exec", &unique("cli-quorum-rate")][..], &rate, &["--", "true"]].concat());
    assert_eq!(code(&o), 0, "a rate rule one call meets will do: {}", stderr(&o));
}

#[tokio::test]
async fn exec_statuses_for_timeouts_missing_commands_signals_and_success_codes() {
    let redis = redis().await;
    let name = unique("cli-codes");
    let o = run(&redis, &["exec", &name, "--success-codes", "1,3", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&o), 3);
    assert_eq!(state_field(&redis, &name, "failures").await, 0, "3 is listed as a success");

    let o = run(&redis, &["exec", &name, "--call-timeout", "200ms", "--", "sleep", "5"]);
    assert_eq!(code(&o), 124, "{}", stderr(&o));
    assert_eq!(state_field(&redis, &name, "failures").await, 1, "a timeout is a failure");

    let o = run(&redis, &["exec", &name, "--", "/nonexistent/command"]);
    assert_eq!(code(&o), 127);
    let dir = std::env::temp_dir().join(format!("rb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_executable = dir.join("script.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    let o = run(&redis, &["exec", &name, "--", not_executable.to_str().unwrap()]);
    assert_eq!(code(&o), 126);
    assert_eq!(state_field(&redis, &name, "failures").await, 1, "126/127 are not counted");

    let o = run(&redis, &["exec", &name, "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(code(&o), 128 + 15, "killed by SIGTERM: 128+15");
    assert_eq!(state_field(&redis, &name, "failures").await, 2);
    let calls: u64 = metric(&redis, &name, "calls").await;
    assert_eq!(calls, 3, "the success, the timeout and the signal; not the commands that never ran");
}

#[tokio::test]
async fn concurrent_exec_processes_share_one_breaker() {
    let redis = redis().await;
    let name = unique("cli-fleet");
    let children: Vec<_> = (0..16)
        .map(|_| {
            cli(&redis)
                .args(["exec", &name, "--failure-threshold", "5", "--", "false"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap()).collect();
    let failed = codes.iter().filter(|c| **c == 1).count() as u64;
    let rejected = codes.iter().filter(|c| **c == 75).count() as u64;
    assert_eq!(failed + rejected, 16, "{codes:?}");
    let h = state_hash(&redis, &name).await;
    assert_eq!((h["state"].as_str(), h["epoch"].as_str()), ("open", "1"), "one trip for the whole fleet");
    let m: std::collections::HashMap<String, u64> = metrics_hash(&redis, &name).await;
    assert_eq!(m["failures"], failed);
    assert_eq!(m.get("rejected").copied().unwrap_or(0), rejected);
}

#[tokio::test]
async fn sigterm_is_forwarded_and_the_probe_lease_released() {
    let redis = redis().await;
    let name = unique("cli-signal");
    let opts =
        ["--failure-threshold", "1", "--base-recovery", "50ms", "--max-recovery", "50ms", "--probe-lease", "20s"];
    let mut args = vec!["exec", name.as_str()];
    args.extend(opts);
    let trip: Vec<&str> = args.iter().copied().chain(["--", "false"]).collect();
    assert_eq!(code(&run(&redis, &trip)), 1);
    std::thread::sleep(Duration::from_millis(80));
    let probe: Vec<&str> = args.iter().copied().chain(["--", "sleep", "30"]).collect();
    let child = cli(&redis).args(&probe).spawn().unwrap();
    let probes_key = format!("breaker:{{{name}}}:probes");
    let zcard =
        || async { redis::cmd("ZCARD").arg(&probes_key).query_async::<u64>(&mut redis.conn().await).await.unwrap() };
    let start = Instant::now();
    while zcard().await == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the probe never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 15), "sleep died of the forwarded SIGTERM");
    assert_eq!(zcard().await, 0, "the lease was released, long before its 20s expiry");
    assert_eq!(state_hash(&redis, &name).await["state"], "half_open", "an interrupted probe records nothing");
}

#[tokio::test]
async fn watch_json_prints_a_transition_as_it_happens() {
    let redis = redis().await;
    let name = unique("cli-watch");
    let mut watch =
        cli(&redis).args(["watch", &name, "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("watching breaker:events"), "{line}");
    assert_eq!(code(&run(&redis, &["open", &name, "--for", "30s"])), 0);
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let mut event = String::new();
    out.read_line(&mut event).unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let v: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(v["name"], name.as_str());
    assert_eq!((v["from"].as_str(), v["to"].as_str()), (Some("closed"), Some("forced_open")));
    assert!(v["retry_after_ms"].as_i64().unwrap() > 29_000);
    assert_eq!(v["epoch"], 1);
}

#[tokio::test]
async fn status_list_and_control_commands() {
    let redis = private_redis().await;
    let o = run(&redis, &["status", "never-used", "--json"]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["state"].as_str(), v["epoch"].as_u64()),
        (Some("never-used"), Some("closed"), Some(0))
    );
    assert!(v["failures"].is_u64() && v["metrics"].is_object() && v.get("retry_after_ms").is_some());

    let o = run(&redis, &["--json", "open", "payments", "--for", "1m"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&redis, &["close", "search"]);
    assert!(stdout(&o).contains("until `redis-breaker reset search`"), "{}", stdout(&o));
    let o = run(&redis, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let breakers = v["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 2);
    assert_eq!((breakers[0]["name"].as_str(), breakers[0]["state"].as_str()), (Some("payments"), Some("forced_open")));
    assert!(breakers[0]["retry_after_ms"].as_u64().unwrap() > 50_000);
    let table = stdout(&run(&redis, &["list"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("search") && table.contains("forced_closed"), "{table}");
    let o = run(&redis, &["reset", "payments"]);
    assert!(stdout(&o).contains("payments: reset (state closed"), "{}", stdout(&o));
    let human = stdout(&run(&redis, &["status", "payments"]));
    assert!(human.contains("reason:      reset by operator"), "{human}");
}

#[tokio::test]
async fn bad_input_and_an_unreachable_redis_get_one_line_and_a_status() {
    let redis = redis().await;
    for (args, want) in [
        (vec!["status", "has space"], 2),
        (vec!["open", "x", "--for", "soon"], 2),
        (vec!["exec", "x", "--jitter", "2", "--", "true"], 2),
        (vec!["exec", "x", "--call-timeout", "1m", "--", "true"], 2),
        (vec!["frobnicate"], 2),
    ] {
        let o = run(&redis, &args);
        assert_eq!(code(&o), want, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    let o = run(&redis, &["exec", "x", "--jitter", "2", "--", "true"]);
    assert_eq!(stderr(&o).trim().lines().count(), 1);
    assert!(stderr(&o).contains("jitter"), "{}", stderr(&o));

    let nowhere = format!("redis://:hunter2@127.0.0.1:{}", unused_port());
    for args in [vec!["list"], vec!["status", "x"], vec!["reset", "x"], vec!["--timeout", "200ms", "watch"]] {
        let o =
            Command::new(env!("CARGO_BIN_EXE_redis-breaker")).args(&args).args(["--url", &nowhere]).output().unwrap();
        assert_eq!(code(&o), 69, "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(!stderr(&o).contains("hunter2"));
    }
    // exec follows the degraded mode when Redis is unreachable.
    let o = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
        .args(["exec", "x", "--url", &nowhere, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "local: allowed");
    let o = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
        .args(["exec", "x", "--degraded", "fail-closed", "--url", &nowhere, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 75, "fail-closed: rejected");
}

/// `exec` keeps the call inside its probe lease: the default timeout is lowered, a longer one refused.
#[tokio::test]
async fn exec_keeps_the_call_timeout_inside_a_short_probe_lease() {
    let redis = redis().await;
    let name = unique("cli-lease");
    let o = run(&redis, &["exec", &name, "--probe-lease", "1s", "--", "true"]);
    assert_eq!(code(&o), 0, "the call timeout is lowered to fit the lease: {}", stderr(&o));
    let o = run(&redis, &["exec", &name, "--probe-lease", "1s", "--call-timeout", "1s", "--", "sh", "-c", "echo ran"]);
    assert_eq!(code(&o), 2, "a lease no longer than the call is refused: {}", stderr(&o));
    assert!(stdout(&o).is_empty(), "the command did not run");
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("call_timeout"), "{}", stderr(&o));
}

/// `open`, `close` and `reset` from the CLI keep the services' config fingerprint (no fake drift).
#[tokio::test]
async fn cli_control_commands_keep_the_services_config_fingerprint() {
    let redis = redis().await;
    let name = unique("cli-fingerprint");
    let service = redis_breaker::Client::connect(&redis.url).await.unwrap();
    let b = service.breaker(&name, redis_breaker::Config::builder().failure_threshold(7).build().unwrap()).unwrap();
    b.execute(|| async { Err::<(), _>("downstream failed") }).await.unwrap_err();
    let fingerprint = state_hash(&redis, &name).await["config"].clone();
    assert_eq!(fingerprint, b.health().await.unwrap().config_fingerprint);
    for args in [vec!["open", name.as_str(), "--for", "1s"], vec!["close", name.as_str()], vec!["reset", name.as_str()]]
    {
        let o = run(&redis, &args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert_eq!(state_hash(&redis, &name).await["config"], fingerprint, "`{}` rewrote the fingerprint", args[0]);
        assert!(b.health().await.unwrap().config_matches, "after `{}` the service reports a config drift", args[0]);
    }
}

/// `open --for` with a duration the scripts cannot hold is bad input: exit 2, one line, no write.
#[tokio::test]
async fn open_refuses_a_duration_the_scripts_cannot_hold() {
    let redis = redis().await;
    let name = unique("cli-huge");
    let o = run(&redis, &["open", &name, "--for", "104230000d"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let exists: u64 = redis::cmd("EXISTS").arg(key(&name, "state")).query_async(&mut redis.conn().await).await.unwrap();
    assert_eq!(exists, 0, "nothing was written");
}

/// `exec` accepts a rate rule over a short window and runs the command through it.
#[tokio::test]
async fn exec_accepts_a_rate_rule_over_a_short_window() {
    let redis = redis().await;
    let name = unique("cli-rate");
    let o = run(&redis, &["exec", &name, "--failure-rate", "0.5", "--window", "5s", "--", "true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(metric(&redis, &name, "calls").await, 1, "the call went through the breaker");
}

/// `exec` owns CMD's whole process tree: the call-timeout kill reaches what CMD started.
#[tokio::test]
async fn exec_call_timeout_kills_the_commands_children_too() {
    let redis = redis().await;
    let name = unique("cli-tree");
    let dir = std::env::temp_dir().join(unique("cli-tree"));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("grandchild.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    // No pipes: a surviving grandchild would hold them open and make the wait its own.
    let status = cli(&redis)
        // Long enough for `sh` to start and write the pid file on a machine busy compiling
        // (300 ms was not: CI once killed the shell before it wrote it).
        .args(["exec", &name, "--call-timeout", "3s", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(124));
    let written = std::fs::read_to_string(&pidfile).unwrap_or_default();
    let pid: i32 =
        written.trim().parse().unwrap_or_else(|_| panic!("the shell wrote no pid before the timeout: {written:?}"));
    // Gone, or a zombie waiting for init to reap it: either way it no longer runs.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
    };
    let start = Instant::now();
    while running() {
        assert!(start.elapsed() < Duration::from_secs(10), "the grandchild {pid} outlived the call timeout");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `completions SHELL` prints a completion script; `exec --help` separates global, exec and
/// breaker options under their own headings.
#[tokio::test]
async fn completions_and_help_headings() {
    let redis = redis().await;
    let o = run(&redis, &["completions", "bash"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("redis-breaker") && stdout(&o).contains("complete"), "{}", stdout(&o));
    let o = run(&redis, &["exec", "--help"]);
    let help = stdout(&o);
    assert!(help.contains("Global options:") && help.contains("Breaker options"), "{help}");
    let global = help.find("Global options:").unwrap();
    let url = help.find("--url").unwrap();
    let threshold = help.find("--failure-threshold").unwrap();
    let breaker = help.find("Breaker options").unwrap();
    assert!(url > global && threshold > breaker, "each option under its heading: {help}");
}

/// Operators' notes go to the breaker's history with the transition; `history` prints the last
/// transitions newest first, as a table or JSON, and a note that is not one short line is bad
/// input that changes nothing.
#[tokio::test]
async fn history_lists_transitions_newest_first_with_operators_notes() {
    let redis = redis().await;
    let name = unique("cli-history");
    let o = run(&redis, &["open", &name, "--for", "1m", "--note", "deploy 4711 rollback"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&redis, &["reset", &name, "--note", "fixed"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&redis, &["history", &name]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two transitions: {lines:?}");
    assert!(
        lines[1].contains("forced_open") && lines[1].contains("closed") && lines[1].contains("note: fixed"),
        "{lines:?}"
    );
    assert!(lines[2].contains("note: deploy 4711 rollback"), "{lines:?}");
    let o = run(&redis, &["--json", "history", &name, "--count", "1"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let entries = v["history"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0]["from"].as_str(), entries[0]["to"].as_str()), (Some("forced_open"), Some("closed")));
    assert_eq!(entries[0]["note"], "fixed");
    assert!(entries[0]["at_ms"].as_u64().unwrap() > 0 && entries[0]["origin"].is_string());

    let o = run(&redis, &["open", &name, "--note", "two\nlines"]);
    assert_eq!(code(&o), 2, "a bad note is bad usage: {}", stderr(&o));
    assert!(stderr(&o).contains("note"), "{}", stderr(&o));
    assert_eq!(state_hash(&redis, &name).await["state"], "closed", "nothing changed");
    let o = run(&redis, &["history", &unique("cli-no-history")]);
    assert_eq!((code(&o), stdout(&o).trim()), (0, "no transitions recorded"));

    // `exec` describes the failure that trips the breaker: the command and its exit status.
    let tripped = unique("cli-history-exec");
    let o = run(&redis, &["exec", &tripped, "--failure-threshold", "1", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&o), 3);
    let o = run(&redis, &["--json", "history", &tripped]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["history"][0]["to"], "open");
    assert_eq!(v["history"][0]["failure"], "sh: exit status 3");
}

/// A key under the prefix whose name cannot be a breaker (here a space, and bytes that are not
/// UTF-8) is skipped: `list` lists every other breaker, says on stderr which it skipped, and
/// `--json` counts them.
#[tokio::test]
async fn list_skips_keys_whose_name_cannot_be_a_breaker_and_says_so() {
    let redis = private_redis().await;
    assert_eq!(code(&run(&redis, &["open", "payments"])), 0);
    let mut conn = redis.conn().await;
    for k in [&b"breaker:{a b}:metrics"[..], &b"breaker:{\xff}:state"[..]] {
        redis::cmd("HSET").arg(k).arg("calls").arg(1).query_async::<()>(&mut conn).await.unwrap();
    }
    let o = run(&redis, &["list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.starts_with("NAME") && table.contains("payments") && !table.contains("a b"), "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    let warned = stderr(&o);
    assert_eq!(warned.lines().count(), 1, "{warned}");
    assert!(warned.contains("skipped 2") && warned.contains(r#""a b""#), "{warned}");
    let o = run(&redis, &["list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["breakers"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["breakers"][0]["name"], "payments");
    assert_eq!(v["skipped"], 2, "{v}");
    assert!(v["skipped_names"].as_array().unwrap().iter().any(|n| n == "a b"), "{v}");
}

/// Issue 22, item 3: `open`, `close` and `reset` as a Redis user that may not publish on the
/// events channel (Redis 7's `acl-pubsub-default resetchannels`). Where the server tells ahead
/// (>= 7.0) each write that would make a transition is refused: exit 77 (EX_NOPERM), one line
/// on stderr saying what to grant, nothing on stdout, nothing written. Before 7.0 the write is
/// made: the result on stdout, the warning on stderr, exit 1. `status` says when a state's
/// event was refused (here a trip by a process that may not publish), in text and JSON.
#[tokio::test]
async fn control_commands_the_fleet_would_not_hear_of_are_refused_or_fail_with_a_warning() {
    let redis = private_redis().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "ops", "reset", "on", "nopass", "~*", "resetchannels", "+@all"])
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let ops_url = redis.url.replacen("redis://", "redis://ops:x@", 1);
    let as_ops = |args: &[&str]| cli(&redis).env("REDIS_URL", &ops_url).args(args).output().expect("run redis-breaker");
    let history = async |name: &str| -> u64 {
        redis::cmd("XLEN").arg(key(name, "history")).query_async(&mut redis.conn().await).await.unwrap()
    };
    let name = unique("cli-unannounced");
    // Forced closed by an operator who may publish, so that each command below is a transition.
    assert_eq!(code(&run(&redis, &["close", &name])), 0);
    let before = (state_hash(&redis, &name).await, history(&name).await);

    if redis.version().await >= (7, 0) {
        for args in [vec!["open", name.as_str()], vec!["close", &name, "--for", "1m"], vec!["reset", &name]] {
            let o = as_ops(&args);
            assert_eq!(code(&o), 77, "{args:?}: {}", stderr(&o));
            assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
            let said = stderr(&o);
            assert_eq!(said.lines().count(), 1, "{said}");
            assert!(
                said.starts_with("redis-breaker: the redis user may not publish on breaker:events")
                    && said.contains("nothing was written; grant it &breaker:events (and +publish) in its ACL"),
                "{said}"
            );
            assert_eq!((state_hash(&redis, &name).await, history(&name).await), before, "{args:?} wrote");
        }
    } else {
        let o = as_ops(&["open", &name]);
        assert_eq!(code(&o), 1, "written, not announced: {}", stderr(&o));
        assert!(stdout(&o).contains(&format!("{name}: forced open until")), "the usual result: {}", stdout(&o));
        let said = stderr(&o);
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(said.starts_with("redis-breaker: warning: breaker ") && said.contains("not published"), "{said}");
        assert_eq!(state_hash(&redis, &name).await["state"], "forced_open");
        let o = as_ops(&["--json", "reset", &name]);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!((&v["state"], &v["announced"]), (&serde_json::json!("closed"), &serde_json::json!(false)), "{v}");
    }

    // A trip by a process that may not publish: `status` says its event was refused.
    let tripped = unique("cli-unannounced-trip");
    let o = as_ops(&["exec", &tripped, "--failure-threshold", "1", "--", "false"]);
    assert_eq!(code(&o), 1, "the command's own status: {}", stderr(&o));
    assert_eq!(state_hash(&redis, &tripped).await["announced"], "0");
    let o = run(&redis, &["status", &tripped]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("\nannounced:   no (its event was refused"), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&run(&redis, &["status", &tripped, "--json"]))).unwrap();
    assert_eq!(v["announced"], false, "{v}");
    // The first breaker: as the last announced write left it (>= 7.0), or unannounced (6.2).
    let announced = redis.version().await >= (7, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&run(&redis, &["status", &name, "--json"]))).unwrap();
    assert_eq!(v["announced"], announced, "{v}");
    let text = stdout(&run(&redis, &["status", &name]));
    assert_eq!(text.contains("announced:   no"), !announced, "{text}");
}

/// Every CLI command works under the documented minimal ACL (`docs/` or the README: the line
/// `ACL SETUSER breaker ...`).
#[tokio::test]
async fn every_command_works_under_the_documented_minimal_acl() {
    let redis = private_redis().await;
    let url = documented_acl_user(&redis, &[]).await;
    let name = unique("cli-acl");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
            .args(["--url", &url])
            .args(args)
            .env_remove("REDIS_URL")
            .output()
            .expect("the CLI runs");
        assert!(out.status.success(), "{args:?} under the minimal ACL: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(&["open", &name, "--for", "1m", "--note", "acl test"]);
    assert!(cli(&["list"]).contains(&name));
    cli(&["status", &name]);
    cli(&["close", &name]);
    cli(&["reset", &name]);
    cli(&["exec", &name, "--", "true"]);
    let history = cli(&["history", &name]);
    assert!(history.contains("acl test") && history.contains("forced_open"), "{history}");
}

/// The CLI takes the same URLs and certificates.
#[test]
fn speaks_tls_with_the_same_certificates_as_the_library() {
    let redis = support::tls::tls_redis();
    let name = support::unique("tls-cli");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
            .args(["--url", &redis.url()])
            .arg("--tls-ca")
            .arg(redis.certs.join("ca.crt"))
            .arg("--tls-cert")
            .arg(redis.certs.join("client.crt"))
            .arg("--tls-key")
            .arg(redis.certs.join("client.key"))
            .args(args)
            .env_remove("REDIS_URL")
            .output()
            .expect("the CLI runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(&["open", &name]);
    let status = cli(&["--json", "status", &name]);
    assert!(status.contains("forced_open"), "{status}");
    // Without the CA the handshake fails, and the CLI says it was TLS.
    let out = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
        .args(["--url", &redis.url(), "status", &name])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("TLS"), "{said}");
}
