//! Engine limits: instances are taken per hook call or per transaction (never held by an idle
//! connection), and when the engine's instance or memory limit is reached the failure policy
//! applies at once.

mod common;

use common::*;
use corvid_plugin_host::{EngineOptions, PluginEngine, PluginHost, Services};
use corvid_types::{MessageView, Policy, Reply, Stage, Verdict};
use std::time::{Duration, Instant};

fn small_engine(max_instances: u32, total_memory_mb: u64) -> PluginEngine {
    init_logs();
    PluginEngine::new(EngineOptions {
        max_instances,
        total_memory_mb,
        ..EngineOptions::default()
    })
    .expect("engine")
}

async fn host_on(engine: &PluginEngine, pairs: &[(&str, &str)]) -> PluginHost {
    let host = PluginHost::new(engine, Services::in_memory(), Some(cache_dir()));
    let mut m = behave("b", pairs);
    // One failure would trip the breaker: exhaustion must not count as the plugin's failure.
    m.breaker.failures = 1;
    host.reload(vec![m]).await.expect("loads");
    host
}

fn policy_failure() -> Verdict {
    Verdict::Tempfail(Reply::new(451, "4.3.0", "Temporary policy failure"))
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_hold_no_instance() {
    let engine = small_engine(2, 4096);
    let host = host_on(&engine, &[("helo", "continue"), ("mail", "accept")]).await;
    // Ten connections said EHLO and sit idle.
    let mut idle = Vec::new();
    for id in 0..10 {
        let c = conn(id);
        let mut s = host.session(&c);
        assert_eq!(s.connect(&c).await.verdict, Verdict::Continue);
        assert_eq!(s.helo(&c).await.verdict, Verdict::Continue);
        idle.push(s);
    }
    // The engine has two instance slots; both are free.
    let c = conn(100);
    let mut a = host.session(&c);
    let mut b = host.session(&c);
    assert_eq!(a.mail(&c, &envelope()).await.verdict, Verdict::Accept);
    assert_eq!(b.mail(&c, &envelope()).await.verdict, Verdict::Accept);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_engine_applies_the_failure_policy_at_once() {
    let engine = small_engine(2, 4096);
    let host = host_on(&engine, &[("mail", "accept")]).await;
    let c = conn(1);
    let (mut a, mut b, mut third) = (host.session(&c), host.session(&c), host.session(&c));
    // Two transactions in progress hold the two slots.
    assert_eq!(a.mail(&c, &envelope()).await.verdict, Verdict::Accept);
    assert_eq!(b.mail(&c, &envelope()).await.verdict, Verdict::Accept);
    let started = Instant::now();
    assert_eq!(third.mail(&c, &envelope()).await.verdict, policy_failure());
    assert!(started.elapsed() < Duration::from_secs(1), "no wait");
    third.end_transaction();
    let s = host.stats();
    let mail = s.iter().find(|s| s.stage == Stage::Mail).expect("stats");
    assert_eq!((mail.exhausted, mail.breaker_trips), (1, 0));
    // A transaction ends and gives its slot back: the next one runs.
    a.end_transaction();
    assert_eq!(third.mail(&c, &envelope()).await.verdict, Verdict::Accept);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_total_memory_limit_is_the_engines_not_the_plugins_failure() {
    let engine = small_engine(20, 24);
    let host = host_on(&engine, &[("mail", "accept"), ("data", "oom")]).await;
    let c = conn(1);
    let mut s = host.session(&c);
    assert_eq!(s.mail(&c, &envelope()).await.verdict, Verdict::Accept);
    let d = s
        .data(&c, &envelope(), MessageView { content: MESSAGE })
        .await;
    assert_eq!(d.verdict, policy_failure());
    s.end_transaction();
    let stats = host.stats();
    let data = stats
        .iter()
        .find(|s| s.stage == Stage::Data)
        .expect("stats");
    assert_eq!((data.exhausted, data.out_of_memory), (1, 0));
    assert_eq!(
        engine.memory_in_use(),
        0,
        "given back when the instance is dropped"
    );
}

/// Pools keep at most half the engine's instances idle, whatever their `pool_size`, so a
/// burst that filled the pools never leaves calls in flight without a slot; a reload gives
/// the old pools' count back.
#[tokio::test(flavor = "multi_thread")]
async fn pools_keep_at_most_half_the_instances_idle() {
    let engine = small_engine(4, 4096);
    let host = PluginHost::new(&engine, Services::in_memory(), Some(cache_dir()));
    let mut m = behave("b", &[("mail", "accept")]);
    m.instance = corvid_plugin_host::InstanceMode::Pool;
    m.pool_size = 64;
    host.reload(vec![m.clone()]).await.expect("loads");
    let c = conn(1);
    // Four transactions at once: every slot is in use.
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let mut s = host.session(&c);
        assert_eq!(s.mail(&c, &envelope()).await.verdict, Verdict::Accept);
        sessions.push(s);
    }
    assert_eq!(engine.instances_in_use(), 4);
    for s in &mut sessions {
        s.end_transaction();
    }
    assert_eq!(
        engine.instances_idle(),
        2,
        "half of max_instances stays warm"
    );
    assert_eq!(engine.instances_in_use(), 2, "the others were dropped");
    // The warm ones serve the next transactions; two more slots are free for new ones.
    for s in &mut sessions {
        assert_eq!(s.mail(&c, &envelope()).await.verdict, Verdict::Accept);
    }
    assert_eq!(engine.instances_idle(), 0);
    drop(sessions);
    host.reload(vec![m]).await.expect("reloads");
    assert_eq!(
        engine.instances_idle(),
        0,
        "the old generation's pool is gone"
    );
}
