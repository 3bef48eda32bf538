//! MTA-STS `enforce` (RFC 8461 4.2, 5) with an MX host that does not offer STARTTLS: the mail
//! is deferred with 4.7.5, as for the policy's other failures, and never sent in clear text.

mod support;

use corvid_queue::RecipientStatus;
use support::certs::Ca;
use support::dns::{serve, Zone};
use support::peer::{Peer, Script};
use support::sts::{config, policy_server, send};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_without_starttls_defers_4_7_5() {
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
    // A peer without STARTTLS.
    let peer = Peer::start(Script::default()).await;
    let h = Harness::start(config(dns, peer.addr.port(), sts, &ca));
    let (status, reply) = send(&h, b"Subject: plain\r\n\r\nhi\r\n", false).await;
    assert_ne!(status, RecipientStatus::Delivered, "{reply}");
    assert!(reply.starts_with("4.7.5 "), "{reply}");
    assert!(
        reply.contains("STARTTLS") && reply.contains("enforce"),
        "{reply}"
    );
    assert!(peer.completed().is_empty());
    h.stop().await;
}
