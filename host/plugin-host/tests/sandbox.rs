//! Traps, runaway loops and memory bombs get the failure policy; other sessions keep flowing.

mod common;

use common::*;
use corvid_plugin_host::{Capability, DnsError, FailurePolicy, Limits, PluginHost, Services};
use corvid_types::{Decision, MessageView, Policy, Reply, Verdict};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn policy_failure() -> Verdict {
    Verdict::Tempfail(Reply::new(451, "4.3.0", "Temporary policy failure"))
}

async fn one_transaction(host: &corvid_plugin_host::PluginHost, id: u64) -> (Decision, Decision) {
    let c = conn(id);
    let mut s = host.session(&c);
    let mail = s.mail(&c, &envelope()).await;
    let data = s
        .data(&c, &envelope(), MessageView { content: MESSAGE })
        .await;
    s.end_transaction();
    (mail, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_applies_the_failure_policy_and_the_next_transaction_is_fresh() {
    let host = host();
    host.reload(vec![behave("b", &[("mail", "accept"), ("data", "trap")])])
        .await
        .expect("loads");
    for id in 0..2 {
        let (mail, data) = one_transaction(&host, id).await;
        assert_eq!(
            mail.verdict,
            Verdict::Accept,
            "a fresh instance serves transaction {id}"
        );
        assert_eq!(data.verdict, policy_failure());
    }
    let stats = host.stats();
    let data = stats
        .iter()
        .find(|s| s.stage == corvid_types::Stage::Data)
        .expect("data stats");
    assert_eq!((data.calls, data.traps), (2, 2));

    let mut lenient = behave("b", &[("data", "trap")]);
    lenient.failure_policy = FailurePolicy::Continue;
    host.reload(vec![lenient]).await.expect("loads");
    assert_eq!(one_transaction(&host, 9).await.1, Decision::proceed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_hits_the_limit() {
    let host = host();
    let mut m = behave("b", &[("mail", "accept"), ("data", "oom")]);
    m.limits.memory_mb = 16;
    m.limits.hook_time_ms = 5_000;
    host.reload(vec![m]).await.expect("loads");
    let (mail, data) = one_transaction(&host, 1).await;
    assert_eq!(mail.verdict, Verdict::Accept);
    assert_eq!(data.verdict, policy_failure());
    let oom: u64 = host.stats().iter().map(|s| s.out_of_memory).sum();
    assert_eq!(oom, 1);
    assert_eq!(
        one_transaction(&host, 2).await.0.verdict,
        Verdict::Accept,
        "host still serves"
    );
}

/// On a single-threaded runtime, a looping plugin must yield at every epoch tick: the other
/// session's hooks complete while it spins, and it is cut off at its wall-time backstop (here
/// with an unlimited CPU budget).
#[tokio::test(flavor = "current_thread")]
async fn an_infinite_loop_is_cut_off_while_other_sessions_keep_flowing() {
    let looping = host();
    let mut m = behave("looper", &[("data", "loop")]);
    m.limits.hook_time_ms = 300;
    m.limits.hook_fuel = u64::MAX;
    looping.reload(vec![m]).await.expect("loads");
    let healthy = host();
    healthy
        .reload(vec![behave("ok", &[("mail", "accept")])])
        .await
        .expect("loads");

    let started = Instant::now();
    let runaway = async {
        let d = one_transaction(&looping, 1).await.1;
        (d, started.elapsed())
    };
    let others = async {
        let mut done = Vec::new();
        for id in 0..20u64 {
            assert_eq!(
                one_transaction(&healthy, 100 + id).await.0.verdict,
                Verdict::Accept
            );
            done.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done
    };
    let ((verdict, cut_at), done) = tokio::join!(runaway, others);
    assert_eq!(verdict.verdict, policy_failure());
    assert!(cut_at >= Duration::from_millis(300), "cut at {cut_at:?}");
    assert!(cut_at < Duration::from_millis(1500), "cut late: {cut_at:?}");
    let during = done.iter().filter(|t| **t < cut_at).count();
    assert!(
        during >= 5,
        "only {during} transactions completed while the plugin looped"
    );
    let timeouts: u64 = looping.stats().iter().map(|s| s.timeouts).sum();
    assert_eq!(timeouts, 1);
}

/// The CPU budget stops a loop by fuel, deterministically, long before the wall-time backstop,
/// and is counted apart from timeouts.
#[tokio::test(flavor = "multi_thread")]
async fn a_loop_runs_out_of_fuel_quickly_with_its_own_outcome() {
    let host = host();
    let mut m = behave("looper", &[("mail", "accept"), ("data", "loop")]);
    m.limits.hook_fuel = 20_000_000;
    m.limits.hook_time_ms = 5_000;
    host.reload(vec![m]).await.expect("loads");
    let started = Instant::now();
    let (mail, data) = one_transaction(&host, 1).await;
    assert_eq!(mail.verdict, Verdict::Accept);
    assert_eq!(data.verdict, policy_failure());
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "stopped by fuel, not at the 5 s backstop: {:?}",
        started.elapsed()
    );
    let stats = host.stats();
    let data = stats
        .iter()
        .find(|s| s.stage == corvid_types::Stage::Data)
        .expect("data stats");
    assert_eq!((data.cpu_budget, data.timeouts), (1, 0));
    let mail = stats
        .iter()
        .find(|s| s.stage == corvid_types::Stage::Mail)
        .expect("mail stats");
    assert!(
        mail.fuel_max > 0 && mail.fuel_max < 1_000_000,
        "a plain hook's fuel is measured: {}",
        mail.fuel_max
    );
}

/// A resolver that answers after `delay`.
struct SlowDns(Duration);

#[async_trait::async_trait]
impl corvid_plugin_host::DnsResolver for SlowDns {
    async fn ip(&self, _: &str, _: bool) -> Result<Vec<std::net::IpAddr>, DnsError> {
        tokio::time::sleep(self.0).await;
        Ok(vec!["192.0.2.53".parse().expect("ip")])
    }
    async fn mx(&self, _: &str) -> Result<Vec<(u16, String)>, DnsError> {
        Err(DnsError::NotFound)
    }
    async fn txt(&self, _: &str) -> Result<Vec<String>, DnsError> {
        Err(DnsError::NotFound)
    }
    async fn ptr(&self, _: std::net::IpAddr) -> Result<Vec<String>, DnsError> {
        Err(DnsError::NotFound)
    }
}

/// Waiting in a host call costs no fuel: a slow DNS answer within the wall-time backstop
/// succeeds on a small CPU budget (the default backstop is 5 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_host_call_within_the_backstop_succeeds() {
    assert_eq!(Limits::default().hook_time_ms, 5_000);
    let services = Services {
        dns: Arc::new(SlowDns(Duration::from_millis(400))),
        ..Services::in_memory()
    };
    let host = PluginHost::new(&engine(), services, Some(cache_dir()));
    let mut m = behave("slow-dns", &[("mail", "dns")]);
    m.capabilities.push(Capability::Dns);
    m.limits = Limits {
        hook_fuel: 2_000_000,
        ..Limits::default()
    };
    host.reload(vec![m]).await.expect("loads");
    let c = conn(1);
    let d = host.session(&c).mail(&c, &envelope()).await;
    match d.verdict {
        Verdict::Reject(r) => assert_eq!(r.text(), "dns=192.0.2.53"),
        other => panic!("{other:?}"),
    }
}
