//! The circuit breaker: a plugin that keeps failing is bypassed by its failure policy, without
//! instances, for a cool-down; then one transaction probes it.

mod common;

use common::*;
use corvid_plugin_host::{
    BreakerConfig, BreakerState, Capability, FailurePolicy, KvStore, MemoryKv, PluginHost, Services,
};
use corvid_types::{Decision, Policy, Stage, Verdict};
use std::sync::Arc;
use std::time::Duration;

async fn mail(host: &PluginHost, id: u64) -> Decision {
    let c = conn(id);
    let mut s = host.session(&c);
    let d = s.mail(&c, &envelope()).await;
    s.end_transaction();
    d
}

fn mail_stats(host: &PluginHost) -> corvid_plugin_host::HookStats {
    host.stats()
        .into_iter()
        .find(|s| s.stage == Stage::Mail)
        .expect("mail stats")
}

fn breaker_of(host: &PluginHost) -> BreakerState {
    host.plugins()[0].breaker
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_plugin_trips_is_bypassed_for_free_then_probed() {
    let kv = Arc::new(MemoryKv::new());
    let services = Services {
        kv: kv.clone(),
        ..Services::in_memory()
    };
    let host = PluginHost::new(&engine(), services, Some(cache_dir()));
    let mut m = behave("flaky", &[("mail", "flaky")]);
    m.capabilities.push(Capability::Kv);
    m.failure_policy = FailurePolicy::Continue;
    m.breaker = BreakerConfig {
        failures: 3,
        window_ms: 10_000,
        cooldown_ms: 700,
        ..BreakerConfig::default()
    };
    host.reload(vec![m]).await.expect("loads");

    for id in 0..3 {
        assert_eq!(mail(&host, id).await, Decision::proceed(), "failure policy");
    }
    let s = mail_stats(&host);
    assert_eq!((s.traps, s.instantiations, s.breaker_trips), (3, 3, 1));
    assert!(matches!(breaker_of(&host), BreakerState::Open { .. }));

    // Open: the failure policy applies at once and no instance is taken.
    for id in 10..20 {
        assert_eq!(mail(&host, id).await, Decision::proceed());
    }
    let s = mail_stats(&host);
    assert_eq!((s.bypassed, s.instantiations, s.traps), (10, 3, 3));

    // After the cool-down one probe runs; it still fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(breaker_of(&host), BreakerState::HalfOpen);
    mail(&host, 30).await;
    let s = mail_stats(&host);
    assert_eq!((s.traps, s.instantiations), (4, 4), "one probe");
    assert!(matches!(breaker_of(&host), BreakerState::Open { .. }));
    mail(&host, 31).await;
    assert_eq!(mail_stats(&host).instantiations, 4, "bypassed again");

    // The plugin recovers: the next probe closes the breaker and it runs again.
    kv.set("flaky", b"healthy", b"1", None).expect("kv");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mail(&host, 40).await.verdict, Verdict::Accept, "probe");
    assert_eq!(breaker_of(&host), BreakerState::Closed);
    assert_eq!(mail(&host, 41).await.verdict, Verdict::Accept);
    let s = mail_stats(&host);
    assert_eq!((s.instantiations, s.breaker_trips), (6, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_tempfail_policy_a_bypassed_plugin_tempfails() {
    let host = host();
    let mut m = behave("broken", &[("mail", "bad-reject")]);
    m.breaker.failures = 2;
    host.reload(vec![m]).await.expect("loads");
    for id in 0..4 {
        assert!(matches!(mail(&host, id).await.verdict, Verdict::Tempfail(ref r) if r.code == 451));
    }
    let s = mail_stats(&host);
    assert_eq!((s.invalid, s.bypassed, s.instantiations), (2, 2, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trip_stops_the_calls_of_the_plugin_still_running() {
    let host = host();
    let mut m = behave("looper", &[("mail", "loop"), ("helo", "trap")]);
    m.failure_policy = FailurePolicy::Continue;
    // The loop would run until the 20 s backstop: only the trip can end it in time.
    m.limits.hook_fuel = 1_000_000_000_000_000;
    m.limits.hook_time_ms = 20_000;
    m.breaker.failures = 1;
    host.reload(vec![m]).await.expect("loads");

    let looping = {
        let host = host.clone();
        tokio::spawn(async move { mail(&host, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!looping.is_finished(), "the mail hook loops");
    let started = std::time::Instant::now();
    let c = conn(2);
    let mut s = host.session(&c);
    assert_eq!(s.helo(&c).await, Decision::proceed(), "the trap trips");
    let d = tokio::time::timeout(Duration::from_secs(10), looping)
        .await
        .expect("the loop stops at the trip, not at its backstop")
        .expect("joins");
    assert_eq!(d, Decision::proceed(), "failure policy");
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = mail_stats(&host);
    assert_eq!((s.bypassed, s.timeouts, s.breaker_trips), (1, 0, 1));
}
