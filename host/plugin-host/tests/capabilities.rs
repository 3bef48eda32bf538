//! Capabilities reach WASI too: without `clock` every clock reads the Unix epoch, without
//! `random` WASI randomness is a seeded, deterministic generator.

mod common;

use common::*;
use corvid_plugin_host::{Capability, KvError, Manifest, PluginHost, Services};
use corvid_types::{Policy, Verdict};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The fixture's `senses` report (`wall=… mono=… hash=… now_ms=…`) at MAIL, one transaction
/// (so one fresh instance) per call.
async fn senses(host: &PluginHost, session: u64) -> HashMap<String, u128> {
    let c = conn(session);
    let d = host.session(&c).mail(&c, &envelope()).await;
    let text = match d.verdict {
        Verdict::Reject(r) => r.text(),
        other => panic!("{other:?}"),
    };
    text.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect()
}

fn manifest(caps: &[Capability]) -> Manifest {
    let mut m = behave("senses", &[("mail", "senses")]);
    m.capabilities = caps.to_vec();
    m
}

async fn host_with(caps: &[Capability]) -> PluginHost {
    let h = host();
    h.reload(vec![manifest(caps)]).await.expect("loads");
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn without_clock_every_clock_reads_the_epoch() {
    let denied = host_with(&[Capability::Log, Capability::Config]).await;
    let s = senses(&denied, 1).await;
    assert_eq!(s["wall"], 0, "WASI wall clock");
    assert_eq!(s["mono"], 0, "WASI monotonic clock does not advance");
    assert_eq!(s["now_ms"], 0, "clock import");

    let granted = host_with(&[Capability::Log, Capability::Config, Capability::Clock]).await;
    let s = senses(&granted, 1).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    assert!(now.abs_diff(s["wall"]) < 60_000, "real wall clock: {s:?}");
    assert!(
        now.abs_diff(s["now_ms"]) < 60_000,
        "real clock import: {s:?}"
    );
    assert!(s["mono"] > 0, "monotonic clock advances: {s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_random_wasi_randomness_is_seeded_per_instance() {
    let caps = [Capability::Log, Capability::Config];
    // Two hosts, same plugin: the n-th instance of each sees the same randomness...
    let (a, b) = (host_with(&caps).await, host_with(&caps).await);
    let a1 = senses(&a, 1).await["hash"];
    let a2 = senses(&a, 2).await["hash"];
    let b1 = senses(&b, 1).await["hash"];
    let b2 = senses(&b, 2).await["hash"];
    assert_eq!((a1, a2), (b1, b2), "deterministic, not the OS's entropy");
    // ...and each instance has its own seed.
    assert_ne!(a1, a2, "seeded per instance");

    // With `random`, the operating system's entropy: two hosts differ.
    let caps = [Capability::Log, Capability::Config, Capability::Random];
    let (a, b) = (host_with(&caps).await, host_with(&caps).await);
    assert_ne!(senses(&a, 1).await["hash"], senses(&b, 1).await["hash"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_random_the_seed_is_per_plugin_name_and_the_os_is_never_used() {
    let caps = [Capability::Log, Capability::Config];
    let named = |name: &str| {
        let mut m = behave(name, &[("mail", "senses")]);
        m.capabilities = caps.to_vec();
        m
    };
    let (a, b) = (host(), host());
    a.reload(vec![named("senses")]).await.expect("loads");
    b.reload(vec![named("other")]).await.expect("loads");
    // The first instance of two plugins with different names: different seeds.
    let (a1, b1) = (senses(&a, 1).await["hash"], senses(&b, 1).await["hash"]);
    assert_ne!(a1, b1, "the plugin's name is part of the seed");
    // A reload starts a new generation, whose instances are numbered again from the start:
    // the same sequence (a restart replays it too; the OS's entropy never does).
    a.reload(vec![named("senses")]).await.expect("reloads");
    let again = senses(&a, 2).await["hash"];
    let fresh = host();
    fresh.reload(vec![named("senses")]).await.expect("loads");
    assert_eq!(
        again,
        senses(&fresh, 1).await["hash"],
        "deterministic after a reload"
    );
}

/// A store whose namespace is always full.
struct FullKv;

impl corvid_plugin_host::KvStore for FullKv {
    fn get(&self, _: &str, _: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(None)
    }
    fn ttl(&self, _: &str, _: &[u8]) -> Result<Option<Duration>, KvError> {
        Ok(None)
    }
    fn set(&self, _: &str, _: &[u8], _: &[u8], _: Option<Duration>) -> Result<(), KvError> {
        Err(KvError::Quota("1000 keys".into()))
    }
    fn delete(&self, _: &str, _: &[u8]) -> Result<bool, KvError> {
        Ok(false)
    }
    fn increment(&self, _: &str, _: &[u8], _: i64, _: Option<Duration>) -> Result<i64, KvError> {
        Err(KvError::Quota("1000 keys".into()))
    }
    fn compare_and_swap(
        &self,
        _: &str,
        _: &[u8],
        _: Option<&[u8]>,
        _: Option<&[u8]>,
        _: Option<Duration>,
    ) -> Result<bool, KvError> {
        Err(KvError::Quota("1000 keys".into()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kv_quota_refusal_reaches_the_plugin_as_too_large() {
    let services = Services {
        kv: Arc::new(FullKv),
        ..Services::in_memory()
    };
    let host = PluginHost::new(&engine(), services, Some(cache_dir()));
    let mut m = behave("quota", &[("mail", "kv")]);
    m.capabilities.push(Capability::Kv);
    host.reload(vec![m]).await.expect("loads");
    let c = conn(1);
    let d = host.session(&c).mail(&c, &envelope()).await;
    match d.verdict {
        Verdict::Reject(r) => assert_eq!(r.text(), "kv error Error::TooLarge"),
        other => panic!("{other:?}"),
    }
}
