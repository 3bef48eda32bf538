//! Mail loops: MX hosts that lead back here are refused with 5.4.6 (RFC 3463 X.4.6), and so
//! are messages with more `Received:` fields than `max_hops` (RFC 5321 6.3).

mod support;

use corvid_delivery::DeliveryConfig;
use std::net::SocketAddr;
use support::dns::{serve, Zone};
use support::peer::{Peer, Script};
use support::*;

fn mx_config(dns: SocketAddr, port: u16, allow_loopback: bool) -> DeliveryConfig {
    let mut c = route_to("unused.test", "mx".into());
    c.routes.clear();
    c.nameservers = vec![dns];
    c.smtp_port = port;
    c.ipv6 = false;
    c.allow_loopback_mx = allow_loopback;
    c
}

fn zone() -> Zone {
    Zone::default()
        .mx("lo.test", 10, "mx.lo.test")
        .addr("mx.lo.test", "127.0.0.1")
        .mx("any.test", 10, "mx.any.test")
        .addr("mx.any.test", "0.0.0.0")
}

/// Waits for the DSN to bob and returns its text.
async fn bounce(h: &Harness) -> String {
    let root = h.mail_root();
    wait_until("a DSN", 10, || !maildir(&root, "bob").is_empty()).await;
    String::from_utf8(maildir(&root, "bob").concat()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_and_unspecified_mx_hosts_bounce_with_5_4_6() {
    let peer = Peer::start(Script::default()).await;
    let dns = serve(zone()).await;
    let h = Harness::start(mx_config(dns, peer.addr.port(), false));
    let a = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["x@lo.test"]),
            b"Subject: a\r\n\r\na\r\n",
        )
        .await;
    wait_until("bounced", 10, || h.get(&a).is_none()).await;
    let dsn = bounce(&h).await;
    assert!(dsn.contains("Status: 5.4.6\r\n"), "{dsn}");
    assert!(dsn.contains("a loopback address"), "{dsn}");
    let b = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["y@any.test"]),
            b"Subject: b\r\n\r\nb\r\n",
        )
        .await;
    wait_until("bounced", 10, || h.get(&b).is_none()).await;
    wait_until("two DSNs", 10, || maildir(&h.mail_root(), "bob").len() == 2).await;
    let all = String::from_utf8(maildir(&h.mail_root(), "bob").concat()).unwrap();
    assert!(all.contains("an unspecified address"), "{all}");
    assert_eq!(peer.connections(), 0, "a refused MX was connected to");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_on_our_own_listening_address_bounces_but_a_named_route_does_not() {
    let peer = Peer::start(Script::default()).await;
    let dns = serve(zone()).await;
    let mut config = mx_config(dns, peer.addr.port(), true);
    // A route naming the same host:port explicitly is the operator's choice: not checked.
    config.routes = route_to("named.test", format!("smtp://{}", peer.addr)).routes;
    let own = peer.addr;
    let h = Harness::start_custom(config, fast_retry(), move |d| d.with_listening_addrs([own]));
    let a = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["x@lo.test"]),
            b"Subject: a\r\n\r\na\r\n",
        )
        .await;
    wait_until("bounced", 10, || h.get(&a).is_none()).await;
    let dsn = bounce(&h).await;
    assert!(dsn.contains("Status: 5.4.6\r\n"), "{dsn}");
    assert!(dsn.contains("this server's own listening address"), "{dsn}");
    assert_eq!(peer.connections(), 0);
    let b = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["x@named.test"]),
            b"Subject: b\r\n\r\nb\r\n",
        )
        .await;
    wait_until("delivered", 10, || h.get(&b).is_none()).await;
    assert_eq!(peer.completed().len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_received_fields_bounce_with_5_4_6() {
    let peer = Peer::start(Script::default()).await;
    let h = Harness::start_custom(
        route_to("far.test", format!("smtp://{}", peer.addr)),
        fast_retry(),
        |d| d.with_max_hops(5),
    );
    let trace = |n: usize| {
        let mut m = "Received: from a by b; Mon, 7 Dec 2026 00:00:00 +0000\r\n".repeat(n);
        m.push_str("Subject: hops\r\n\r\nbody\r\n");
        m.into_bytes()
    };
    // Five as received plus the one this server added at intake: still delivered.
    let ok = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["x@far.test"]),
            &trace(6),
        )
        .await;
    wait_until("delivered", 10, || h.get(&ok).is_none()).await;
    assert_eq!(peer.completed().len(), 1);
    let looping = h
        .submit(
            &envelope(
                Some("bob@corvid.test"),
                &["x@far.test", "alice@corvid.test"],
            ),
            &trace(7),
        )
        .await;
    wait_until("bounced", 10, || h.get(&looping).is_none()).await;
    let dsn = bounce(&h).await;
    assert!(dsn.contains("Status: 5.4.6\r\n"), "{dsn}");
    assert!(dsn.contains("7 Received: fields"), "{dsn}");
    assert_eq!(peer.completed().len(), 1, "the looping message went out");
    assert!(
        maildir(&h.mail_root(), "alice").is_empty(),
        "delivered locally"
    );
    h.stop().await;
}
