//! Verified outbound TLS: certificates checked against the trust anchors and the MX host
//! name under `verify`, recorded only under `opportunistic`, and credentials sent only over
//! a verified session.

mod support;

use corvid_delivery::DeliveryConfig;
use corvid_queue::RecipientStatus;
use std::net::SocketAddr;
use support::certs::{Ca, Kind};
use support::dns::{serve, Zone};
use support::peer::{Peer, Script};
use support::*;

const BODY: &[u8] = b"Subject: tls\r\n\r\nhello\r\n";

fn tls_peer(config: std::sync::Arc<rustls::ServerConfig>, auth: bool) -> Script {
    let mut s = Script {
        tls: Some(config),
        ..Script::default()
    };
    if auth {
        s.extensions.push("AUTH PLAIN LOGIN".into());
    }
    s
}

/// MX delivery for far.test through `dns`, with `extra` TOML for the [delivery] section.
fn mx_config(dns: SocketAddr, port: u16, ca: &Ca, extra: &str) -> DeliveryConfig {
    let text = format!(
        "nameservers = [\"{dns}\"]\nsmtp_port = {port}\nipv6 = false\nallow_loopback_mx = true\n\
         timeouts = {{ connect = \"2s\", greeting = \"5s\", command = \"5s\" }}\n\
         {extra}\n[tls]\nca_file = \"{}\"\n",
        ca.pem_file.display()
    );
    let c: DeliveryConfig = toml::from_str(&text).unwrap();
    c.check().unwrap();
    c
}

/// Sends one message to x@far.test and waits for the first attempt's result.
async fn attempt(h: &Harness) -> (RecipientStatus, String) {
    let id = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), BODY)
        .await;
    wait_until("an outcome", 10, || {
        h.get(&id).is_none_or(|m| m.recipients[0].attempts >= 1)
    })
    .await;
    match h.get(&id) {
        None => (RecipientStatus::Delivered, String::new()),
        Some(m) => (
            m.recipients[0].status,
            m.recipients[0].last_reply.clone().unwrap_or_default(),
        ),
    }
}

fn zone() -> Zone {
    Zone::default()
        .mx("far.test", 10, "mx.far.test")
        .addr("mx.far.test", "127.0.0.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_delivers_to_the_right_certificate_and_defers_the_wrong_ones() {
    let ca = Ca::new();
    let dns = serve(zone()).await;
    let cases = [
        (Kind::Valid, "mx.far.test", true),
        (Kind::SelfSigned, "mx.far.test", false),
        (Kind::Valid, "other.test", false),
        // RFC 7672 3.2.2 / RFC 8461 4.1: the MX host name counts, not the recipient domain.
        (Kind::Valid, "far.test", false),
        (Kind::Expired, "mx.far.test", false),
    ];
    for (kind, name, good) in cases {
        let peer = Peer::start(tls_peer(ca.server(kind, name), false)).await;
        let config = mx_config(
            dns,
            peer.addr.port(),
            &ca,
            "[tls.domains]\n\"far.test\" = \"verify\"",
        );
        let h = Harness::start(config);
        let (status, reply) = attempt(&h).await;
        if good {
            assert_eq!(
                status,
                RecipientStatus::Delivered,
                "{kind:?} {name}: {reply}"
            );
            assert!(peer.completed()[0].tls);
        } else {
            assert_eq!(status, RecipientStatus::Pending, "{kind:?} {name}");
            assert!(reply.starts_with("4.7.5 "), "{kind:?} {name}: {reply}");
            assert!(peer.completed().is_empty(), "{kind:?} {name}: delivered");
        }
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_delivers_over_tls_whatever_the_certificate() {
    let ca = Ca::new();
    let dns = serve(zone()).await;
    let peer = Peer::start(tls_peer(ca.server(Kind::SelfSigned, "wrong.test"), false)).await;
    let h = Harness::start(mx_config(dns, peer.addr.port(), &ca, ""));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Delivered, "{reply}");
    assert!(peer.completed()[0].tls, "not sent over TLS");
    h.stop().await;
}

fn smart_host(peer: &Peer, ca: &Ca, dns: SocketAddr) -> DeliveryConfig {
    let extra = format!(
        "[[route]]\ndomain = \"far.test\"\nto = \"smtp://relay.far.test:{}\"\ntls = \"verify\"\n\
         auth = {{ user = \"corvid\", password = \"s3cret\" }}",
        peer.addr.port()
    );
    let mut c = mx_config(dns, 25, ca, &extra);
    c.nameservers = vec![dns];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_host_with_a_wrong_certificate_never_gets_the_password() {
    let ca = Ca::new();
    let dns = serve(Zone::default().addr("relay.far.test", "127.0.0.1")).await;
    for (kind, name) in [
        (Kind::SelfSigned, "relay.far.test"),
        (Kind::Valid, "mx.elsewhere.test"),
        (Kind::Expired, "relay.far.test"),
    ] {
        let peer = Peer::start(tls_peer(ca.server(kind, name), true)).await;
        let h = Harness::start(smart_host(&peer, &ca, dns));
        let (status, reply) = attempt(&h).await;
        assert_eq!(status, RecipientStatus::Pending, "{kind:?} {name}");
        assert!(reply.starts_with("4.7.5 "), "{reply}");
        let commands = peer.commands();
        assert!(commands.iter().any(|c| c == "STARTTLS"), "{commands:?}");
        assert!(
            !commands
                .iter()
                .any(|c| c.to_ascii_uppercase().starts_with("AUTH")),
            "credentials were sent: {commands:?}"
        );
        h.stop().await;
    }
    // The right certificate: AUTH PLAIN, then the message.
    let peer = Peer::start(tls_peer(ca.server(Kind::Valid, "relay.far.test"), true)).await;
    let h = Harness::start(smart_host(&peer, &ca, dns));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Delivered, "{reply}");
    assert!(peer.commands().iter().any(|c| c.starts_with("AUTH PLAIN ")));
    h.stop().await;

    // A server offering only LOGIN gets LOGIN: user, then password, each after a 334.
    let mut script = tls_peer(ca.server(Kind::Valid, "relay.far.test"), false);
    script.extensions.push("AUTH LOGIN".into());
    let peer = Peer::start(script).await;
    let h = Harness::start(smart_host(&peer, &ca, dns));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Delivered, "{reply}");
    let commands = peer.commands();
    let at = commands
        .iter()
        .position(|c| c == "AUTH LOGIN")
        .expect("AUTH LOGIN");
    // base64("corvid"), base64("s3cret")
    assert_eq!(
        commands[at + 1..at + 3],
        ["Y29ydmlk", "czNjcmV0"],
        "{commands:?}"
    );
    h.stop().await;
}

#[test]
fn auth_without_verify_is_refused_at_config_load() {
    for tls in ["", "tls = \"opportunistic\"\n", "tls = \"none\"\n"] {
        let text = format!(
            "[[route]]\ndomain = \"*\"\nto = \"smtp://relay.test:587\"\nrequire_tls = true\n{tls}auth = {{ user = \"u\", password = \"p\" }}\n"
        );
        let c: DeliveryConfig = toml::from_str(&text).unwrap();
        let err = c.check().unwrap_err();
        assert!(err.contains("verify"), "{err}");
    }
    let bad_ca: DeliveryConfig =
        toml::from_str("[tls]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap();
    assert!(bad_ca.check().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_without_starttls_defers_with_4_7_10_and_none_sends_in_clear() {
    let ca = Ca::new();
    let dns = serve(zone()).await;
    // The peer offers no STARTTLS at all.
    let peer = Peer::start(Script::default()).await;
    let verify = "[tls.domains]\n\"far.test\" = \"verify\"";
    let h = Harness::start(mx_config(dns, peer.addr.port(), &ca, verify));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Pending);
    assert!(reply.starts_with("4.7.10 "), "{reply}");
    assert!(peer.completed().is_empty());
    h.stop().await;
    // `none` never starts TLS, even when offered.
    let peer = Peer::start(tls_peer(ca.server(Kind::Valid, "mx.far.test"), false)).await;
    let none = "[tls.domains]\n\"far.test\" = \"none\"";
    let h = Harness::start(mx_config(dns, peer.addr.port(), &ca, none));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Delivered, "{reply}");
    assert!(!peer.completed()[0].tls);
    assert!(!peer.commands().iter().any(|c| c == "STARTTLS"));
    h.stop().await;
}
