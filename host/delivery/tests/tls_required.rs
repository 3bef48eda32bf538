//! `TLS-Required: No` (RFC 8689 4.2.2): the recipient domain's MTA-STS policy is set aside for
//! a message carrying it, not for others, and not for a REQUIRETLS message (4.1). The MX of
//! far.test has an `enforce` policy served over HTTPS and presents a self-signed certificate.

mod support;

use corvid_queue::RecipientStatus;
use support::certs::{Ca, Kind};
use support::dns::{serve, Zone};
use support::peer::{Peer, Script};
use support::sts::{config, policy_server, send};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_no_sets_the_recipient_policy_aside_for_that_message_only() {
    let ca = Ca::new();
    let sts = policy_server(
        &ca,
        "version: STSv1\nmode: enforce\nmx: mx.far.test\nmax_age: 86400\n",
    )
    .await;
    let dns = serve(
        Zone::default()
            .mx("far.test", 10, "mx.far.test")
            .addr("mx.far.test", "127.0.0.1")
            .addr("mta-sts.far.test", "127.0.0.1")
            .txt("_mta-sts.far.test", "v=STSv1; id=20261207"),
    )
    .await;
    let mut script = Script {
        tls: Some(ca.server(Kind::SelfSigned, "mx.far.test")),
        ..Script::default()
    };
    script.extensions.push("REQUIRETLS".into());
    let peer = Peer::start(script).await;
    let h = Harness::start(config(dns, peer.addr.port(), sts, &ca));

    // Without the field, the enforce policy holds: the certificate does not verify.
    let (status, reply) = send(&h, b"Subject: plain\r\n\r\nhi\r\n", false).await;
    assert_ne!(status, RecipientStatus::Delivered, "{reply}");
    assert!(peer.completed().is_empty());

    // With it, the message goes over TLS with the certificate unverified.
    let marked = b"Subject: marked\r\nTLS-Required: No\r\n\r\nhi\r\n";
    let (status, reply) = send(&h, marked, false).await;
    assert_eq!(status, RecipientStatus::Delivered, "{reply}");
    let got = peer.completed();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "TLS not attempted");
    assert!(String::from_utf8_lossy(&got[0].raw).contains("Subject: marked"));

    // The session it left idle is not reused for a message the policy still governs.
    let (status, reply) = send(&h, b"Subject: after\r\n\r\nhi\r\n", false).await;
    assert_ne!(status, RecipientStatus::Delivered, "{reply}");

    // REQUIRETLS ignores the field (RFC 8689 4.1).
    let both = b"Subject: both\r\nTLS-Required: No\r\n\r\nhi\r\n";
    let (status, reply) = send(&h, both, true).await;
    assert_ne!(status, RecipientStatus::Delivered, "{reply}");

    let subjects: Vec<String> = peer
        .completed()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
        .collect();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    h.stop().await;
}
