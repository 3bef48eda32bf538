//! Facts on demand (`wit/context.wit`): SDK plugins get a stamp per hook and fetch only the
//! records whose number changed. These tests show the facts a plugin sees are always the
//! current ones: after the connection facts change, between transactions, on a pooled
//! instance serving another connection, and with recipients added to the envelope.

mod common;

use common::*;
use corvid_plugin_host::{InstanceMode, PluginHost};
use corvid_types::{Address, Decision, Envelope, Policy, PolicySession, Recipient, Verdict};

fn text(d: Decision) -> String {
    match d.verdict {
        Verdict::Reject(r) => r.text(),
        other => panic!("{other:?}"),
    }
}

fn to(local: &str) -> Recipient {
    Recipient {
        address: Address::new(local, "example.org"),
        params: Default::default(),
    }
}

async fn echo_host() -> PluginHost {
    let host = host();
    let mut m = behave("echo", &[("rcpt", "echo")]);
    m.instance = InstanceMode::Pool;
    host.reload(vec![m]).await.expect("loads");
    host
}

async fn rcpt(
    s: &mut Box<dyn PolicySession>,
    c: &corvid_types::ConnectionInfo,
    e: &Envelope,
    r: &str,
) -> String {
    text(s.rcpt(c, e, &to(r)).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_instance_sees_each_change_of_the_facts() {
    let host = echo_host().await;
    let mut c = conn(1);
    let mut s = host.session(&c);
    let mut env = envelope();
    s.mail(&c, &env).await;
    assert_eq!(
        rcpt(&mut s, &c, &env, "bob").await,
        "ip=192.0.2.7 helo=client.test txn=1 from=alice n=0 rcpt=bob"
    );
    // Same instance (same transaction), same facts but another recipient.
    assert_eq!(
        rcpt(&mut s, &c, &env, "carol").await,
        "ip=192.0.2.7 helo=client.test txn=1 from=alice n=0 rcpt=carol"
    );
    // The envelope grew and the connection facts changed within the transaction.
    env.recipients.push(to("bob"));
    c.helo = Some("other.test".into());
    assert_eq!(
        rcpt(&mut s, &c, &env, "dave").await,
        "ip=192.0.2.7 helo=other.test txn=1 from=alice n=1 rcpt=dave"
    );
    s.end_transaction();
    // A new transaction on the pooled instance: the transaction number changed.
    let env = Envelope {
        sender: Some(Address::new("zed", "sender.test")),
        ..Envelope::default()
    };
    s.mail(&c, &env).await;
    assert_eq!(
        rcpt(&mut s, &c, &env, "bob").await,
        "ip=192.0.2.7 helo=other.test txn=2 from=zed n=0 rcpt=bob"
    );
    s.end_transaction();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_instance_serving_another_connection_sees_its_facts() {
    let host = echo_host().await;
    let c1 = conn(1);
    let mut c2 = conn(2);
    c2.peer_addr = "198.51.100.9:4000".parse().expect("addr");
    c2.helo = Some("second.test".into());
    let env = envelope();
    for round in 0..2 {
        for c in [&c1, &c2] {
            let mut s = host.session(c);
            s.mail(c, &env).await;
            let got = rcpt(&mut s, c, &env, "bob").await;
            let want = if c.session_id == 1 {
                "ip=192.0.2.7 helo=client.test txn=1 from=alice n=0 rcpt=bob"
            } else {
                "ip=198.51.100.9 helo=second.test txn=1 from=alice n=0 rcpt=bob"
            };
            assert_eq!(got, want, "round {round}, session {}", c.session_id);
            s.end_transaction();
        }
    }
    let made = host.stats().iter().map(|s| s.instantiations).max();
    assert_eq!(made, Some(1), "one pooled instance served both connections");
}

/// `#[async_trait]` boxes each hook's whole future, at every call. The warm `rcpt` call's must
/// fit glibc's per-thread cache (tcache: requests up to 1032 bytes): above it, malloc and free
/// cost several hundred instructions more per hook call (callgrind on the `hooks` bench).
#[test]
fn warm_hook_future_fits_the_allocators_cache() {
    let host = host();
    let conn = conn(1);
    let (env, to) = (envelope(), common::rcpt());
    let mut session = host.session(&conn);
    // Only made, not polled: its size is that of every call's.
    let fut = session.rcpt(&conn, &env, &to);
    let size = std::mem::size_of_val(&*fut);
    eprintln!("the rcpt hook's future: {size} bytes");
    assert!(size <= 1024, "the rcpt hook's future is {size} bytes");
}
