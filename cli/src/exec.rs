//! `exec NAME [options] -- CMD [ARGS...]`: run a command through a shared breaker.

use crate::{Failure, duration};
use clap::{Args, ValueEnum};
use redis_breaker::{Client, Config, Degraded};
use std::process::ExitCode;
use std::time::Duration;

const EXIT_TIMEOUT: u8 = 124;
const EXIT_CANNOT_EXECUTE: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DegradedArg {
    Local,
    FailOpen,
    FailClosed,
}

impl From<DegradedArg> for Degraded {
    fn from(d: DegradedArg) -> Degraded {
        match d {
            DegradedArg::Local => Degraded::Local,
            DegradedArg::FailOpen => Degraded::FailOpen,
            DegradedArg::FailClosed => Degraded::FailClosed,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The breaker's name.
    name: String,
    #[command(flatten, next_help_heading = "Breaker options (as in Config; defaults as in the library)")]
    breaker: BreakerOpts,
    /// Exit status when the breaker rejects the command (it does not run).
    #[arg(long, default_value_t = 75)]
    rejected_exit_code: u8,
    /// Exit statuses besides 0 that count as success, e.g. 1,3.
    #[arg(long, value_delimiter = ',')]
    success_codes: Vec<i32>,
    /// What decides when Redis is unreachable.
    #[arg(long, value_enum, default_value = "local")]
    pub(crate) degraded: DegradedArg,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

/// The breaker's config, as options (defaults as in the library).
#[derive(Debug, Args)]
struct BreakerOpts {
    /// Consecutive failures that open the breaker (0 turns the rule off).
    #[arg(long)]
    failure_threshold: Option<u32>,
    /// Probe successes that close it.
    #[arg(long)]
    success_threshold: Option<u32>,
    /// Probes out at once across the fleet.
    #[arg(long)]
    half_open_max_probes: Option<u32>,
    /// Open time after the first trip.
    #[arg(long, value_parser = duration)]
    base_recovery: Option<Duration>,
    /// Cap on the open time.
    #[arg(long, value_parser = duration)]
    max_recovery: Option<Duration>,
    /// Growth of the open time per further trip.
    #[arg(long)]
    multiplier: Option<f64>,
    /// Spread of the open time, in [0, 1).
    #[arg(long)]
    jitter: Option<f64>,
    /// How long a probe holds its permit.
    #[arg(long, value_parser = duration)]
    probe_lease: Option<Duration>,
    /// Longest the command may run; it is then killed (exit 124) and counted as a failure.
    #[arg(long, value_parser = duration)]
    call_timeout: Option<Duration>,
    /// Failure-rate rule threshold, e.g. 0.5.
    #[arg(long)]
    failure_rate: Option<f64>,
    /// Calls in the window before the rate rule may trip.
    #[arg(long)]
    minimum_calls: Option<u32>,
    /// Length of the rate rule's window.
    #[arg(long, value_parser = duration)]
    window: Option<Duration>,
    /// The consecutive-failure count starts again after this long without a failure.
    #[arg(long, value_parser = duration)]
    failure_expiry: Option<Duration>,
    /// Shadow mode: decide and record as usual, but run CMD even when the breaker would reject
    /// it (stderr says so).
    #[arg(long)]
    shadow: bool,
    /// Distinct hosts whose own failures must meet the trip rule before the fleet opens.
    /// Each run is its own process making one call: it needs --failure-threshold 1 (or a rate
    /// rule with --minimum-calls 1), so a failing run reports itself, and failing runs from N
    /// hosts within --window open the breaker. Runs on one host are one reporter (the host's
    /// name) unless REDIS_BREAKER_REPORTER_ID tells them apart.
    #[arg(long)]
    quorum: Option<u32>,
    /// The fleet opens only when at least this fraction of the hosts that ran within --window
    /// reported, e.g. 0.3 (and --quorum of them); decided once the fleet's processes key has
    /// collected for a fifth of --window.
    #[arg(long)]
    quorum_fraction: Option<f64>,
    /// Gentle recovery: after the breaker closes on its probes, the fleet admits a fraction of
    /// the runs rising from --ramp-start to all over this long; a run held back exits 75 like a
    /// rejection ("recovering: 35% admitted"). E.g. 10s; off by default.
    #[arg(long, value_parser = duration)]
    recovery_ramp: Option<Duration>,
    /// Where a recovery ramp starts: the fraction of runs admitted just after the close, in
    /// [0.001, 1] (default 0.1).
    #[arg(long)]
    ramp_start: Option<f64>,
}

impl BreakerOpts {
    fn config(&self) -> Result<Config, Failure> {
        let mut b = Config::builder();
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { b = b.$field(v); } )* };
        }
        set!(failure_threshold, success_threshold, half_open_max_probes, base_recovery, max_recovery, multiplier);
        set!(
            jitter,
            probe_lease,
            call_timeout,
            failure_rate,
            minimum_calls,
            window,
            failure_expiry,
            quorum,
            quorum_fraction,
            recovery_ramp,
            ramp_start
        );
        if self.shadow {
            b = b.shadow(true);
        }
        // A lease too short for the default call timeout lowers the timeout with it, keeping
        // the margin the library requires (call_timeout + call_timeout/10 <= probe_lease).
        if let (Some(lease), None) = (self.probe_lease, self.call_timeout) {
            b = b.call_timeout((lease * 10 / 11).min(redis_breaker::Config::DEFAULT_CALL_TIMEOUT));
        }
        let config = b.build()?;
        // Under a quorum each run is one process making one call: only a rule that one failed
        // call meets lets a failing run open for itself and report; with any other the breaker
        // would never open.
        let rate_rule = config.failure_rate().is_some() || config.slow_call_rate().is_some();
        let one_call_opens = config.failure_threshold() == 1 || (rate_rule && config.minimum_calls() == 1);
        if config.under_quorum() && !one_call_opens {
            return Err(Failure::Usage(
                "--quorum and --quorum-fraction need --failure-threshold 1 (or a rate rule with \
                 --minimum-calls 1): each exec run is one process making one call, so with any other \
                 rule no run would ever report and the breaker would never open"
                    .into(),
            ));
        }
        Ok(config)
    }
}

impl ExecArgs {
    /// The client's flush interval: the library wants ten flushes per rate window, so a short
    /// `--window` shortens it (one `exec` flushes once, at its end, anyway).
    pub(crate) fn flush_interval(&self) -> Duration {
        let default = redis_breaker::ClientConfig::DEFAULT_FLUSH_INTERVAL;
        self.breaker.window.map_or(default, |w| (w / 10).clamp(Duration::from_millis(1), default))
    }
}

pub(crate) async fn run(client: Client, args: &ExecArgs) -> Result<ExitCode, Failure> {
    // Handlers first: a SIGINT or SIGTERM that arrives while the permit is being taken is
    // queued, forwarded once CMD runs, and the permit released.
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate())?;
    let config = args.breaker.config()?;
    let call_timeout = config.call_timeout();
    let breaker = client.breaker(&args.name, config)?;
    let permit = match breaker.acquire().await {
        Ok(p) => p,
        Err(rejected) => {
            if rejected.admitted().is_some() {
                // Held back by a recovery ramp: the breaker is closed and says how much it admits.
                eprintln!("redis-breaker: {}: {rejected}", args.name);
            } else {
                eprintln!("redis-breaker: {} is {}; {}", args.name, rejected.state, retry_text(rejected.retry_after()));
            }
            finish(&client).await;
            return Ok(ExitCode::from(args.rejected_exit_code));
        }
    };
    let (program, rest) = args.command.split_first().ok_or_else(|| Failure::Usage("no command given".into()))?;
    // CMD leads a process group of its own: signals and the call-timeout kill reach everything
    // it started, not only CMD.
    let mut child = match tokio::process::Command::new(program).args(rest).process_group(0).kill_on_drop(true).spawn() {
        Ok(child) => child,
        Err(e) => {
            // The downstream was never called: release the permit, record nothing.
            permit.release().await;
            finish(&client).await;
            eprintln!("redis-breaker: cannot run {program}: {e}");
            let code = if e.kind() == std::io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_EXECUTE };
            return Ok(ExitCode::from(code));
        }
    };
    let pid = child.id();
    let deadline = tokio::time::sleep(call_timeout);
    tokio::pin!(deadline);
    let mut interrupted = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut deadline, if !interrupted => {
                forward(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.kill().await;
                permit.failure_described(&format!("{program}: killed after {}ms (--call-timeout)", call_timeout.as_millis())).await;
                finish(&client).await;
                eprintln!("redis-breaker: {program} ran longer than {}ms; killed", call_timeout.as_millis());
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
            _ = sigint.recv() => { forward(pid, nix::sys::signal::Signal::SIGINT); interrupted = true; }
            _ = sigterm.recv() => { forward(pid, nix::sys::signal::Signal::SIGTERM); interrupted = true; }
        }
    };
    let status = status.map_err(|e| Failure::Other(format!("waiting for {program}: {e}")))?;
    let code = exit_code(&status);
    if interrupted {
        // Stopped from outside: says nothing about the downstream; the lease is released.
        permit.release().await;
    } else if code == 0 || args.success_codes.contains(&code) {
        permit.success().await;
    } else {
        permit.failure_described(&format!("{program}: exit status {code}")).await;
    }
    finish(&client).await;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Sends what this run recorded before it exits. A flush, not `Client::shutdown`: under a
/// quorum each run is one process making one call, and a failing run's report must outlive it
/// (failing runs from N hosts within --window open the breaker), while `shutdown` withdraws it.
async fn finish(client: &Client) {
    let _ = client.flush().await;
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, Failure> {
    tokio::signal::unix::signal(kind).map_err(|e| Failure::Other(format!("cannot handle signals: {e}")))
}

/// Sends `sig` to CMD's process group (CMD and everything it started).
fn forward(pid: Option<u32>, sig: nix::sys::signal::Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// The command's exit status, or 128+N when signal N ended it.
fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

fn retry_text(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("retry after {:.1}s", d.as_secs_f64()),
        None => "forced open until `redis-breaker reset`".to_string(),
    }
}
