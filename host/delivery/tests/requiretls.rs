//! REQUIRETLS on the sending side (RFC 8689 4.2.1): a flagged message goes only over TLS
//! verified through an authenticated path, to a next hop offering REQUIRETLS, with the
//! parameter passed on; otherwise it bounces with 5.7.30 and nothing is sent.

mod support;

use corvid_delivery::DeliveryConfig;
use corvid_queue::RecipientStatus;
use std::net::SocketAddr;
use support::certs::{Ca, Kind};
use support::dns::{serve, Zone};
use support::peer::{Peer, Script};
use support::*;

const BODY: &[u8] = b"Subject: requiretls\r\n\r\nhello\r\n";

fn peer_script(ca: &Ca, name: &str, offers: bool) -> Script {
    let mut s = Script {
        tls: Some(ca.server(Kind::Valid, name)),
        ..Script::default()
    };
    if offers {
        s.extensions.push("REQUIRETLS".into());
    }
    s
}

fn config(dns: SocketAddr, port: u16, ca: &Ca, route: &str) -> DeliveryConfig {
    let text = format!(
        "nameservers = [\"{dns}\"]\nsmtp_port = {port}\nipv6 = false\nallow_loopback_mx = true\n\
         timeouts = {{ connect = \"2s\", greeting = \"5s\", command = \"5s\" }}\n{route}\n\
         [tls]\nca_file = \"{}\"\n",
        ca.pem_file.display()
    );
    toml::from_str(&text).unwrap()
}

/// Sends one REQUIRETLS message to x@far.test; the first attempt's status and reply. A failed
/// message leaves the queue once its DSN is queued: then the DSN to the sender (a local
/// mailbox here) tells the reply.
async fn attempt(h: &Harness) -> (RecipientStatus, String) {
    let mut env = envelope(Some("bob@corvid.test"), &["x@far.test"]);
    env.params.requiretls = true;
    let id = h.submit(&env, BODY).await;
    wait_until("an outcome", 10, || {
        h.get(&id).is_none_or(|m| m.recipients[0].attempts >= 1)
    })
    .await;
    if let Some(m) = h.get(&id) {
        let r = &m.recipients[0];
        return (r.status, r.last_reply.clone().unwrap_or_default());
    }
    let dsn = || {
        maildir(&h.mail_root(), "bob")
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .find(|m| m.contains("Status: 5."))
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while dsn().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    match dsn() {
        Some(text) => {
            let at = text
                .find("5.7.30 ")
                .or_else(|| text.find("Status: 5."))
                .unwrap_or(0);
            (
                RecipientStatus::Failed,
                text[at..].lines().next().unwrap_or("").to_string(),
            )
        }
        None => (RecipientStatus::Delivered, String::new()),
    }
}

fn route(peer: &Peer, tls: &str) -> String {
    format!(
        "[[route]]\ndomain = \"far.test\"\nto = \"smtp://relay.far.test:{}\"\n{tls}",
        peer.addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_smart_host_offering_requiretls_gets_it_passed_on() {
    let ca = Ca::new();
    let dns = serve(Zone::default().addr("relay.far.test", "127.0.0.1")).await;
    let peer = Peer::start(peer_script(&ca, "relay.far.test", true)).await;
    let h = Harness::start(config(dns, 25, &ca, &route(&peer, "tls = \"verify\"")));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Delivered, "{reply}");
    let got = peer.completed();
    assert!(got[0].tls);
    assert!(got[0].mail.ends_with(" REQUIRETLS"), "{}", got[0].mail);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_hop_without_requiretls_or_without_an_authenticated_path_bounces_5_7_30() {
    let ca = Ca::new();
    let dns = serve(
        Zone::default()
            .addr("relay.far.test", "127.0.0.1")
            .mx("far.test", 10, "mx.far.test")
            .addr("mx.far.test", "127.0.0.1"),
    )
    .await;
    // Verified TLS, but the server does not offer REQUIRETLS.
    let peer = Peer::start(peer_script(&ca, "relay.far.test", false)).await;
    let h = Harness::start(config(dns, 25, &ca, &route(&peer, "tls = \"verify\"")));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Failed, "{reply}");
    assert!(reply.starts_with("5.7.30 "), "{reply}");
    assert!(peer.completed().is_empty());
    h.stop().await;
    // A smart host whose TLS the config does not require verified: no authenticated path.
    let peer = Peer::start(peer_script(&ca, "relay.far.test", true)).await;
    let h = Harness::start(config(dns, 25, &ca, &route(&peer, "")));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Failed, "{reply}");
    assert!(reply.starts_with("5.7.30 "), "{reply}");
    assert_eq!(
        peer.connections(),
        0,
        "connected without an authenticated path"
    );
    h.stop().await;
    // MX delivery to a domain without an MTA-STS policy: the MX names are unauthenticated.
    let peer = Peer::start(peer_script(&ca, "mx.far.test", true)).await;
    let h = Harness::start(config(dns, peer.addr.port(), &ca, ""));
    let (status, reply) = attempt(&h).await;
    assert_eq!(status, RecipientStatus::Failed, "{reply}");
    assert!(
        reply.starts_with("5.7.30 ") && reply.contains("MTA-STS"),
        "{reply}"
    );
    assert_eq!(peer.connections(), 0);
    // Without the flag the same message goes out as usual.
    let id = h
        .submit(&envelope(Some("bob@corvid.test"), &["x@far.test"]), BODY)
        .await;
    wait_until("delivery", 10, || h.get(&id).is_none()).await;
    assert!(!peer.completed()[0].mail.contains("REQUIRETLS"));
    h.stop().await;
}
