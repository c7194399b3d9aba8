//! Gentle recovery: after half-open -> closed on its probes' successes, a breaker with a
//! `recovery_ramp` admits a rising fraction of every process's calls; forced states, `reset` and
//! a new trip end the ramp; a ramp set by hand cannot hold a fleet back.

use crate::support::*;
use redis_breaker::{Breaker, Config, State};
use std::time::Duration;

fn ramped(ramp: Duration) -> Config {
    Config::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .base_recovery(Duration::from_millis(50))
        .max_recovery(Duration::from_millis(50))
        .jitter(0.0)
        .recovery_ramp(ramp)
        .ramp_start(0.1)
        .build()
        .unwrap()
}

/// Trips `b`, waits out the recovery timeout and closes it with one successful probe.
async fn trip_and_recover(b: &Breaker) {
    fail(b).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(70)).await;
    let probe = b.acquire().await.expect("the probe after the recovery timeout");
    assert!(probe.is_probe());
    probe.success().await;
    assert_eq!(b.state(), State::Closed);
}

/// Asks `n` permits at once (each released unused): how many were let through, and the
/// fractions the ramp said it admitted when it held one back.
async fn admitted_of(b: &Breaker, n: usize) -> (usize, Vec<f64>) {
    let mut let_through = 0;
    let mut fractions = Vec::new();
    for _ in 0..n {
        match b.acquire().await {
            Ok(p) => {
                let_through += 1;
                p.release().await;
            }
            Err(r) => {
                assert_eq!(r.state, State::Closed, "only the ramp holds calls back here: {r}");
                let pause = r.retry_after().expect("a pause");
                assert!(
                    pause > Duration::ZERO && pause <= Duration::from_secs(1),
                    "a short pause, not at once: {pause:?}"
                );
                assert!(r.to_string().contains("recovering: "), "{r}");
                fractions.push(r.admitted().expect("a ramp's rejection says what it admitted"));
            }
        }
    }
    (let_through, fractions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_admits_a_rising_fraction_after_a_recovery_and_all_once_the_ramp_ends() {
    let redis = redis().await;
    let (a, b) = (client(&redis, Duration::from_secs(30)).await, client(&redis, Duration::from_secs(30)).await);
    subscribed(&b).await;
    let name = unique("ramp");
    let config = ramped(Duration::from_secs(3));
    let (on_a, on_b) = (a.breaker(&name, config.clone()).unwrap(), b.breaker(&name, config).unwrap());
    succeed(&on_b).await.unwrap();
    trip_and_recover(&on_a).await;
    eventually("the other process hears of the close", async || on_b.snapshot().ramp.is_some()).await;

    // Just after the close both processes admit about a tenth: the one whose probe closed it
    // (from its reply) and the other (from the event).
    for (who, breaker) in [("the closer", &on_a), ("the other process", &on_b)] {
        let ramp = breaker.snapshot().ramp.unwrap_or_else(|| panic!("{who} knows the ramp"));
        assert_eq!((ramp.length, ramp.start_permille), (Duration::from_secs(3), 100), "{who}");
        let (let_through, fractions) = admitted_of(breaker, 1000).await;
        assert!((40..=400).contains(&let_through), "{who} let {let_through} of 1000 through at the ramp's start");
        assert!(fractions.iter().all(|f| (0.1..0.5).contains(f)), "{who}: {:?}", &fractions[..5]);
    }
    let status = on_a.status().await.unwrap();
    let ramp = status.ramp.expect("status shows the ramp");
    assert!(ramp.admitted() >= 0.1 && ramp.admitted() < 0.6, "{ramp:?}");
    let history = on_a.history(1).await.unwrap();
    assert_eq!(history[0].to, "closed");
    assert_eq!(history[0].ramp.map(|r| (r.length, r.start_permille)), Some((Duration::from_secs(3), 100)));

    // Once it is over, every call goes.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    for breaker in [&on_a, &on_b] {
        assert_eq!(admitted_of(breaker, 200).await.0, 200, "the ramp is over");
        assert_eq!(breaker.snapshot().ramp, None);
    }
    // The calls held back count as throttled, not as rejected.
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let m = metrics_hash(&redis, &name).await;
    assert!(m.get("throttled").copied().unwrap_or(0) >= 1200, "{m:?}");
    assert_eq!(m.get("rejected").copied().unwrap_or(0), 0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ramp_every_call_goes_at_once_after_a_recovery() {
    let redis = redis().await;
    let a = client(&redis, Duration::from_secs(30)).await;
    let b = a.breaker(&unique("no-ramp"), ramped(Duration::ZERO)).unwrap();
    trip_and_recover(&b).await;
    assert_eq!(b.snapshot().ramp, None);
    assert_eq!(admitted_of(&b, 500).await.0, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_during_a_ramp_trip_again_and_the_next_recovery_ramps_again_and_operators_end_it() {
    let redis = redis().await;
    let a = client(&redis, Duration::from_secs(30)).await;
    let name = unique("ramp-trip");
    let b = a.breaker(&name, ramped(Duration::from_secs(60))).unwrap();
    trip_and_recover(&b).await;
    assert!(b.snapshot().ramp.is_some());
    // A failure counts as usual: the consecutive rule (1) trips the breaker again.
    let mut tripped = false;
    for _ in 0..200 {
        if let Ok(p) = b.acquire().await {
            p.failure().await;
            tripped = true;
            break;
        }
    }
    assert!(tripped, "some call got through the ramp");
    assert_eq!(b.state(), State::Open);
    let hash = state_hash(&redis, &name).await;
    assert_eq!((hash["ramp_until"].as_str(), hash["ramp_ms"].as_str()), ("0", "0"), "a trip ends the ramp");
    tokio::time::sleep(Duration::from_millis(70)).await;
    let probe = b.acquire().await.unwrap();
    probe.success().await;
    assert!(b.snapshot().ramp.is_some(), "the next recovery ramps again");

    // Forced states and reset end it.
    b.force_close(None).await.unwrap();
    b.reset().await.unwrap();
    assert_eq!(b.status().await.unwrap().ramp, None);
    assert_eq!(admitted_of(&b, 300).await.0, 300, "reset ended the ramp");
    trip_and_recover(&b).await;
    assert!(b.snapshot().ramp.is_some());
    b.reset().await.unwrap();
    assert_eq!(state_hash(&redis, &name).await["ramp_until"], "0", "a reset of a closed breaker ends its ramp");
    assert_eq!(admitted_of(&b, 300).await.0, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_set_by_hand_that_no_script_could_write_ends_at_the_next_call() {
    let redis = redis().await;
    let a = client(&redis, Duration::from_millis(1)).await;
    let name = unique("ramp-hand");
    let b = a.breaker(&name, ramped(Duration::from_secs(10))).unwrap();
    succeed(&b).await.unwrap();
    a.flush().await.unwrap();
    let mut conn = redis.conn().await;
    // Ten years at one per mille: far longer than any ramp a process may have.
    let far: u64 = 10 * 365 * 86_400_000;
    let now: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let _: () = redis::cmd("HSET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg(&["ramp_until", &(now + far).to_string(), "ramp_ms", &far.to_string(), "ramp_permille", "1"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().ramp, None, "status does not show a ramp no script could write");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(admitted_of(&b, 100).await.0, 100, "no call was held back");
    // The hot path reads the coarse clock, which lags by up to a tick (4 ms here): a snapshot
    // fresh for 1 ms can still read fresh 5 ms later, and all 100 calls be decided from it with
    // no script (1 of 7 runs read the hand-set ramp right after them); or a snapshot just expired
    // decides while its one refresh runs. The script that ends the ramp may come calls later.
    let ended = async || {
        admitted_of(&b, 1).await;
        state_hash(&redis, &name).await["ramp_until"] == "0"
    };
    eventually("the next script ends it", ended).await;

    // One as the close that began it would have written it (ramp_until = changed_at + ramp_ms),
    // half an hour at one per mille: longer than this process's own ramp (10s), which the next
    // script brings it back to.
    trip_and_recover(&b).await;
    hand_ramp(&redis, &name, 1_800_000, 0).await;
    assert!(b.status().await.unwrap().ramp.is_some(), "a ramp a close could have written shows");
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Read before the clock: a ramp brought back by a script that ran before the read ends
    // at most 10s after the clock read next.
    let brought_back = async || {
        let _ = b.acquire().await;
        let hash = state_hash(&redis, &name).await;
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        hash["ramp_until"].parse::<u64>().unwrap() <= now_ms + 10_000
    };
    eventually("the next script brings it back to this process's 10s", brought_back).await;
    let hash = state_hash(&redis, &name).await;
    let field = |f: &str| hash[f].parse::<u64>().unwrap();
    assert_eq!(field("ramp_until"), field("changed_at") + field("ramp_ms"), "still as a close writes it");
}

/// Sets the breaker's ramp by hand: `ms` long, ending `shift` ms later than its close would have
/// written it, at one per mille.
async fn hand_ramp(redis: &TestRedis, name: &str, ms: u64, shift: u64) {
    let mut conn = redis.conn().await;
    let changed: u64 = state_hash(redis, name).await["changed_at"].parse().unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg(&["ramp_until", &(changed + ms + shift).to_string(), "ramp_ms", &ms.to_string(), "ramp_permille", "1"])
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A ramp an older writer left behind when it closed the breaker again (the close did not write
/// it: ramp_until is not changed_at + ramp_ms) ends, on the short path of a failure that only
/// counts too (lib/count.lua leaves it to the general path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_its_close_did_not_write_ends_even_on_the_short_path_of_a_failure() {
    let redis = redis().await;
    let a = client(&redis, Duration::from_secs(30)).await;
    let name = unique("ramp-stale");
    let config = Config::builder()
        .failure_threshold(5)
        .success_threshold(1)
        .base_recovery(Duration::from_millis(50))
        .max_recovery(Duration::from_millis(50))
        .jitter(0.0)
        .recovery_ramp(Duration::from_secs(10))
        .build()
        .unwrap();
    let b = a.breaker(&name, config).unwrap();
    for _ in 0..5 {
        fail(&b).await.unwrap_err();
    }
    assert_eq!(b.state(), State::Open);
    tokio::time::sleep(Duration::from_millis(70)).await;
    b.acquire().await.expect("the probe").success().await;
    assert!(b.snapshot().ramp.is_some());
    let permit = loop {
        if let Ok(p) = b.acquire().await {
            break p;
        }
    };
    // The calls held back go first: a failure with nothing batched may take the short path.
    a.flush().await.unwrap();
    hand_ramp(&redis, &name, 60_000, 5).await;
    permit.failure().await;
    let hash = state_hash(&redis, &name).await;
    assert_eq!((hash["state"].as_str(), hash["failures"].as_str()), ("closed", "1"), "the failure counted");
    assert_eq!(hash["ramp_until"], "0", "a ramp that its close did not write ends: {hash:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_a_ramp_ends_the_fleets_ramp_as_it_writes() {
    let redis = redis().await;
    let a = client(&redis, Duration::from_millis(1)).await;
    let name = unique("ramp-none");
    let ramped_breaker = a.breaker(&name, ramped(Duration::from_secs(600))).unwrap();
    trip_and_recover(&ramped_breaker).await;
    assert!(ramped_breaker.status().await.unwrap().ramp.is_some());
    let b = client(&redis, Duration::from_millis(1)).await;
    let plain = b.breaker(&name, ramped(Duration::ZERO)).unwrap();
    // Its first call asks Redis (its snapshot is cold): its acquire ends the ramp.
    drop(plain.acquire().await);
    b.flush().await.unwrap();
    assert_eq!(
        plain.status().await.unwrap().ramp,
        None,
        "a writer with no ramp ends it (as max_recovery bounds open_until)"
    );
    // The ramped process learns it at its next script call (no event says a ramp ended): its
    // snapshot may still be fresh, or just expired and decide while one refresh runs.
    let learnt = async || {
        drop(ramped_breaker.acquire().await);
        ramped_breaker.snapshot().ramp.is_none()
    };
    eventually("the ramped process learns that the ramp ended", learnt).await;
    assert_eq!(admitted_of(&ramped_breaker, 200).await.0, 200);
}
