//! The faults of a run: their kinds (one table), what one applied fault was, and the seeded
//! schedule of them. The nemesis applies them; the checker reads them.

use crate::setup;
use crate::topology::Kind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The kinds of fault, each with the name the schedule, `--faults` and the report use: the
/// enum, the list of all and the names are written from this one table.
macro_rules! fault_kinds {
    ($($kind:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) enum FaultKind {
            $($kind,)*
        }

        impl FaultKind {
            const ALL: &[FaultKind] = &[$(FaultKind::$kind,)*];

            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(FaultKind::$kind => $name,)*
                }
            }
        }
    };
}

fault_kinds! {
    KillRestart => "kill_restart",
    Rollback => "rollback",
    Pause => "pause",
    Failover => "failover",
    SlotMigration => "slot_migration",
    Blackhole => "blackhole",
    Delay => "delay",
    SilentSubscription => "silent_subscription",
    PubsubKill => "pubsub_kill",
    ScriptFlush => "script_flush",
    WorkerRestart => "worker_restart",
    OperatorWrite => "operator_write",
    OperatorNoPublish => "operator_no_publish",
    DeleteKeys => "delete_keys",
    PoisonKey => "poison_key",
    DownstreamOne => "downstream_one",
    DownstreamAll => "downstream_all",
}

impl FaultKind {
    /// Faults of the servers themselves: one at a time.
    fn on_servers(self) -> bool {
        matches!(
            self,
            FaultKind::KillRestart
                | FaultKind::Rollback
                | FaultKind::Pause
                | FaultKind::Failover
                | FaultKind::SlotMigration
        )
    }

    /// Faults that may let a lease expire in Redis while its worker still calls: a probe cap
    /// is judged on Redis's clock, not on the workers'.
    pub(crate) fn disturbs_probes(self) -> bool {
        self.on_servers()
            || matches!(
                self,
                FaultKind::Blackhole | FaultKind::Delay | FaultKind::WorkerRestart | FaultKind::ScriptFlush
            )
    }

    fn on_downstream(self) -> bool {
        matches!(self, FaultKind::DownstreamOne | FaultKind::DownstreamAll)
    }

    /// Faults after which a state Redis holds (or loses) was not announced to the workers.
    pub(crate) fn loses_data(self) -> bool {
        matches!(self, FaultKind::KillRestart | FaultKind::Rollback | FaultKind::Failover)
    }

    fn available(kind: Kind) -> &'static [FaultKind] {
        use FaultKind::*;
        match kind {
            Kind::Single => &[
                KillRestart,
                Rollback,
                Pause,
                Blackhole,
                Delay,
                SilentSubscription,
                PubsubKill,
                ScriptFlush,
                WorkerRestart,
                OperatorWrite,
                OperatorNoPublish,
                DeleteKeys,
                PoisonKey,
                DownstreamOne,
                DownstreamAll,
            ],
            Kind::Sentinel => &[
                Failover,
                Pause,
                PubsubKill,
                ScriptFlush,
                WorkerRestart,
                OperatorWrite,
                DeleteKeys,
                PoisonKey,
                DownstreamOne,
                DownstreamAll,
            ],
            Kind::Cluster => &[
                KillRestart,
                Pause,
                SlotMigration,
                PubsubKill,
                ScriptFlush,
                WorkerRestart,
                OperatorWrite,
                OperatorNoPublish,
                DeleteKeys,
                PoisonKey,
                DownstreamOne,
                DownstreamAll,
            ],
        }
    }
}

/// One fault of the schedule; `start`/`end` are filled in with the times it really began and
/// ended, `told` for an operator's write (whether the API said all it could not do).
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) kind: FaultKind,
    /// Planned offsets from the run's start, in seconds.
    pub(crate) at: f64,
    pub(crate) lasts: f64,
    /// A worker, a node index or a breaker index, by kind.
    pub(crate) target: usize,
    pub(crate) variant: u32,
    pub(crate) start: f64,
    pub(crate) end: f64,
    /// For a rollback: when the state it rolls back to was saved.
    pub(crate) restore_point: Option<f64>,
    /// For a kill: when the server was dead. What it applied until then is lost; a script sent
    /// later ran on its successor, if at all. Later than `start` by the time it took to learn
    /// which breakers the node held (several round trips, tens of ms on a loaded machine, in
    /// which outcomes still reached the doomed server).
    pub(crate) dead_at: Option<f64>,
    /// The breakers whose keys lived on the node a loss of data hit.
    pub(crate) lost: Vec<String>,
    pub(crate) detail: String,
    /// For an operator's write: whether it was told what could not be done, when something
    /// could not (the event refused). `None`: nothing to tell.
    pub(crate) told: Option<bool>,
}

impl Fault {
    /// Whether this loss of data hit the node that held `breaker`'s keys.
    pub(crate) fn breakers_lost(&self, breaker: &str) -> bool {
        self.lost.iter().any(|b| b == breaker)
    }

    /// The worker this fault concerns alone, if any.
    pub(crate) fn worker(&self) -> Option<usize> {
        match self.kind {
            FaultKind::Blackhole
            | FaultKind::Delay
            | FaultKind::SilentSubscription
            | FaultKind::WorkerRestart
            | FaultKind::DownstreamOne => Some(self.target),
            _ => None,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} target={} variant={} planned +{:.2}s for {:.2}s{}{}",
            self.kind.name(),
            self.target,
            self.variant,
            self.at,
            self.lasts,
            if self.lost.is_empty() { String::new() } else { format!(" lost={}", self.lost.join("+")) },
            if self.detail.is_empty() { String::new() } else { format!(" ({})", self.detail) }
        )
    }
}

pub(crate) fn schedule(
    kind: Kind,
    seed: u64,
    seconds: u64,
    workers: usize,
    only: Option<&[String]>,
) -> Result<Vec<Fault>, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds: Vec<FaultKind> = FaultKind::available(kind)
        .iter()
        .copied()
        .filter(|k| only.is_none_or(|o| o.iter().any(|n| n == k.name())))
        .collect();
    if let Some(o) = only
        && let Some(unknown) = o.iter().find(|n| !FaultKind::ALL.iter().any(|k| k.name() == n.as_str()))
    {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        return Err(format!("unknown fault {unknown}: one of {}", names.join(", ")));
    }
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    let mut faults: Vec<Fault> = Vec::new();
    let mut t = 2.0;
    let end = seconds as f64 - 3.0;
    let mut servers_free_at = 0.0f64;
    let mut downstream_free_at = 0.0f64;
    // Every kind once first (in a seeded order), then at random.
    let mut order: Vec<FaultKind> = kinds.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut n = 0usize;
    while t < end {
        let k = if n < order.len() { order[n] } else { kinds[rng.random_range(0..kinds.len())] };
        n += 1;
        let lasts: f64 = match k {
            FaultKind::KillRestart | FaultKind::Rollback => rng.random_range(0.3..1.2),
            FaultKind::Pause => rng.random_range(0.3..0.8),
            FaultKind::Failover => 6.0,
            FaultKind::SlotMigration => 0.2,
            FaultKind::Blackhole => rng.random_range(1.0..3.0),
            FaultKind::Delay => rng.random_range(1.5..3.0),
            FaultKind::SilentSubscription => rng.random_range(1.5..3.0),
            FaultKind::WorkerRestart => rng.random_range(0.2..1.0),
            FaultKind::OperatorWrite | FaultKind::OperatorNoPublish => rng.random_range(1.0..2.0),
            FaultKind::DownstreamOne | FaultKind::DownstreamAll => rng.random_range(2.0..4.5),
            _ => 0.0,
        };
        let mut at = t;
        if k.on_servers() {
            at = at.max(servers_free_at);
        }
        if k.on_downstream() {
            at = at.max(downstream_free_at);
        }
        if at + lasts > end {
            t += 0.5;
            continue;
        }
        if k.on_servers() {
            servers_free_at = at + lasts + 1.0;
        }
        if k.on_downstream() {
            downstream_free_at = at + lasts + 0.5;
        }
        let target = match k {
            FaultKind::KillRestart | FaultKind::Pause if kind == Kind::Cluster => rng.random_range(0..3),
            FaultKind::DeleteKeys | FaultKind::PoisonKey | FaultKind::OperatorWrite | FaultKind::OperatorNoPublish => {
                rng.random_range(0..setup::BREAKERS.len())
            }
            FaultKind::SlotMigration => rng.random_range(0..3),
            _ => rng.random_range(0..workers),
        };
        faults.push(Fault {
            kind: k,
            at,
            lasts,
            target,
            variant: rng.random_range(0..3),
            start: 0.0,
            end: 0.0,
            restore_point: None,
            dead_at: None,
            lost: Vec::new(),
            detail: String::new(),
            told: None,
        });
        t = at + rng.random_range(0.4..1.6);
    }
    Ok(faults)
}
