//! Generations: reload swaps atomically, a transaction keeps its generation, a broken plugin
//! never replaces a working one, and compiled code is cached on disk.

mod common;

use common::*;
use corvid_plugin_host::{PluginHost, PluginState, Services};
use corvid_types::{Policy, Verdict};

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_finishes_on_the_generation_it_started_on() {
    let host = host();
    let g1 = host
        .reload(vec![behave("b", &[("rcpt", "reject")])])
        .await
        .expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    s.mail(&c, &envelope()).await;
    let g2 = host
        .reload(vec![behave("b", &[("rcpt", "tempfail")])])
        .await
        .expect("loads");
    assert!(g2.number() > g1.number());
    let d = s.rcpt(&c, &envelope(), &rcpt()).await;
    assert!(
        matches!(d.verdict, Verdict::Reject(_)),
        "still generation 1: {d:?}"
    );
    s.end_transaction();
    s.mail(&c, &envelope()).await;
    let d = s.rcpt(&c, &envelope(), &rcpt()).await;
    assert!(
        matches!(d.verdict, Verdict::Tempfail(_)),
        "now generation 2: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_plugin_never_replaces_a_working_one() {
    let host = host();
    host.reload(vec![behave("b", &[("mail", "accept")])])
        .await
        .expect("loads");
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("broken.wasm");
    std::fs::write(&garbage, b"\0asm not really").expect("write");

    let mut broken = behave("b", &[("mail", "reject")]);
    broken.path = garbage.clone();
    let g = host.reload(vec![broken]).await.expect("generation built");
    assert!(
        matches!(g.plugins()[0].state, PluginState::Stale { .. }),
        "{:?}",
        g.plugins()
    );
    assert_eq!(g.errors().len(), 1);

    let refused = behave("b", &[("mail", "reject"), ("refuse", "yes")]);
    let g = host.reload(vec![refused]).await.expect("generation built");
    match &g.plugins()[0].state {
        PluginState::Stale { error } => assert!(error.contains("configuration refused"), "{error}"),
        other => panic!("{other:?}"),
    }
    let c = conn(1);
    let d = host.session(&c).mail(&c, &envelope()).await;
    assert_eq!(d.verdict, Verdict::Accept, "the first version still serves");

    let mut newcomer = behave("new", &[]);
    newcomer.path = garbage;
    let g = host
        .reload(vec![behave("b", &[("mail", "accept")]), newcomer])
        .await
        .expect("built");
    assert!(matches!(g.plugins()[1].state, PluginState::Failed { .. }));
    assert_eq!(host.plugins().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_names_are_refused_as_a_whole() {
    let host = host();
    let err = host.load(vec![behave("b", &[]), behave("b", &[])]).await;
    assert!(err.is_err());
    assert_eq!(host.current().number(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_code_is_cached_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = PluginHost::new(&engine(), Services::in_memory(), Some(dir.path().into()));
    let g = first.reload(vec![behave("b", &[])]).await.expect("loads");
    assert!(!g.plugins()[0].from_cache);
    let files = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(files, 1);

    let second = PluginHost::new(&engine(), Services::in_memory(), Some(dir.path().into()));
    let g = second
        .reload(vec![behave("b", &[("mail", "accept")])])
        .await
        .expect("loads");
    assert!(g.plugins()[0].from_cache);
    let c = conn(1);
    assert_eq!(
        second.session(&c).mail(&c, &envelope()).await.verdict,
        Verdict::Accept
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_loses_no_transaction() {
    let host = host();
    host.reload(vec![behave("b", &[("mail", "reject"), ("rcpt", "reject")])])
        .await
        .expect("loads");
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let host = host.clone();
        workers.push(tokio::spawn(async move {
            for t in 0..25u64 {
                let c = conn(w * 1000 + t);
                let mut s = host.session(&c);
                let a = s.mail(&c, &envelope()).await.verdict;
                let b = s.rcpt(&c, &envelope(), &rcpt()).await.verdict;
                s.end_transaction();
                let same = matches!(
                    (&a, &b),
                    (Verdict::Reject(_), Verdict::Reject(_))
                        | (Verdict::Tempfail(_), Verdict::Tempfail(_))
                );
                assert!(same, "a transaction saw two generations: {a:?} / {b:?}");
                if let Verdict::Tempfail(r) = &a {
                    assert_eq!(r.code, 451);
                    assert_ne!(
                        r.text(),
                        "Temporary policy failure",
                        "no failed transaction"
                    );
                }
            }
        }));
    }
    for i in 0..4 {
        let action = if i % 2 == 0 { "tempfail" } else { "reject" };
        host.reload(vec![behave("b", &[("mail", action), ("rcpt", action)])])
            .await
            .expect("loads");
    }
    for w in workers {
        w.await.expect("worker");
    }
}

/// A symlink where a compiled-code cache entry belongs is never followed: the plugin is
/// compiled again (not a cache hit), and the link's target is left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_cache_entry_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let host = PluginHost::new(&engine(), Services::in_memory(), Some(cache.clone()));
    let g = host.reload(vec![behave("b", &[])]).await.expect("loads");
    assert!(!g.plugins()[0].from_cache, "first load compiles");
    let entry = std::fs::read_dir(&cache)
        .expect("cache dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a cache entry was written");
    // Move the real entry away and point a symlink at it: same bytes, but not our file.
    let elsewhere = dir.path().join("elsewhere.cwasm");
    std::fs::rename(&entry, &elsewhere).expect("move");
    std::os::unix::fs::symlink(&elsewhere, &entry).expect("symlink");
    let before = std::fs::read(&elsewhere).expect("read");

    let host = PluginHost::new(&engine(), Services::in_memory(), Some(cache.clone()));
    let g = host.reload(vec![behave("b", &[])]).await.expect("loads");
    assert!(
        !g.plugins()[0].from_cache,
        "a symlinked entry must not be loaded"
    );
    assert_eq!(
        std::fs::read(&elsewhere).expect("read"),
        before,
        "target untouched"
    );
    let meta = std::fs::symlink_metadata(&entry).expect("entry rewritten");
    assert!(
        meta.file_type().is_file(),
        "a regular file replaced the link"
    );

    // The rewritten entry is ours again and is used.
    let host = PluginHost::new(&engine(), Services::in_memory(), Some(cache));
    let g = host.reload(vec![behave("b", &[])]).await.expect("loads");
    assert!(g.plugins()[0].from_cache, "a regular entry is a cache hit");
}

/// A wall-time limit past RFC 5321's 10 minutes for the reply to the data (4.5.3.2.6), or 0,
/// refuses the chain with a clear error; `u64::MAX` once overflowed the deadline (a panic).
#[tokio::test(flavor = "multi_thread")]
async fn hook_time_limits_outside_ten_minutes_are_refused() {
    let host = host();
    for ms in [0, 600_001, u64::MAX] {
        let mut m = behave("b", &[]);
        m.limits.hook_time_ms = ms;
        let err = host.load(vec![m]).await.err().map(|e| e.to_string());
        let err = err.unwrap_or_else(|| panic!("hook_time_ms = {ms} was accepted"));
        assert!(
            err.contains("hook_time_ms must be within 1..=600000"),
            "{err}"
        );
    }
    let mut m = behave("b", &[]);
    m.limits.hook_time_ms = 600_000;
    host.load(vec![m]).await.expect("ten minutes is allowed");
}
