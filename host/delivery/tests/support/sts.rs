//! MTA-STS fixtures: an HTTPS policy server for far.test and a delivery config pointing at it.

use super::certs::{Ca, Kind};
use super::*;
use corvid_delivery::DeliveryConfig;
use corvid_queue::RecipientStatus;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `policy` as `https://mta-sts.far.test/.well-known/mta-sts.txt` on a loopback port.
pub async fn policy_server(ca: &Ca, policy: &'static str) -> u16 {
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

pub fn config(dns: SocketAddr, smtp: u16, sts: u16, ca: &Ca) -> DeliveryConfig {
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
pub async fn send(h: &Harness, body: &[u8], requiretls: bool) -> (RecipientStatus, String) {
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
