//! Shadow mode (`mode = "shadow"`): a shadow plugin's decisions change nothing for the
//! session, are compared with the chain's and counted, the differences are kept, its kv is
//! its own namespace, and it is never called at the delivery stages. Its signing choice and
//! its memory never reach the active side, and the messages queued for it are bounded.

mod common;

use common::*;
use corvid_plugin_host::{
    Capability, DeliveryPolicy, EngineOptions, HookStats, Manifest, MemoryKv, PluginEngine,
    PluginHost, PluginMode, Services, StaticDns,
};
use corvid_types::{
    Address, AuthCredentials, KvStore, MessageView, Policy, PolicySession, SigningRequest, Stage,
    Verdict,
};
use corvid_types::{Route, RouteRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn shadow(name: &str, pairs: &[(&str, &str)]) -> Manifest {
    let mut m = behave(name, pairs);
    m.mode = PluginMode::Shadow;
    m.capabilities.push(Capability::Kv);
    m
}

fn host_with(kv: Arc<MemoryKv>) -> PluginHost {
    let services = Services {
        kv,
        dns: Arc::new(StaticDns::new()),
    };
    PluginHost::new(&engine(), services, Some(cache_dir()))
}

/// A host on an engine of its own, of `max_instances` and `total_memory_mb`.
fn small_host(max_instances: u32, total_memory_mb: u64) -> PluginHost {
    let options = EngineOptions {
        max_instances,
        total_memory_mb,
        ..EngineOptions::default()
    };
    let engine = PluginEngine::new(options).expect("engine");
    PluginHost::new(&engine, Services::in_memory(), Some(cache_dir()))
}

fn stats_of(host: &PluginHost, plugin: &str, stage: Stage) -> Option<HookStats> {
    let mut all = host.stats().into_iter();
    all.find(|s| s.plugin == plugin && s.stage == stage)
}

/// Waits (bounded) until the shadow compared `n` decisions at `stage`: its task runs after
/// the session's calls returned.
async fn compared(host: &PluginHost, plugin: &str, stage: Stage, n: u64) -> HookStats {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = stats_of(host, plugin, stage) {
            if s.shadow_agree + s.shadow_differ >= n {
                return s;
            }
        }
        assert!(
            Instant::now() < until,
            "{plugin} never compared at {stage:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One transaction: connect, helo, mail, rcpt, data; the session's decisions.
async fn transaction(s: &mut dyn PolicySession, session: u64) -> Vec<corvid_types::Decision> {
    let (c, env) = (conn(session), envelope());
    let out = vec![
        s.connect(&c).await,
        s.helo(&c).await,
        s.mail(&c, &env).await,
        s.rcpt(&c, &env, &rcpt()).await,
        s.data(&c, &env, MessageView { content: MESSAGE }).await,
    ];
    s.end_transaction();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_that_rejects_everything_changes_nothing_and_its_differences_are_kept() {
    let kv = Arc::new(MemoryKv::new());
    let host = host_with(kv.clone());
    let all = [
        ("connect", "reject"),
        ("helo", "reject"),
        ("mail", "stamp"),
        ("rcpt", "kv"),
        ("data", "reject"),
    ];
    let active = behave("gate", &[("rcpt", "accept")]);
    host.reload(vec![active, shadow("cand", &all)])
        .await
        .expect("loads");
    let mut s = host.session(&conn(7));
    for d in transaction(s.as_mut(), 7).await {
        assert!(
            matches!(d.verdict, Verdict::Continue | Verdict::Accept),
            "{d:?}"
        );
        // The shadow's modifications (`stamp` at mail) are dropped.
        assert!(d.modifications.is_empty(), "{d:?}");
    }
    drop(s);

    for stage in [Stage::Connect, Stage::Helo, Stage::Rcpt, Stage::Data] {
        let st = compared(&host, "cand", stage, 1).await;
        assert_eq!((st.shadow_agree, st.shadow_differ), (0, 1), "{stage:?}");
    }
    // `stamp` continues: the same effect as the chain's.
    let mail = compared(&host, "cand", Stage::Mail, 1).await;
    assert_eq!((mail.shadow_agree, mail.shadow_differ), (1, 0));
    // The active plugin has no shadow counters.
    let gate = stats_of(&host, "gate", Stage::Rcpt).expect("called");
    assert_eq!((gate.shadow_agree, gate.shadow_differ), (0, 0));

    let diffs = host.shadow_diffs("cand").expect("known");
    let rcpt = diffs.iter().find(|d| d.stage == Stage::Rcpt).expect("kept");
    assert_eq!(rcpt.session, 7);
    assert_eq!((rcpt.chain_verdict, rcpt.chain_code), ("accept", None));
    assert_eq!(
        (rcpt.shadow_verdict, rcpt.shadow_code),
        ("reject", Some(550))
    );
    assert_eq!(rcpt.reason, "5.7.1 count=1");
    assert_eq!(diffs.len(), 4);

    // Its kv writes went to its own namespace only.
    assert_eq!(kv.get("cand", b"count").expect("kv"), None);
    assert_eq!(
        kv.get("shadow:cand", b"count").expect("kv"),
        Some(b"1".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_slow_shadow_neither_delays_nor_fails_the_session() {
    let host = host();
    let mut slow = shadow("slow", &[("rcpt", "spin"), ("spin_ms", "1500")]);
    slow.limits.hook_time_ms = 10_000;
    // Spinning on the clock for 1.5 s takes far more than the default CPU budget.
    slow.limits.hook_fuel = 1 << 50;
    let mut looping = shadow("loop", &[("rcpt", "loop")]);
    looping.limits.hook_fuel = 1_000_000;
    let trap = shadow("trap", &[("mail", "trap")]);
    host.reload(vec![slow, looping, trap]).await.expect("loads");
    let (c, env) = (conn(9), envelope());
    let mut s = host.session(&c);
    assert_eq!(s.mail(&c, &env).await.verdict, Verdict::Continue);
    let started = Instant::now();
    assert_eq!(s.rcpt(&c, &env, &rcpt()).await.verdict, Verdict::Continue);
    let took = started.elapsed();
    // The reply did not wait for the shadow that spins for 1.5 s: it has not even been
    // compared yet.
    let slow_rcpt = stats_of(&host, "slow", Stage::Rcpt).map_or(0, |s| s.shadow_agree);
    assert!(
        took < Duration::from_millis(1500) && slow_rcpt == 0,
        "{took:?}"
    );
    s.end_transaction();
    drop(s);

    // Failures count as their failure policy's verdict (tempfail by default), reason given.
    let looped = compared(&host, "loop", Stage::Rcpt, 1).await;
    assert_eq!((looped.shadow_differ, looped.cpu_budget), (1, 1));
    let trapped = compared(&host, "trap", Stage::Mail, 1).await;
    assert_eq!((trapped.shadow_differ, trapped.traps), (1, 1));
    let d = host.shadow_diffs("trap").expect("known");
    let m = d.iter().find(|d| d.stage == Stage::Mail).expect("kept");
    assert_eq!(
        (m.shadow_verdict, m.shadow_code),
        ("tempfail", Some(451)),
        "{d:?}"
    );
    assert!(m.reason.contains("failed"), "{}", m.reason);
    let slow = compared(&host, "slow", Stage::Rcpt, 1).await;
    assert_eq!(slow.shadow_agree, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn agreement_needs_the_same_reply_code_and_delivery_stages_skip_shadows() {
    let host = host();
    let active = behave("gate", &[("rcpt", "reject")]);
    let same = shadow("same", &[("rcpt", "reject"), ("route", "local")]);
    let other = shadow("other", &[("rcpt", "tempfail")]);
    host.reload(vec![active, same, other]).await.expect("loads");
    let (c, env) = (conn(3), envelope());
    let mut s = host.session(&c);
    s.mail(&c, &env).await;
    assert!(matches!(
        s.rcpt(&c, &env, &rcpt()).await.verdict,
        Verdict::Reject(_)
    ));
    s.end_transaction();
    drop(s);
    assert_eq!(
        compared(&host, "same", Stage::Rcpt, 1).await.shadow_agree,
        1
    );
    assert_eq!(
        compared(&host, "other", Stage::Rcpt, 1).await.shadow_differ,
        1
    );
    let d = host.shadow_diffs("other").expect("known");
    let r = d.iter().find(|d| d.stage == Stage::Rcpt).expect("kept");
    assert_eq!(
        (r.chain_verdict, r.chain_code, r.shadow_code),
        ("reject", Some(550), Some(451)),
        "{d:?}"
    );
    // A shadow is never consulted at the delivery stages ("same" would route locally).
    let req = RouteRequest {
        queue_id: "q1".into(),
        sender: None,
        recipient: Address::new("bob", "example.org"),
    };
    assert_eq!(host.route(&req).await, Route::Continue);
    assert!(stats_of(&host, "same", Stage::Route).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_name_cannot_take_the_shadow_namespace() {
    let host = host();
    let err = host
        .reload(vec![behave("shadow:x", &[])])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("shadow:"), "{err}");
}

/// Shadows hold at most a quarter of the engine's instances (here 1 of 4): a second session's
/// shadow sits out its transaction (counted as skipped) while the first one holds the only
/// unit, and runs again once it is given back.
#[tokio::test(flavor = "multi_thread")]
async fn shadows_hold_at_most_a_quarter_of_the_engines_instances() {
    let host = small_host(4, EngineOptions::default().total_memory_mb);
    host.reload(vec![shadow("s", &[])]).await.expect("loads");
    let env = envelope();
    let (a, b) = (conn(1), conn(2));
    let mut first = host.session(&a);
    first.mail(&a, &env).await;
    compared(&host, "s", Stage::Mail, 1).await;
    let mut second = host.session(&b);
    second.mail(&b, &env).await;
    second.rcpt(&b, &env, &rcpt()).await;
    let until = Instant::now() + Duration::from_secs(30);
    while stats_of(&host, "s", Stage::Rcpt).map_or(0, |s| s.shadow_skipped) == 0 {
        assert!(
            Instant::now() < until,
            "the second shadow was never skipped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mail = stats_of(&host, "s", Stage::Mail).expect("counted");
    assert_eq!((mail.shadow_agree, mail.shadow_skipped), (1, 1));
    // The first transaction ends: its unit is given back (by its task, soon), and a next
    // transaction of the second session is compared.
    first.end_transaction();
    drop(first);
    loop {
        second.end_transaction();
        second.mail(&b, &env).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mail = stats_of(&host, "s", Stage::Mail).expect("counted");
        if mail.shadow_agree == 2 {
            break;
        }
        assert!(Instant::now() < until, "the unit was never given back");
    }
}

/// `auth` is shadowed too, and a shadow gets the password only with `credentials`, as an
/// active plugin does.
#[tokio::test(flavor = "multi_thread")]
async fn auth_is_shadowed_and_the_password_needs_the_credentials_capability() {
    let host = host();
    let mut gate = behave("gate", &[("auth", "check")]);
    gate.capabilities.push(Capability::Credentials);
    let blind = shadow("blind", &[("auth", "check")]);
    let mut sees = shadow("sees", &[("auth", "check")]);
    sees.capabilities.push(Capability::Credentials);
    host.reload(vec![gate, blind, sees]).await.expect("loads");
    let c = conn(4);
    let mut s = host.session(&c);
    let creds = AuthCredentials {
        mechanism: "PLAIN".into(),
        username: "carol".into(),
        authzid: None,
        password: "sesame".into(),
    };
    assert_eq!(s.auth(&c, &creds).await.verdict, Verdict::Accept);
    drop(s);
    assert_eq!(
        compared(&host, "sees", Stage::Auth, 1).await.shadow_agree,
        1
    );
    assert_eq!(
        compared(&host, "blind", Stage::Auth, 1).await.shadow_differ,
        1
    );
    let d = host.shadow_diffs("blind").expect("known");
    assert_eq!(
        (d[0].chain_verdict, d[0].shadow_verdict, d[0].shadow_code),
        ("accept", "tempfail", Some(454)),
        "{d:?}"
    );
    assert_eq!(d[0].reason, "4.7.0 no password");
}

/// A shadow of the `authwit` fixture with config `pairs`, at `order`.
fn authwit(name: &str, order: i32, pairs: &[(&str, &str)]) -> Manifest {
    let mut m = Manifest::new(name, fixture("authwit"));
    (m.mode, m.order, m.limits.hook_time_ms) = (PluginMode::Shadow, order, 5_000);
    for (k, v) in pairs {
        m.config
            .insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    m
}

/// A shadow's signing choice (`suppress-signing`, `sign-with`) is its own: the real message
/// is signed as the active chain chose (here: the default), even once the shadows ran.
#[tokio::test(flavor = "multi_thread")]
async fn a_shadows_signing_choice_never_reaches_the_message() {
    let host = host();
    let suppress = authwit("suppress", 1, &[("signing", "suppress")]);
    let brand = [("signing", "choose"), ("sign_domain", "brand.test")];
    host.reload(vec![suppress, authwit("brand", 2, &brand)])
        .await
        .expect("loads");
    let (c, env) = (conn(11), envelope());
    let mut s = host.session(&c);
    s.mail(&c, &env).await;
    s.rcpt(&c, &env, &rcpt()).await;
    s.data(&c, &env, MessageView { content: MESSAGE }).await;
    compared(&host, "suppress", Stage::Data, 1).await;
    compared(&host, "brand", Stage::Data, 1).await;
    // What the server asks after DATA, to sign the message of a trusted client.
    assert_eq!(s.signing(), SigningRequest::Default);
}

/// A shadow that runs late reads its own transaction's authentication results, not those
/// of the session's next transaction.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_shadow_reads_its_own_transactions_results() {
    let host = host();
    let mut slow = shadow("slow", &[("data", "spin"), ("spin_ms", "500")]);
    (slow.order, slow.limits.hook_fuel) = (1, 1 << 50);
    let reporter = authwit("reporter", 2, &[("report", "yes")]);
    host.reload(vec![slow, reporter]).await.expect("loads");
    let (c, env) = (conn(12), envelope());
    let mut s = host.session(&c);
    s.auth_results(Some(&spf()), None);
    s.mail(&c, &env).await;
    s.data(&c, &env, MessageView { content: MESSAGE }).await;
    // The next transaction starts while the shadows still run the first one's DATA (the
    // slow one spins for 0.5 s before the reporter's turn): its SPF is not checked.
    s.end_transaction();
    s.mail(&c, &env).await;
    compared(&host, "reporter", Stage::Data, 1).await;
    let d = host.shadow_diffs("reporter").expect("known");
    let data = d.iter().find(|d| d.stage == Stage::Data).expect("kept");
    assert_eq!(
        data.reason,
        "5.7.1 spf=softfail/mailfrom/sender.test dkim= dmarc=- arc=-"
    );
}

/// Shadows grow within a share of their own: instances of shadows held open by many
/// transactions fill it, and the active chain still has the engine's whole total.
#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_cannot_take_the_active_chains_memory() {
    let host = small_host(80, 8);
    let mut gate = behave("gate", &[("data", "accept")]);
    gate.stages = Some(vec![Stage::Data]);
    host.reload(vec![gate, shadow("s", &[])])
        .await
        .expect("loads");
    let env = envelope();
    // Transactions left open at MAIL: each holds its shadow's instance, until the shadows'
    // memory (or, before they had a share, the engine's) is spent.
    let mut open = Vec::new();
    for id in 1..=20 {
        let c = conn(id);
        let mut s = host.session(&c);
        s.mail(&c, &env).await;
        open.push(s);
        if compared(&host, "s", Stage::Mail, id).await.exhausted > 0 {
            break;
        }
    }
    let spent = stats_of(&host, "s", Stage::Mail).expect("called");
    assert!(spent.exhausted > 0, "the shadows' memory was never spent");
    let c = conn(100);
    let mut s = host.session(&c);
    s.mail(&c, &env).await;
    let d = s.data(&c, &env, MessageView { content: MESSAGE }).await;
    assert_eq!(d.verdict, Verdict::Accept);
    drop(open);
}

/// A session has at most two DATA stages queued for its shadows (each holds the message):
/// the one they run and one waiting. Further ones are skipped and counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_queues_at_most_two_messages_for_its_shadows() {
    let host = host();
    let mut slow = shadow("slow", &[("data", "spin"), ("spin_ms", "500")]);
    slow.limits.hook_fuel = 1 << 50;
    host.reload(vec![slow]).await.expect("loads");
    let (c, env) = (conn(13), envelope());
    let mut s = host.session(&c);
    for _ in 0..4 {
        s.mail(&c, &env).await;
        s.data(&c, &env, MessageView { content: MESSAGE }).await;
        s.end_transaction();
    }
    let st = compared(&host, "slow", Stage::Data, 2).await;
    assert_eq!((st.shadow_agree, st.shadow_skipped), (2, 2));
}

/// The messages queued for shadows, across sessions, are held to a quarter of the engine's
/// `total_memory_mb`: a larger one is skipped at once.
#[tokio::test(flavor = "multi_thread")]
async fn messages_queued_for_shadows_are_held_to_a_quarter_of_the_total_memory() {
    let host = small_host(8, 8);
    host.reload(vec![shadow("s", &[])]).await.expect("loads");
    let (c, env) = (conn(14), envelope());
    let mut s = host.session(&c);
    s.mail(&c, &env).await;
    s.data(&c, &env, MessageView { content: MESSAGE }).await;
    s.end_transaction();
    compared(&host, "s", Stage::Data, 1).await;
    let mut big = MESSAGE.to_vec();
    big.resize((2 << 20) + 1, b'x');
    s.mail(&c, &env).await;
    s.data(&c, &env, MessageView { content: &big }).await;
    let st = stats_of(&host, "s", Stage::Data).expect("counted");
    assert_eq!(
        (st.shadow_agree + st.shadow_differ, st.shadow_skipped),
        (1, 1)
    );
}
