//! Instance modes (fresh per transaction, warm per connection, pooled) and the `auth` stage.

mod common;

use common::*;
use corvid_plugin_host::{Capability, InstanceMode, PluginHost};
use corvid_types::{AuthCredentials, Decision, MessageView, Policy, PolicySession, Verdict};

fn text(d: Decision) -> String {
    match d.verdict {
        Verdict::Reject(r) | Verdict::Tempfail(r) => r.text(),
        other => panic!("{other:?}"),
    }
}

/// One transaction of four hooks; the fixture's `data = "count"` answers with the number of
/// hooks its instance has served.
async fn transaction(s: &mut Box<dyn PolicySession>, session: u64) -> String {
    let c = conn(session);
    s.connect(&c).await;
    s.mail(&c, &envelope()).await;
    s.rcpt(&c, &envelope(), &rcpt()).await;
    let d = s
        .data(&c, &envelope(), MessageView { content: MESSAGE })
        .await;
    s.end_transaction();
    text(d)
}

fn instantiations(host: &PluginHost) -> u64 {
    host.stats()
        .iter()
        .map(|s| s.instantiations)
        .max()
        .unwrap_or(0)
}

async fn host_with(mode: InstanceMode, data: &str) -> PluginHost {
    let host = host();
    let mut m = behave("b", &[("data", data)]);
    m.instance = mode;
    host.reload(vec![m]).await.expect("loads");
    host
}

/// `connection` mode is the pool: a connection keeps no instance between transactions, so
/// idle connections cannot exhaust the engine's instances.
#[tokio::test(flavor = "multi_thread")]
async fn connection_mode_is_pooled() {
    let host = host_with(InstanceMode::Connection, "globals").await;
    let mut s = host.session(&conn(1));
    assert_eq!(transaction(&mut s, 1).await, "hooks=3 global=1");
    let mut other = host.session(&conn(2));
    assert_eq!(
        transaction(&mut other, 2).await,
        "hooks=3 global=2",
        "the instance went back to the pool, not to the connection"
    );
    assert_eq!(instantiations(&host), 1);
}

/// A pooled instance is shared by connections (its globals carry on), while the SDK gives
/// every transaction a fresh plugin value (the struct's count restarts).
#[tokio::test(flavor = "multi_thread")]
async fn pool_mode_shares_warm_instances_but_not_plugin_state() {
    let host = host_with(InstanceMode::Pool, "globals").await;
    let expected = [
        (1, "hooks=3 global=1"),
        (2, "hooks=3 global=2"),
        (3, "hooks=3 global=3"),
    ];
    for (session, expected) in expected {
        let mut s = host.session(&conn(session));
        assert_eq!(transaction(&mut s, session).await, expected);
    }
    assert_eq!(instantiations(&host), 1);
    // A connection that ends without finishing a transaction gives its instance back too.
    {
        let mut s = host.session(&conn(4));
        s.connect(&conn(4)).await;
        s.mail(&conn(4), &envelope()).await;
    }
    let mut s = host.session(&conn(5));
    assert_eq!(transaction(&mut s, 5).await, "hooks=3 global=4");
    assert_eq!(instantiations(&host), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_instance_is_never_reused() {
    let host = host_with(InstanceMode::Pool, "trap").await;
    for session in 1..=3 {
        let mut s = host.session(&conn(session));
        assert_eq!(
            transaction(&mut s, session).await,
            "Temporary policy failure"
        );
    }
    assert_eq!(instantiations(&host), 3, "each trap discards its instance");
}

/// `connect` runs on an instance of its own (session stages take one per hook call); MAIL,
/// RCPT and DATA share the transaction's instance.
#[tokio::test(flavor = "multi_thread")]
async fn transaction_mode_is_fresh_every_time() {
    let host = host_with(InstanceMode::Transaction, "count").await;
    let mut s = host.session(&conn(1));
    for _ in 0..3 {
        assert_eq!(transaction(&mut s, 1).await, "hooks=3");
    }
    assert_eq!(instantiations(&host), 6);
}

fn creds(password: &str) -> AuthCredentials {
    AuthCredentials {
        mechanism: "PLAIN".into(),
        username: "carol".into(),
        authzid: None,
        password: password.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_hook_decides_and_sees_the_password_only_with_credentials() {
    let host = host();
    let mut m = behave("auth", &[("auth", "check")]);
    m.capabilities.push(Capability::Credentials);
    host.reload(vec![m.clone()]).await.expect("loads");
    let c = conn(1);
    let d = host.session(&c).auth(&c, &creds("sesame")).await;
    assert_eq!(d.verdict, Verdict::Accept);
    let d = host.session(&c).auth(&c, &creds("wrong")).await;
    assert!(
        matches!(d.verdict, Verdict::Reject(ref r) if r.code == 535),
        "{d:?}"
    );

    // Without the capability the plugin gets no password.
    m.capabilities.retain(|c| *c != Capability::Credentials);
    host.reload(vec![m]).await.expect("loads");
    let d = host.session(&c).auth(&c, &creds("sesame")).await;
    assert_eq!(text(d), "no password");
}
