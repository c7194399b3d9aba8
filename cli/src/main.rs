//! `redis-breaker`: inspect and control shared circuit breakers, and run commands through one.
//!
//! Exit status: 0 ok, 2 bad usage or input, 69 Redis unreachable, 77 the Redis user lacks a
//! permission (nothing was written; stderr says what to grant), 1 otherwise — among them an
//! `open`, `close` or `reset` that was written but not announced (Redis < 7.0); `exec` returns
//! the command's own status, 75 when rejected, 124 when `--call-timeout` killed it, 126/127 when
//! it could not be run, 128+N when it died of signal N. Results go to stdout, errors (one line)
//! to stderr.
//! Unix only: `exec` runs commands in process groups of their own and forwards signals to them.

#[cfg(not(unix))]
compile_error!("the redis-breaker CLI runs on Unix only: `exec` forwards signals to process groups");

#[cfg(feature = "console")]
mod console;
mod exec;
mod output;

use clap::{Parser, Subcommand};
use redis_breaker::{Client, ClientConfig, ConfigError, Degraded, StoreError};
use std::process::ExitCode;
use std::time::Duration;

/// Inspect and control circuit breakers shared through Redis.
#[derive(Debug, Parser)]
#[command(name = "redis-breaker", version, about, after_help = EXIT_STATUS)]
struct Cli {
    /// Redis URL.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    url: String,
    /// Key prefix of the breakers.
    #[arg(
        long,
        global = true,
        env = "REDIS_BREAKER_PREFIX",
        default_value = "breaker",
        help_heading = "Global options"
    )]
    prefix: String,
    /// Print JSON instead of tables (one object per line for `watch`).
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// Deadline of each Redis operation, e.g. 500ms or 2s.
    #[arg(long, global = true, default_value = "1s", value_parser = duration, help_heading = "Global options")]
    timeout: Duration,
    /// Log to stderr: -v the library's warnings and transitions, -vv debug. `RUST_LOG` (e.g.
    /// `redis_breaker=debug`) also works. By default only the one-line error of a failure.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    verbose: u8,
    /// TLS: a CA certificate (PEM file) to trust instead of the system's roots; needs a
    /// rediss:// URL.
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    tls_ca: Option<std::path::PathBuf>,
    /// TLS: a client certificate (PEM file), with --tls-key.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key", help_heading = "Global options")]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS: the client certificate's private key (PEM file), with --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert", help_heading = "Global options")]
    tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every breaker under the prefix: name, state, failures, retry-after, calls, failure rate.
    List,
    /// One breaker's state, probes in flight, metrics and key TTLs.
    Status {
        /// The breaker's name.
        name: String,
    },
    /// Force a breaker open for the whole fleet.
    #[command(after_help = CONTROL_EXIT_STATUS)]
    Open {
        /// The breaker's name.
        name: String,
        /// How long; without it, until `reset`.
        #[arg(long = "for", value_parser = duration)]
        duration: Option<Duration>,
        /// A note kept in the breaker's history, e.g. "deploy 4711 rollback".
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Force a breaker closed (it never trips) for the whole fleet.
    #[command(after_help = CONTROL_EXIT_STATUS)]
    Close {
        /// The breaker's name.
        name: String,
        /// How long; without it, until `reset`.
        #[arg(long = "for", value_parser = duration)]
        duration: Option<Duration>,
        /// A note kept in the breaker's history.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Return a breaker to closed, with failures, trips and probes cleared.
    #[command(after_help = CONTROL_EXIT_STATUS)]
    Reset {
        /// The breaker's name.
        name: String,
        /// A note kept in the breaker's history.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// A breaker's last transitions, newest first: when, from, to, why, and operators' notes.
    History {
        /// The breaker's name.
        name: String,
        /// How many (Redis keeps about 100).
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Print transitions as they happen (all breakers, or the names given).
    Watch {
        /// Breakers to watch; all when none.
        names: Vec<String>,
    },
    /// Run a command through a breaker: rejected commands do not run.
    Exec(Box<exec::ExecArgs>),
    /// Serve the operator console: a live page, a JSON API, Server-Sent Events and
    /// Prometheus metrics for every breaker under the prefix (loopback by default).
    #[cfg(feature = "console")]
    Serve(console::ServeArgs),
    /// Print a shell completion script, e.g. `redis-breaker completions bash > /etc/bash_completion.d/redis-breaker`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    redis_breaker::duration::parse(s)
}

/// The exit statuses, for `--help`.
const EXIT_STATUS: &str = "Exit status: 0 ok; 1 failed (or written but not announced: see `open --help`); 2 bad usage \
     or input; 69 Redis unreachable; 77 the Redis user lacks a permission, nothing was written (EX_NOPERM). \
     `exec`: the command's own status, 75 rejected (it did not run), 124 killed by --call-timeout, 126/127 \
     could not be run, 128+N died of signal N.";

/// What `open`, `close` and `reset` exit with when their event cannot reach the fleet.
const CONTROL_EXIT_STATUS: &str = "Exit status: 0 written and announced to every process; 77 (EX_NOPERM) refused, \
     nothing written: the Redis user may not publish on the events channel, so no process would hear \
     of it (Redis >= 7.0 tells ahead; stderr says what to grant); 1 written but not announced (Redis \
     < 7.0 tells only afterwards: the result on stdout, a warning on stderr; processes holding an \
     older snapshot keep deciding from it until it expires); 2 bad input; 69 Redis unreachable.";

/// Why the tool stopped, and with which status.
enum Failure {
    Usage(String),
    Unreachable(String),
    /// The Redis user lacks a permission; nothing was written.
    NoPerm(String),
    Other(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(e) => Failure::Usage(e.to_string()),
            e @ (StoreError::PublishDenied { .. } | StoreError::Denied { .. }) => Failure::NoPerm(e.to_string()),
            e if e.is_outage() => Failure::Unreachable(e.to_string()),
            e => Failure::Other(e.to_string()),
        }
    }
}

/// A failure, or an operator's write that was made but not announced.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNAVAILABLE: u8 = 69;
/// EX_NOPERM (sysexits): the Redis user may not do what was asked; nothing was written.
const EXIT_NOPERM: u8 = 77;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logs(cli.verbose);
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "redis-breaker", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(Failure::Other(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(f) => fail(f),
    }
}

/// Logs go to stderr: `RUST_LOG` when set (targets and levels, e.g. `redis_breaker=debug`),
/// else errors only (each failure is one line on stderr), warnings and info with `-v`, debug
/// with `-vv`.
fn logs(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match verbose {
        0 => LevelFilter::ERROR,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(true);
    let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
}

fn fail(f: Failure) -> ExitCode {
    let (code, text) = match f {
        Failure::Usage(t) => (EXIT_USAGE, t),
        Failure::Unreachable(t) => (EXIT_UNAVAILABLE, t),
        Failure::NoPerm(t) => (EXIT_NOPERM, t),
        Failure::Other(t) => (EXIT_FAILED, t),
    };
    eprintln!("redis-breaker: {text}");
    ExitCode::from(code)
}

async fn client(cli: &Cli, degraded: Degraded, flush_interval: Duration) -> Result<Client, Failure> {
    let config = ClientConfig::builder()
        .prefix(cli.prefix.as_str())
        .op_timeout(cli.timeout)
        .degraded(degraded)
        .cache_ttl(Duration::ZERO)
        .flush_interval(flush_interval)
        .store_failure_threshold(1)
        .build()?;
    if cli.tls_ca.is_some() || cli.tls_cert.is_some() {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))
        };
        let mut tls = redis_breaker::TlsOptions::new();
        if let Some(ca) = &cli.tls_ca {
            tls = tls.ca_pem(read(ca)?);
        }
        if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
            tls = tls.client_pem(read(cert)?, read(key)?);
        }
        return Ok(Client::connect_tls(&cli.url, config, tls).await?);
    }
    Ok(Client::connect_with(&cli.url, config).await?)
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    if let Command::Exec(args) = &cli.command {
        let degraded = args.degraded.into();
        return exec::run(client(&cli, degraded, args.flush_interval()).await?, args).await;
    }
    let client = client(&cli, Degraded::FailClosed, redis_breaker::ClientConfig::DEFAULT_FLUSH_INTERVAL).await?;
    #[cfg(feature = "console")]
    if let Command::Serve(args) = &cli.command {
        return console::serve(client, args).await;
    }
    let out = output::Out { json: cli.json };
    match &cli.command {
        Command::List => {
            let listing = listing(&client).await?;
            let mut statuses = Vec::new();
            for name in &listing.names {
                statuses.push(breaker(&client, name)?.status().await?);
            }
            out.list(&statuses, &listing.skipped);
            if !listing.skipped.is_empty() {
                eprintln!(
                    "redis-breaker: skipped {} key(s) under the prefix whose name cannot be a breaker: {}",
                    listing.skipped.len(),
                    shown_names(&listing.skipped)
                );
            }
        }
        Command::Status { name } => out.status(&breaker(&client, name)?.status().await?),
        Command::Open { name, duration, note } => {
            let b = breaker(&client, name)?;
            let written = b.force_open_noted(*duration, note).await?;
            out.control(&b.status().await?, "forced open", *duration);
            return Ok(announced(&written));
        }
        Command::Close { name, duration, note } => {
            let b = breaker(&client, name)?;
            let written = b.force_close_noted(*duration, note).await?;
            out.control(&b.status().await?, "forced closed", *duration);
            return Ok(announced(&written));
        }
        Command::Reset { name, note } => {
            let b = breaker(&client, name)?;
            let written = b.reset_noted(note).await?;
            out.control(&b.status().await?, "reset", None);
            return Ok(announced(&written));
        }
        Command::History { name, count } => out.history(&breaker(&client, name)?.history(*count).await?),
        Command::Watch { names } => return watch(&client, names, &out).await,
        Command::Exec(_) | Command::Completions { .. } => {}
        #[cfg(feature = "console")]
        Command::Serve(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// How an operator's write that was made ends: 0 when its event went out, else (Redis < 7.0,
/// which cannot refuse it ahead) the warning on stderr and 1: the breaker is in its new state in
/// Redis, but processes holding an older snapshot keep deciding from it until it expires.
fn announced(written: &redis_breaker::Snapshot) -> ExitCode {
    match written.unannounced_warning() {
        None => ExitCode::SUCCESS,
        Some(warning) => {
            eprintln!("redis-breaker: warning: {warning}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The names found under the prefix, split: those of breakers, and those that cannot be one
/// (a key written by something else or by hand, e.g. `breaker:{a b}:metrics`), which are
/// skipped so that one bad key hides no breaker.
pub(crate) struct Listing {
    pub(crate) names: Vec<String>,
    pub(crate) skipped: Vec<String>,
}

pub(crate) async fn listing(client: &Client) -> Result<Listing, StoreError> {
    let (names, skipped) =
        client.breakers().await?.into_iter().partition(|name| redis_breaker::name::validate_name(name).is_ok());
    Ok(Listing { names, skipped })
}

/// Names that cannot be breakers, for one line of text: each quoted and escaped (they are
/// anyone's bytes), at most ten and how many more.
fn shown_names(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = names.iter().take(SHOWN).map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

fn breaker(client: &Client, name: &str) -> Result<redis_breaker::Breaker, Failure> {
    Ok(client.breaker(name, redis_breaker::Config::default())?)
}

async fn watch(client: &Client, names: &[String], out: &output::Out) -> Result<ExitCode, Failure> {
    for name in names {
        redis_breaker::name::validate_name(name)?;
    }
    let mut events = client.subscribe_all();
    let mut said = false;
    let started = std::time::Instant::now();
    loop {
        if !said && client.events_subscribed() {
            eprintln!("redis-breaker: watching {}:events", client.config().prefix());
            said = true;
        }
        if !said && started.elapsed() > client.config().op_timeout() * 5 {
            return Err(Failure::Unreachable("could not subscribe to events: redis is unreachable".into()));
        }
        let next = tokio::select! {
            e = tokio::time::timeout(Duration::from_millis(50), events.recv()) => e,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        match next {
            Ok(Some(e)) if names.is_empty() || names.contains(&e.name) => out.event(&e),
            Ok(None) => return Ok(ExitCode::SUCCESS),
            _ => {}
        }
    }
}
