//! What a case checks in Redis after each script call: the state hash, the leases, the quorum's
//! keys and every key's TTL, and at the end the metrics.

use super::case::Case;
use super::steps::Step;
use proptest::prelude::*;
use std::collections::BTreeMap;

impl Case {
    /// The whole state hash, field by field, against the machine's flat view (incarnations are
    /// numbered differently on each side: their presence is compared in `call`), the leases,
    /// and the TTL a state in force must keep.
    pub(super) async fn check_stored(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
        step: &Step,
        second: bool,
    ) -> Result<(), TestCaseError> {
        let keys = &self.keys.all;
        let (mut got, leases): (BTreeMap<String, String>, u64) =
            redis::pipe().hgetall(&keys[0]).zcard(&keys[1]).query_async(conn).await.unwrap();
        let (flat, _, _) = self.model.flat();
        let mut want: BTreeMap<String, String> =
            flat.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
        got.remove("incarnation");
        want.remove("incarnation");
        // A busy state's TTLs are set in full again once a tenth of the shorter has passed:
        // after any script call, `ttl_at` (when they last were) is within that of now, whatever
        // both sides agree on (a call refused before it wrote leaves them as they were).
        if self.model.exists() && !self.refused {
            let refresh = self.params.state_ttl.min(self.params.metrics_ttl) / 10;
            let ttl_at = got.get("ttl_at").and_then(|v| v.parse::<u64>().ok());
            prop_assert!(
                ttl_at.is_some_and(|t| t <= self.now && self.now - t < refresh),
                "ttl_at {:?} at {} (renewed every {}ms) after {:?}",
                ttl_at,
                self.now,
                refresh,
                step
            );
        }
        prop_assert_eq!(got, want, "state hash after {:?}", step);
        prop_assert_eq!(leases, self.model.probe_count() as u64, "probe leases after {:?}", step);

        // The quorum's reporters, and their key's TTL: at most the window (either config's).
        type Entries = Vec<(String, i64)>;
        let (reporters, reporters_pttl, processes): (Entries, i64, Entries) = redis::pipe()
            .zrange_withscores(&keys[5], 0, -1)
            .pttl(&keys[5])
            .zrange_withscores(&keys[6], 0, -1)
            .query_async(conn)
            .await
            .unwrap();
        // Each key's entries, and its bookkeeping members (negative scores: ' window', ' since').
        let split = |entries: Vec<(String, i64)>| {
            let (marks, entries): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, score)| *score < 0);
            let abs = |v: Vec<(String, i64)>| v.into_iter().map(|(m, s)| (m, s.unsigned_abs())).collect();
            (abs(entries), abs(marks))
        };
        let ((reporters, reporter_marks), (processes, process_marks)): ((BTreeMap<_, _>, _), (BTreeMap<_, _>, _)) =
            (split(reporters), split(processes));
        prop_assert_eq!(&reporters, self.model.reporters(), "reporters after {:?}", step);
        prop_assert_eq!(&processes, self.model.processes(), "processes after {:?}", step);
        prop_assert_eq!([reporter_marks, process_marks], self.model.quorum_marks(), "quorum marks after {:?}", step);
        let window = i64::try_from(self.params.window.max(self.second.window)).unwrap();
        prop_assert!(
            reporters_pttl == -2 || (reporters_pttl > 0 && reporters_pttl <= window),
            "reporters TTL {} after {:?}",
            reporters_pttl,
            step
        );

        // Every key has a TTL, however seldom it is set in full: a closed state's at most
        // state_ttl, the metrics' at most metrics_ttl (either config's).
        let (state_ttl, metrics_ttl) = (
            i64::try_from(self.params.state_ttl.max(self.second.state_ttl)).unwrap(),
            i64::try_from(self.params.metrics_ttl.max(self.second.metrics_ttl)).unwrap(),
        );
        let (state_pttl, metrics_pttl): (i64, i64) =
            redis::pipe().pttl(&keys[0]).pttl(&keys[3]).query_async(conn).await.unwrap();
        if self.model.exists() && self.model.state() == crate::State::Closed {
            prop_assert!(state_pttl > 0 && state_pttl <= state_ttl, "closed state TTL {} after {:?}", state_pttl, step);
        }
        prop_assert!(
            metrics_pttl == -2
                || (metrics_pttl > 0 && metrics_pttl <= metrics_ttl)
                || (metrics_pttl == -1 && self.hand_made_metrics),
            "metrics TTL {} after {:?}",
            metrics_pttl,
            step
        );
        if metrics_pttl != -1 {
            self.hand_made_metrics = false;
        }
        // A call that set the TTLs in full (the model says when) set them on the keys: whatever
        // a ShortenTtls step left, each key now lives about its whole TTL (a forced state with
        // no end has none).
        if self.renewed {
            let forever = self.model.state_key_ttl(&self.params, self.now).is_none();
            prop_assert!(
                forever || state_pttl > state_ttl - 2000,
                "state TTL {} not renewed (state_ttl {}) after {:?}",
                state_pttl,
                state_ttl,
                step
            );
            prop_assert!(
                metrics_pttl == -2 || metrics_pttl > metrics_ttl - 2000,
                "metrics TTL {} not renewed (metrics_ttl {}) after {:?}",
                metrics_pttl,
                metrics_ttl,
                step
            );
        }

        // A state in force never expires: every script that read it left state_ttl past its
        // furthest deadline on the key (real time passes too, so allow for the query's delay).
        if self.model.exists() && self.model.state() != crate::State::Closed && !self.refused {
            let p = if second { &self.second } else { &self.params };
            let pttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(conn).await.unwrap();
            match self.model.state_key_ttl(p, self.now) {
                None => prop_assert_eq!(pttl, -1, "a forced state with no end has no TTL after {:?}", step),
                Some(want) => {
                    let want = i64::try_from(want).unwrap();
                    prop_assert!(
                        pttl <= want && pttl > want - 2000,
                        "state TTL {} (want {}) after {:?}",
                        pttl,
                        want,
                        step
                    );
                }
            }
        }
        Ok(())
    }

    /// repaired reads as 0, as the model holds it.
    pub(super) async fn check_metrics(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), TestCaseError> {
        let metrics: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&self.keys.all[3]).query_async(conn).await.unwrap();
        let m = &self.model.metrics;
        let get = |f: &str| metrics.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        prop_assert_eq!(
            (
                get("calls"),
                get("successes"),
                get("failures"),
                get("slow"),
                get("rejected"),
                get("timeouts"),
                get("opened")
            ),
            (m.calls, m.successes, m.failures, m.slow, m.rejected, m.timeouts, m.opened),
            "metrics"
        );
        // The lanes' batch ids the scripts remember (`batch:<sender>`).
        let mut remembered: Vec<(String, String)> =
            metrics.iter().filter(|(f, _)| f.starts_with("batch:")).map(|(f, v)| (f.clone(), v.clone())).collect();
        remembered.sort();
        let want: Vec<(String, String)> =
            self.model.batch_fields().map(|(sender, v)| (format!("batch:{sender:x}"), v.to_string())).collect();
        prop_assert_eq!(remembered, want, "batch ids");
        Ok(())
    }
}
