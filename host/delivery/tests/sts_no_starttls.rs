//! MTA-STS `enforce` (RFC 8461 4.2, 5) with an MX host that does not offer STARTTLS: the mail
//! is deferred with 4.7.5, as for the policy's other failures, and never sent in clear text.

mod support;

use corvid_delivery::DeliveryConfig;
use corvid_queue::RecipientStatus;
use std::net::SocketAddr;
use support::certs::{Ca, Kind};
use support::dns::{serve, Zone};
use support::peer::{Peer, Script};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `policy` as `https://mta-sts.far.test/.well-known/mta-sts.txt` on a loopback port.
async fn policy_server(ca: &Ca, policy: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server(Kind::Valid, "mta-sts.far.test"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{policy}",
                policy.len()
            );
            let _ = tls.write_all(resp.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    port
}

fn config(dns: SocketAddr, smtp: u16, sts: u16, ca: &Ca) -> DeliveryConfig {
    let text = format!(
        "nameservers = [\"{dns}\"]\nsmtp_port = {smtp}\nipv6 = false\nallow_loopback_mx = true\n\
         timeouts = {{ connect = \"2s\", greeting = \"5s\", command = \"5s\" }}\n\
         mta_sts = {{ port = {sts} }}\n[tls]\nca_file = \"{}\"\n",
        ca.pem_file.display()
    );
    toml::from_str(&text).unwrap()
}

/// Submits one message to x@far.test and waits for its first attempt; its status (delivered
/// when it left the queue, the DSN to the local sender telling otherwise).
async fn send(h: &Harness, body: &[u8], requiretls: bool) -> (RecipientStatus, String) {
    let mut env = envelope(Some("bob@corvid.test"), &["x@far.test"]);
    env.params.requiretls = requiretls;
    let id = h.submit(&env, body).await;
    wait_until("an outcome", 10, || {
        h.get(&id).is_none_or(|m| m.recipients[0].attempts >= 1)
    })
    .await;
    match h.get(&id) {
        Some(m) => (
            m.recipients[0].status,
            m.recipients[0].last_reply.clone().unwrap_or_default(),
        ),
        None => (RecipientStatus::Delivered, String::new()),
    }
}

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
