//! Config's validation, serde form and fingerprint.

use super::*;

fn field_of(r: Result<Config, ConfigError>) -> &'static str {
    match r {
        Err(ConfigError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn every_invalid_field_is_named() {
    let b = Config::builder;
    assert_eq!(field_of(b().success_threshold(0).build()), "success_threshold");
    assert_eq!(field_of(b().half_open_max_probes(0).build()), "half_open_max_probes");
    assert_eq!(field_of(b().base_recovery(Duration::ZERO).build()), "base_recovery");
    assert_eq!(field_of(b().max_recovery(Duration::from_secs(1)).build()), "max_recovery");
    assert_eq!(field_of(b().multiplier(0.5).build()), "multiplier");
    assert_eq!(field_of(b().multiplier(f64::NAN).build()), "multiplier");
    assert_eq!(field_of(b().jitter(1.0).build()), "jitter");
    assert_eq!(field_of(b().jitter(-0.1).build()), "jitter");
    assert_eq!(field_of(b().call_timeout(Duration::from_secs(60)).build()), "call_timeout");
    let equal = Duration::from_secs(10);
    assert_eq!(field_of(b().call_timeout(equal).probe_lease(equal).build()), "call_timeout");
    let lease = Duration::from_secs(11);
    assert!(b().call_timeout(equal).probe_lease(lease).build().is_ok(), "a tenth more is enough");
    let d = Config::default();
    assert!(d.call_timeout() + d.call_timeout() / 10 <= d.probe_lease(), "the defaults keep the margin");
    assert_eq!(field_of(b().probe_lease(Duration::ZERO).build()), "probe_lease");
    assert_eq!(field_of(b().state_ttl(Duration::ZERO).build()), "state_ttl");
    assert_eq!(field_of(b().metrics_ttl(Duration::ZERO).build()), "metrics_ttl");
    assert_eq!(field_of(b().failure_rate(0.0).build()), "failure_rate");
    assert_eq!(field_of(b().failure_rate(1.5).build()), "failure_rate");
    assert_eq!(field_of(b().slow_call_rate(f64::NAN).build()), "slow_call_rate");
    assert_eq!(field_of(b().slow_call_duration(Duration::ZERO).build()), "slow_call_duration");
    assert_eq!(field_of(b().minimum_calls(0).build()), "minimum_calls");
    assert_eq!(field_of(b().failure_rate(0.5).window(Duration::from_millis(50)).build()), "window");
    assert_eq!(field_of(b().failure_threshold(0).build()), "failure_threshold");
    assert_eq!(field_of(b().quorum(0).build()), "quorum");
    assert_eq!(field_of(b().quorum(10_001).build()), "quorum");
    assert_eq!(field_of(b().quorum_fraction(0.0).build()), "quorum_fraction");
    assert_eq!(field_of(b().quorum_fraction(1.5).build()), "quorum_fraction");
    assert_eq!(field_of(b().base_recovery(Duration::from_secs(u64::MAX / 2)).build()), "base_recovery");
}

#[test]
fn deserializes_human_durations_and_refuses_unknown_fields() {
    let c: Config =
        serde_json::from_str(r#"{"failure_threshold":3,"base_recovery":"10s","window":"1m","failure_rate":0.5}"#)
            .expect("valid config");
    assert_eq!(c.base_recovery(), Duration::from_secs(10));
    assert_eq!(c.failure_rate(), Some(0.5));
    let unknown = serde_json::from_str::<Config>(r#"{"failure_treshold":3}"#).expect_err("unknown field");
    assert!(unknown.to_string().contains("failure_treshold"), "{unknown}");
    let invalid = serde_json::from_str::<Config>(r#"{"jitter":2}"#).expect_err("invalid");
    assert!(invalid.to_string().contains("jitter"), "{invalid}");
    let duration = serde_json::from_str::<Config>(r#"{"probe_lease":"30 seconds"}"#).expect_err("bad duration");
    assert!(duration.to_string().contains("30s"), "{duration}");
}

#[test]
fn fingerprint_changes_with_the_config() {
    let a = Config::default().fingerprint();
    assert_eq!(a.len(), 16);
    assert_eq!(a, Config::default().fingerprint());
    assert_ne!(a, Config::builder().failure_threshold(6).build().expect("valid").fingerprint());
    assert_eq!(a, Config::builder().quorum(1).build().expect("valid").fingerprint(), "quorum 1 is the default");
    assert_ne!(a, Config::builder().quorum(3).build().expect("valid").fingerprint());
}
