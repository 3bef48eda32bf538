//! MX delivery through a DNS server on loopback, and the bounces (DSNs) that failures produce.

mod support;

use corvid_delivery::DeliveryConfig;
use corvid_queue::Spool;
use corvid_types::{Notify, RcptParams, Recipient};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::dns::{serve, Zone};
use support::peer::{Peer, Script};
use support::*;
use tokio::io::AsyncWriteExt;

const BODY: &[u8] = b"Subject: mx test\r\nMessage-ID: <m1@corvid.test>\r\n\r\nhello\r\n";

fn mx_config(dns: SocketAddr, port: u16) -> DeliveryConfig {
    let mut c = route_to("unused.test", "mx".into());
    c.routes.clear();
    c.nameservers = vec![dns];
    c.smtp_port = port;
    c.ipv6 = false;
    // The scripted peers listen on loopback.
    c.allow_loopback_mx = true;
    c
}

fn zone() -> Zone {
    Zone::default()
        .mx("far.test", 10, "mx1.far.test")
        .mx("far.test", 20, "mx2.far.test")
        .addr("mx1.far.test", "127.0.0.1")
        .addr("mx2.far.test", "127.0.0.1")
        .mx("null.test", 0, ".")
        .addr("implicit.test", "127.0.0.1")
        .exists("bare.test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_implicit_mx_and_null_mx() {
    let peer = Peer::start(Script::default()).await;
    let dns = serve(zone()).await;
    let h = Harness::start(mx_config(dns, peer.addr.port()));
    let sender = Some("bob@corvid.test");
    let a = h.submit(&envelope(sender, &["x@far.test"]), BODY).await;
    let b = h
        .submit(&envelope(sender, &["y@implicit.test"]), BODY)
        .await;
    wait_until("both delivered", 10, || {
        h.get(&a).is_none() && h.get(&b).is_none()
    })
    .await;
    let done = peer.completed();
    assert_eq!(done.len(), 2);
    assert!(done
        .iter()
        .all(|m| m.raw.starts_with(b"Subject: mx test\r\n")));

    let c = h.submit(&envelope(sender, &["z@null.test"]), BODY).await;
    let d = h.submit(&envelope(sender, &["z@bare.test"]), BODY).await;
    let e = h
        .submit(&envelope(sender, &["z@nxdomain.test"]), BODY)
        .await;
    wait_until("three bounced", 10, || {
        [&c, &d, &e].iter().all(|id| h.get(id).is_none())
    })
    .await;
    wait_until("three DSNs", 10, || {
        maildir(&h.mail_root(), "bob").len() == 3
    })
    .await;
    let dsns: Vec<String> = maildir(&h.mail_root(), "bob")
        .into_iter()
        .map(|d| String::from_utf8(d).unwrap())
        .collect();
    for status in ["5.1.10", "5.4.4", "5.1.2"] {
        assert!(
            dsns.iter()
                .any(|d| d.contains(&format!("Status: {status}\r\n"))),
            "{status}: {dsns:?}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_mx_is_tried_when_the_first_is_down() {
    let peer = Peer::start(Script::default()).await;
    // mx1 refuses at setup: it answers the connection with 554 and hangs up (RFC 5321 3.1:
    // the client then tries the next MX). It counts the connections it refused.
    let refuser = tokio::net::TcpListener::bind(("127.0.0.2", peer.addr.port()))
        .await
        .unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refused);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = refuser.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"554 5.3.2 not accepting mail\r\n").await;
        }
    });
    let zone = Zone::default()
        .mx("far.test", 10, "mx1.far.test")
        .mx("far.test", 20, "mx2.far.test")
        .addr("mx1.far.test", "127.0.0.2")
        .addr("mx2.far.test", "127.0.0.1");
    let dns = serve(zone).await;
    let h = Harness::start(mx_config(dns, peer.addr.port()));
    let id = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), BODY)
        .await;
    wait_until("delivered", 10, || h.get(&id).is_none()).await;
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "mx1 was tried first, once"
    );
    assert_eq!(peer.completed().len(), 1);
    h.stop().await;
}

fn failing_peer() -> Script {
    Script {
        rcpt: Arc::new(|_, rcpt| {
            if rcpt.starts_with("ok") {
                "250 2.1.5 ok".into()
            } else {
                "550 5.1.1 no such user".into()
            }
        }),
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_make_one_dsn_per_message() {
    let peer = Peer::start(failing_peer()).await;
    let h = Harness::start(route_to(
        "far.test",
        format!("smtp://127.0.0.1:{}", peer.addr.port()),
    ));
    let id = h
        .submit(
            &envelope(
                Some("bob@corvid.test"),
                &["a@far.test", "ok@far.test", "b@far.test"],
            ),
            BODY,
        )
        .await;
    wait_until("done", 10, || h.get(&id).is_none()).await;
    wait_until("a DSN", 10, || !maildir(&h.mail_root(), "bob").is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let dsns = maildir(&h.mail_root(), "bob");
    assert_eq!(dsns.len(), 1, "one DSN for both failed recipients");
    let dsn = String::from_utf8(dsns[0].clone()).unwrap();
    for want in [
        "Return-Path: <>\r\n",
        "From: Mail Delivery System <MAILER-DAEMON@mx.corvid.test>\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Reporting-MTA: dns; mx.corvid.test\r\n",
        "Final-Recipient: rfc822; a@far.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; 127.0.0.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
        "Final-Recipient: rfc822; b@far.test\r\n",
        "Content-Type: message/rfc822\r\n\r\nSubject: mx test\r\n",
    ] {
        assert!(dsn.contains(want), "missing {want:?} in\n{dsn}");
    }
    assert!(!dsn.contains("Final-Recipient: rfc822; ok@far.test"));
    assert!(crlf_only(&dsns[0]));
    assert_eq!(
        peer.completed().len(),
        1,
        "the accepted recipient got the message"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dsn_for_the_null_sender_or_notify_never() {
    let peer = Peer::start(failing_peer()).await;
    let h = Harness::start(route_to(
        "far.test",
        format!("smtp://127.0.0.1:{}", peer.addr.port()),
    ));
    let null = h.submit(&envelope(None, &["a@far.test"]), BODY).await;
    let mut never = envelope(Some("bob@corvid.test"), &[]);
    never.recipients.push(Recipient {
        address: addr("b@far.test"),
        params: RcptParams {
            notify: Some(Notify {
                never: true,
                ..Notify::default()
            }),
            orcpt: None,
        },
    });
    let never = h.submit(&never, BODY).await;
    wait_until("both failed", 10, || {
        h.get(&null).is_none() && h.get(&never).is_none()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(h.spool.list().unwrap().is_empty(), "no DSN was queued");
    assert!(maildir(&h.mail_root(), "bob").is_empty());
    assert!(maildir(&h.mail_root(), "postmaster").is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_warning_goes_out_once_when_asked_for() {
    // Nothing listens on this port: every attempt is deferred.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = route_to("far.test", format!("smtp://127.0.0.1:{closed}"));
    config.delay_warning = std::time::Duration::from_secs(1);
    let h = Harness::start(config);
    let mut env = envelope(Some("bob@corvid.test"), &["plain@far.test"]);
    env.recipients.push(Recipient {
        address: addr("asked@far.test"),
        params: RcptParams {
            notify: Some(Notify {
                delay: true,
                failure: true,
                ..Notify::default()
            }),
            orcpt: None,
        },
    });
    let id = h.submit(&env, BODY).await;
    wait_until("a delay DSN", 10, || {
        maildir(&h.mail_root(), "bob").len() == 1
    })
    .await;
    let dsn = String::from_utf8(maildir(&h.mail_root(), "bob").remove(0)).unwrap();
    assert!(
        dsn.contains("Subject: Delayed Mail (still being retried)\r\n"),
        "{dsn}"
    );
    assert!(
        dsn.contains(
            "Final-Recipient: rfc822; asked@far.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
        ),
        "{dsn}"
    );
    assert!(
        !dsn.contains("plain@far.test\r\nAction"),
        "no NOTIFY=DELAY, no warning"
    );
    assert!(dsn.contains("Will-Retry-Until: "));
    // Later attempts do not warn again.
    wait_until("more attempts", 10, || {
        h.get(&id).is_some_and(|m| m.recipients[1].attempts >= 3)
    })
    .await;
    assert_eq!(maildir(&h.mail_root(), "bob").len(), 1);
    assert!(h.get(&id).unwrap().recipients[1].delay_notified);
    h.stop().await;
}
