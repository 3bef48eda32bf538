//! REQUIRETLS on the receiving side (RFC 8689 2, 4.1): offered in EHLO only on a TLS session,
//! the MAIL parameter refused without TLS and, over TLS, carried into the submitted envelope.

mod common;

use common::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A harness with a certificate, so STARTTLS is offered.
fn tls_harness() -> (Harness, Arc<rustls::ClientConfig>) {
    let (server, client) = test_tls();
    let h = Harness {
        tls: Some(server),
        ..Harness::default()
    };
    (h, client)
}

/// EHLO and STARTTLS in plaintext, then the handshake, then `protected` over TLS (each
/// segment after the first is sent once a 354 came). Returns the plaintext and TLS replies.
async fn over_starttls(
    h: &Harness,
    client_tls: Arc<rustls::ClientConfig>,
    protected: &[&[u8]],
) -> (String, String) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(corvid_server::run_session(
        h.shared(),
        Arc::new(h.listener.clone()),
        server,
        h.conn(),
    ));
    let mut out = Vec::new();
    read_until(&mut client, &mut out, "220 ", 1).await;
    client.write_all(b"EHLO c.test\r\n").await.unwrap();
    read_until(&mut client, &mut out, "250 ", 1).await;
    client.write_all(b"STARTTLS\r\n").await.unwrap();
    read_until(&mut client, &mut out, "220 2.0.0", 1).await;
    let plain = String::from_utf8_lossy(&out).into_owned();
    let mut tls = tls_connect(client_tls, client).await;
    let mut out = Vec::new();
    for (i, seg) in protected.iter().enumerate() {
        tls.write_all(seg).await.unwrap();
        if i + 1 < protected.len() {
            read_until(&mut tls, &mut out, "354 ", i + 1).await;
        }
    }
    tls.shutdown().await.unwrap();
    tls.read_to_end(&mut out).await.unwrap();
    task.await.unwrap();
    (plain, String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn not_offered_and_refused_in_plaintext() {
    // STARTTLS is offered here, so the refusal is about the session, not about the server.
    let (h, _) = tls_harness();
    let out = h
        .run(&[b"EHLO c.test\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\n\
              MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nQUIT\r\n"])
        .await;
    assert!(out.contains("250-STARTTLS\r\n"), "{out}");
    assert!(
        !out.contains("REQUIRETLS\r\n"),
        "offered in plaintext: {out}"
    );
    assert_eq!(
        codes(&out),
        ["220", "250", "530", "250", "250", "221"],
        "{out}"
    );
    assert!(
        out.contains("530 5.7.10 REQUIRETLS needs a TLS session"),
        "{out}"
    );
    assert!(h.intake.messages().is_empty());
}

#[tokio::test]
async fn helo_sessions_refuse_it_as_any_parameter() {
    let out = Harness::default()
        .run(&[b"HELO c.test\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\nQUIT\r\n"])
        .await;
    assert_eq!(codes(&out), ["220", "250", "555", "221"], "{out}");
}

#[tokio::test]
async fn offered_and_accepted_over_tls_and_carried_to_the_envelope() {
    let (h, client) = tls_harness();
    let (plain, tls) = over_starttls(
        &h,
        client,
        &[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\n\
              RCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"Subject: s\r\n\r\nsecret\r\n.\r\n\
              MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"Subject: t\r\n\r\nplain\r\n.\r\nQUIT\r\n",
        ],
    )
    .await;
    assert!(!plain.contains("REQUIRETLS"), "offered before TLS: {plain}");
    assert!(tls.contains("250-REQUIRETLS\r\n"), "{tls}");
    assert_eq!(
        codes(&tls),
        ["250", "250", "250", "354", "250", "250", "250", "354", "250", "221"],
        "{tls}"
    );
    let stored = h.intake.messages();
    assert_eq!(stored.len(), 2);
    // The flag is per transaction: the second MAIL without it is not flagged.
    assert!(stored[0].0.params.requiretls, "{:?}", stored[0].0);
    assert!(!stored[1].0.params.requiretls, "{:?}", stored[1].0);
}
