//! The property test: random sequences run through the real Lua scripts on a real Redis and
//! through the Rust machine, compared reply by reply and field by field.

use redis_breaker_test_support as support;

mod case;
mod checks;
mod stats;
mod steps;

use crate::config::Config;
use crate::machine::Machine;
use crate::name::Keys;
use crate::protocol::{Batch, Op, Params, Record, RecordOutcome, Report};
use crate::store::{RedisStore, StoreSettings};
use case::Case;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, FileFailurePersistence, TestRunner};
use std::time::Duration;
use steps::{Step, config, step};

/// Permits a case may hold at once.
const SLOTS: usize = 4;
/// Processes (client ids) that record outcomes and report under the quorum rule.
const REPORTERS: usize = 3;
/// The process whose Redis user may not publish on any channel (`resetchannels`): its
/// transitions are not announced.
const QUIET: usize = REPORTERS - 1;
/// The events channel of the other processes.
const CHANNEL: &str = "model:events";

/// A connection as a Redis user that may run every command but publish on no channel (Redis
/// 7's `acl-pubsub-default resetchannels`): the `QUIET` process.
async fn quiet_conn(server: &support::TestRedis) -> redis::aio::MultiplexedConnection {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "rb-model-quiet", "reset", "on", "nopass", "~*", "resetchannels", "+@all"])
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    let (scheme, rest) = server.url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://rb-model-quiet:x@{host}");
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// The client id of reporter `i`.
fn reporter_id(i: usize) -> String {
    format!("reporter-{i}")
}

/// Runs one case: each step changes the world or runs on both sides; then the metrics.
async fn run_case(
    stores: &[RedisStore],
    conn: &mut redis::aio::MultiplexedConnection,
    config: Config,
    second_window: u64,
    tells_ahead: bool,
    steps: Vec<(Step, f64)>,
) -> Result<(), TestCaseError> {
    let mut case = Case::new(config, second_window, tells_ahead);
    for (step, rand) in steps {
        if case.world(conn, &step).await {
            continue;
        }
        let Some(ops) = case.ops(&step) else { continue };
        let second = ops.3;
        case.call(stores, &step, ops, rand).await?;
        case.check_stored(conn, &step, second).await?;
    }
    case.check_metrics(conn).await
}

/// A busy closed breaker's keys are kept alive: once a tenth of the shorter TTL has passed since
/// they were last set in full (`ttl_at`), the next script call sets both again, in Lua and in
/// the Rust twin (issue 22, item 9: the property test's configs never crossed it).
#[test]
fn a_busy_keys_ttls_are_set_in_full_when_due() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server = rt.block_on(support::redis());
    rt.block_on(async {
        let mut conn = server.conn().await;
        let settings = StoreSettings {
            op_timeout: Duration::from_secs(5),
            channel: CHANNEL.to_string(),
            origin: "ttl-client".to_string(),
            reporter: "ttl-client".to_string(),
            sharded: false,
            threshold: 3,
            functions: false,
        };
        let store = RedisStore::new(Box::new(conn.clone()), None, settings);
        let config =
            Config::builder().state_ttl(Duration::from_secs(60)).metrics_ttl(Duration::from_secs(600)).build().unwrap();
        let p = Params::new(&config);
        let keys = Keys::new("breaker", &support::unique("ttl-due"));
        let mut model = Machine::default();
        let t0 = 1_700_000_000_000u64;
        let failure = Op::Record(Record { outcome: RecordOutcome::Failure, ..Record::flush(Batch::default()) });
        let flush = Op::Record(Record::flush(Batch::default()));
        let pttl = async |conn: &mut redis::aio::MultiplexedConnection, key: &str| -> i64 {
            redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
        };
        let ttl_at = async |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
            redis::cmd("HGET").arg(keys.state()).arg("ttl_at").query_async(conn).await.unwrap()
        };
        for (at, op) in [(t0, &failure), (t0 + 5_999, &flush), (t0 + 6_000, &flush)] {
            // Cut both TTLs short (real time) before each call, so that a renewal shows.
            for key in [&keys.all[0], &keys.all[3]] {
                let _: () = redis::cmd("PEXPIRE").arg(key).arg(5_000).query_async(&mut conn).await.unwrap();
            }
            store.run(&keys, &p, op, Some(at), 0.5).await.unwrap();
            model.run(&p, at, 0.5, 1000, "ttl-client", op);
            let (state, metrics) = (pttl(&mut conn, &keys.all[0]).await, pttl(&mut conn, &keys.all[3]).await);
            let renewed = at != t0 + 5_999;
            let want = if renewed { at } else { t0 };
            assert_eq!(ttl_at(&mut conn).await, want, "lua: ttl_at after the call at t0 + {}ms", at - t0);
            assert_eq!(model.ttl_at(), want, "rust: ttl_at after the call at t0 + {}ms", at - t0);
            if renewed {
                assert!(state > 58_000, "lua: state TTL {state} set in full at t0 + {}ms", at - t0);
                assert!(metrics > 598_000, "lua: metrics TTL {metrics} set in full at t0 + {}ms", at - t0);
            } else {
                assert!(state <= 5_000 && metrics <= 5_000, "not due yet: left as they were ({state}, {metrics})");
            }
        }
    });
}

/// Makes a case the plainest breaker: the consecutive rule alone (at least 2), no quorum, and
/// outcomes of permits that are neither slow nor reports, where a failure that only counts goes as
/// `lua/count.lua` (with the library): the other cases rarely make one.
fn plain_case(config: &mut Config, steps: &mut [(Step, f64)]) {
    config.failure_threshold = config.failure_threshold.max(2);
    config.failure_rate = None;
    config.slow_call_rate = None;
    config.quorum = 1;
    config.quorum_fraction = None;
    for (step, _) in steps {
        if let Step::Finish { slow, report, .. } = step {
            *slow = false;
            *report = Report::None;
        }
    }
}

#[test]
fn lua_scripts_and_the_rust_machine_agree_step_by_step() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server = rt.block_on(support::redis());
    let tells_ahead = rt.block_on(server.version()) >= (7, 0);
    // Each case sends the scripts either as FCALL of the library (where the server has
    // Functions) or with EVALSHA, from one store per reporter (client id).
    let (stores, conn) = rt.block_on(async {
        let conn = server.conn().await;
        let quiet = quiet_conn(&server).await;
        let store = |functions, reporter| {
            let conn = if reporter == QUIET { quiet.clone() } else { conn.clone() };
            let settings = StoreSettings {
                op_timeout: Duration::from_secs(5),
                channel: CHANNEL.to_string(),
                // Events name the client; the quorum's keys its identity (which must differ).
                origin: format!("client-of-{}", reporter_id(reporter)),
                reporter: reporter_id(reporter),
                sharded: false,
                threshold: 3,
                functions,
            };
            RedisStore::new(Box::new(conn), None, settings)
        };
        let stores: [Vec<RedisStore>; 2] =
            [false, true].map(|functions| (0..REPORTERS).map(|r| store(functions, r)).collect());
        (stores, conn)
    });
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let runner = |cases, file| {
        TestRunner::new(RunnerConfig {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
            ..RunnerConfig::default()
        })
    };
    let strategy = (config(), 500..3000u64, prop::collection::vec((step(), 0.0..1.0f64), 1..80), any::<bool>());
    runner(cases, "proptest-regressions/model_tests.txt")
        .run(&strategy, |(config, second_window, steps, functions)| {
            let stores = &stores[usize::from(functions)];
            rt.block_on(run_case(stores, &mut conn.clone(), config, second_window, tells_ahead, steps))
        })
        .unwrap();
    // The plainest breakers, where a failure that only counts goes as count.lua (the cases above
    // rarely make one), with the library where the server has it; their own regression file.
    let strategy = (config(), 500..3000u64, prop::collection::vec((step(), 0.0..1.0f64), 1..80));
    runner(cases, "proptest-regressions/model_tests_plain.txt")
        .run(&strategy, |(mut config, second_window, mut steps)| {
            plain_case(&mut config, &mut steps);
            rt.block_on(run_case(&stores[1], &mut conn.clone(), config, second_window, tells_ahead, steps))
        })
        .unwrap();
    if std::env::var_os("MODEL_STATS").is_some() {
        stats::print();
    }
    // Both ways were taken: the library where the server has Functions (>= 7.0), else EVALSHA.
    let stats = rt.block_on(server.commandstats());
    let fcalls = stats.get("fcall").copied().unwrap_or(0);
    assert!(stats.get("evalsha").copied().unwrap_or(0) > 0, "no case ran with EVALSHA");
    let has_functions = rt.block_on(server.version()) >= (7, 0);
    assert_eq!(fcalls > 0, has_functions, "FCALL calls: {fcalls}; the server has Functions: {has_functions}");
    assert_eq!(stores[1][0].script_mode(), if has_functions { "functions" } else { "evalsha" });
    if has_functions {
        assert!(stats::get(case::COUNT_FIRST) > 0, "no failure went as count.lua: the plain cases lost their point");
    }
}
