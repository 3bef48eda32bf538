//! The SMTP client against a scripted next hop: retries, drops, line endings, reuse,
//! extensions and TLS.

mod support;

use corvid_queue::RecipientStatus;
use corvid_types::{Notify, RcptParams, Recipient, Ret};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::peer::{DataAction, Peer, Script};
use support::*;

const BODY: &[u8] = b"Subject: t\r\n\r\nhello\r\n";

fn relay(peer: &Peer) -> corvid_delivery::DeliveryConfig {
    route_to("far.test", format!("smtp://127.0.0.1:{}", peer.addr.port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_retried_then_delivered() {
    // The first RCPT is deferred, every later one accepted (on whatever session).
    let seen = Arc::new(AtomicUsize::new(0));
    let peer = Peer::start(Script {
        rcpt: Arc::new(move |_, _| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                "451 4.3.0 try later".into()
            } else {
                "250 2.1.5 ok".into()
            }
        }),
        ..Script::default()
    })
    .await;
    let h = Harness::start(relay(&peer));
    let id = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), BODY)
        .await;
    wait_until("first attempt", 5, || {
        h.get(&id).is_some_and(|m| m.recipients[0].attempts == 1)
    })
    .await;
    let m = h.get(&id).unwrap();
    let r = &m.recipients[0];
    assert_eq!(r.status, RecipientStatus::Pending);
    assert!(
        r.last_reply.as_deref().unwrap().starts_with("4.3.0 "),
        "{r:?}"
    );
    assert_eq!(
        r.route.as_deref(),
        Some(format!("smtp://127.0.0.1:{}", peer.addr.port()).as_str())
    );
    assert!(r
        .diagnostic
        .as_deref()
        .unwrap()
        .starts_with("smtp; 451 4.3.0"));
    wait_until("delivered", 10, || h.get(&id).is_none()).await;
    assert_eq!(peer.completed().len(), 1);
    assert!(
        maildir(&h.mail_root(), "bob").is_empty(),
        "no DSN for a delivered message"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_mid_data_is_retried_and_delivered_once() {
    let peer = Peer::start(Script {
        data: Arc::new(|conn, _| {
            if conn == 0 {
                DataAction::DropMidData
            } else {
                DataAction::Reply("250 2.0.0 queued".into())
            }
        }),
        ..Script::default()
    })
    .await;
    let h = Harness::start(relay(&peer));
    let id = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["x@far.test", "y@far.test"]),
            BODY,
        )
        .await;
    wait_until("delivered", 10, || h.get(&id).is_none()).await;
    let done = peer.completed();
    assert_eq!(done.len(), 1, "delivered exactly once");
    assert_eq!(done[0].rcpts.len(), 2, "both recipients in one transaction");
    assert!(peer.connections() >= 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_line_endings_never_reach_the_wire() {
    let peer = Peer::start(Script::default()).await;
    let h = Harness::start(relay(&peer));
    let content = b"Subject: lf\n\nline one\nline two\r.dot\r\n.\r\nend without newline";
    let id = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), content)
        .await;
    wait_until("delivered", 10, || h.get(&id).is_none()).await;
    let [msg] = &peer.completed()[..] else {
        panic!("one message expected")
    };
    assert!(
        crlf_only(&msg.raw),
        "{:?}",
        String::from_utf8_lossy(&msg.raw)
    );
    assert_eq!(
        msg.raw,
        b"Subject: lf\r\n\r\nline one\r\nline two\r\n..dot\r\n..\r\nend without newline\r\n.\r\n"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_reused_and_dsn_parameters_passed_on() {
    let mut script = Script::default();
    script.extensions.push("DSN".into());
    let peer = Peer::start(script).await;
    let h = Harness::start(relay(&peer));
    let mut env = envelope(Some("bob@corvid.test"), &[]);
    env.params.ret = Some(Ret::Headers);
    env.params.envid = Some("abc+2B1".into());
    env.recipients.push(Recipient {
        address: addr("x@far.test"),
        params: RcptParams {
            notify: Some(Notify {
                failure: true,
                delay: true,
                ..Notify::default()
            }),
            orcpt: Some("rfc822;x@far.test".into()),
        },
    });
    let a = h.submit(&env, BODY).await;
    wait_until("first delivered", 10, || h.get(&a).is_none()).await;
    let b = h
        .submit(&envelope(Some("bob@corvid.test"), &["y@far.test"]), BODY)
        .await;
    wait_until("second delivered", 10, || h.get(&b).is_none()).await;
    assert_eq!(peer.completed().len(), 2);
    assert_eq!(
        peer.connections(),
        1,
        "the second message reused the session"
    );
    let cmds = peer.commands();
    assert!(
        cmds.contains(&"MAIL FROM:<bob@corvid.test> SIZE=21 RET=HDRS ENVID=abc+2B1".to_string()),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(
            &"RCPT TO:<x@far.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x@far.test".to_string()
        ),
        "{cmds:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_fallback_and_what_cannot_be_converted() {
    let peer = Peer::start(Script {
        no_ehlo: true,
        ..Script::default()
    })
    .await;
    let h = Harness::start(relay(&peer));
    let plain = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), BODY)
        .await;
    wait_until("plain delivered", 10, || h.get(&plain).is_none()).await;
    assert!(peer.commands().iter().any(|c| c == "HELO mx.corvid.test"));
    assert!(peer
        .commands()
        .contains(&"MAIL FROM:<bob@corvid.test>".to_string()));

    let eight = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["x@far.test"]),
            "Subject: é\r\n\r\nçà\r\n".as_bytes(),
        )
        .await;
    wait_until("8-bit bounced", 10, || h.get(&eight).is_none()).await;
    let utf8 = h
        .submit(&envelope(Some("bob@corvid.test"), &["jörg@far.test"]), BODY)
        .await;
    wait_until("utf-8 bounced", 10, || h.get(&utf8).is_none()).await;
    wait_until("two DSNs", 10, || maildir(&h.mail_root(), "bob").len() == 2).await;
    let dsns: Vec<String> = maildir(&h.mail_root(), "bob")
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert!(
        dsns.iter()
            .any(|d| d.contains("Status: 5.6.3") && d.contains("cannot convert 8-bit")),
        "{dsns:?}"
    );
    assert!(
        dsns.iter()
            .any(|d| d.contains("Status: 5.6.7") && d.contains("SMTPUTF8")),
        "{dsns:?}"
    );
    assert_eq!(peer.completed().len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_used_when_offered() {
    let peer = Peer::start(Script {
        tls: Some(peer_tls()),
        ..Script::default()
    })
    .await;
    let h = Harness::start(relay(&peer));
    let id = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), BODY)
        .await;
    wait_until("delivered", 10, || h.get(&id).is_none()).await;
    let [msg] = &peer.completed()[..] else {
        panic!("one message expected")
    };
    assert!(msg.tls, "the transaction ran inside TLS");
    let ehlos = peer
        .commands()
        .iter()
        .filter(|c| c.starts_with("EHLO"))
        .count();
    assert_eq!(ehlos, 2, "EHLO again after STARTTLS (RFC 3207 4.2)");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_defers_when_starttls_is_missing() {
    let peer = Peer::start(Script::default()).await;
    let mut config = relay(&peer);
    config.routes[0].require_tls = true;
    let h = Harness::start(config);
    let id = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), BODY)
        .await;
    wait_until("attempted", 5, || {
        h.get(&id).is_some_and(|m| m.recipients[0].attempts >= 1)
    })
    .await;
    let m = h.get(&id).unwrap();
    assert_eq!(m.recipients[0].status, RecipientStatus::Pending);
    assert!(
        m.recipients[0]
            .last_reply
            .as_deref()
            .unwrap()
            .starts_with("4.7.10 "),
        "{:?}",
        m.recipients[0]
    );
    assert!(peer.completed().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_replies_per_recipient() {
    let peer = Peer::start(Script {
        lmtp: true,
        data: Arc::new(|_, rcpt| {
            if rcpt.starts_with("full") {
                DataAction::Reply("552 5.2.2 mailbox full".into())
            } else {
                DataAction::Reply("250 2.0.0 saved".into())
            }
        }),
        ..Script::default()
    })
    .await;
    let config = route_to("far.test", format!("lmtp://127.0.0.1:{}", peer.addr.port()));
    let h = Harness::start(config);
    let id = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["ok@far.test", "full@far.test"]),
            BODY,
        )
        .await;
    wait_until("done", 10, || h.get(&id).is_none()).await;
    assert!(peer.commands().iter().any(|c| c == "LHLO mx.corvid.test"));
    assert_eq!(peer.completed().len(), 1);
    wait_until("DSN for the full mailbox", 10, || {
        maildir(&h.mail_root(), "bob").len() == 1
    })
    .await;
    let dsn = String::from_utf8(maildir(&h.mail_root(), "bob").remove(0)).unwrap();
    assert!(
        dsn.contains("Final-Recipient: rfc822; full@far.test\r\nAction: failed\r\nStatus: 5.2.2"),
        "{dsn}"
    );
    assert!(!dsn.contains("Final-Recipient: rfc822; ok@far.test"));
    h.stop().await;
}

fn peer_tls() -> Arc<rustls::ServerConfig> {
    support::peer::tls_config()
}
