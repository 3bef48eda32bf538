//! STARTTLS (RFC 3207) and implicit TLS (RFC 8314) transcripts: a real rustls handshake over
//! an in-memory pipe, with a certificate made at test time.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use corvid_server::auth::{hash_password, Credentials, UsersFile};
use corvid_server::ListenerMode;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a session: sends the `plain` segments (after each but the last, waits for one reply
/// per command line sent), then waits for the 220 to STARTTLS, does the TLS handshake, and
/// sends the `protected` segments over TLS (waiting for a 354 between them). Returns the
/// plaintext replies and the replies received over TLS.
async fn starttls_session(
    h: &Harness,
    client_tls: Arc<rustls::ClientConfig>,
    plain: &[&[u8]],
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
    let mut sent = 0;
    for (i, seg) in plain.iter().enumerate() {
        client.write_all(seg).await.unwrap();
        sent += seg.windows(2).filter(|w| w == b"\r\n").count();
        if i + 1 < plain.len() {
            while codes(&String::from_utf8_lossy(&out)).len() < 1 + sent {
                let mut buf = [0u8; 4096];
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&out));
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
    read_until(&mut client, &mut out, "220 2.0.0", 1).await;
    let plain_out = String::from_utf8_lossy(&out).into_owned();
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
    (plain_out, String::from_utf8_lossy(&out).into_owned())
}

/// Nothing but, at most, a TLS alert record (content type 21): no SMTP reply.
fn no_smtp(bytes: &[u8]) -> bool {
    bytes.is_empty() || (bytes[0] == 0x15 && bytes.len() <= 7)
}

fn tls_harness() -> (Harness, Arc<rustls::ClientConfig>) {
    let (server, client) = test_tls();
    let mut h = Harness::default();
    h.tls = Some(server);
    (h, client)
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_not_executed() {
    // CVE-2011-0411: a man in the middle appends a command to the client's STARTTLS; it is in
    // the server's buffer when the handshake starts and must not run inside TLS.
    let (h, client) = tls_harness();
    let (plain, tls) = starttls_session(
        &h,
        client,
        &[b"EHLO c.test\r\n", b"STARTTLS\r\nMAIL FROM:<x@y.test>\r\n"],
        &[b"EHLO c.test\r\nRCPT TO:<alice@local.test>\r\nQUIT\r\n"],
    )
    .await;
    assert_eq!(codes(&plain), ["220", "250", "220"], "{plain}");
    assert!(plain.contains("250-STARTTLS\r\n"), "{plain}");
    // Executed, the injected MAIL would be answered first (503: EHLO is needed again), and
    // the RCPT would then find a transaction.
    assert_eq!(codes(&tls), ["250", "503", "221"], "{tls}");
    assert!(tls.starts_with("250-mx.test Hello c.test"), "{tls}");
    assert!(tls.contains("503 5.5.1 Need MAIL before RCPT"), "{tls}");
}

fn users(dir: &tempfile::TempDir) -> Arc<dyn Credentials> {
    let users = UsersFile::load(&dir.path().join("users"), '+').unwrap();
    users
        .set("alice@local.test", hash_password("pw").unwrap(), None)
        .unwrap();
    Arc::new(users)
}

fn auth_plain() -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode("\0alice@local.test\0pw");
    format!("AUTH PLAIN {b64}\r\n")
}

#[tokio::test]
async fn starttls_forgets_ehlo_transaction_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, client) = tls_harness();
    h.credentials = Some(users(&dir));
    h.listener.mode = ListenerMode::Submission;
    let before = format!(
        "{}MAIL FROM:<alice@local.test>\r\nSTARTTLS\r\n",
        auth_plain()
    );
    let after = format!(
        "MAIL FROM:<alice@local.test>\r\nEHLO c.test\r\nRCPT TO:<alice@local.test>\r\n\
         MAIL FROM:<alice@local.test>\r\nSTARTTLS\r\n{}MAIL FROM:<alice@local.test>\r\n\
         RCPT TO:<alice@local.test>\r\nDATA\r\n",
        auth_plain()
    );
    let (plain, tls) = starttls_session(
        &h,
        client,
        &[b"EHLO c.test\r\n", before.as_bytes()],
        &[after.as_bytes(), b"Subject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n"],
    )
    .await;
    assert_eq!(
        codes(&plain),
        ["220", "250", "235", "250", "220"],
        "{plain}"
    );
    assert_eq!(
        codes(&tls),
        // MAIL before EHLO; EHLO; RCPT with no transaction; MAIL unauthenticated; STARTTLS
        // again; then AUTH and a whole transaction.
        ["503", "250", "503", "530", "503", "235", "250", "250", "354", "250", "221"],
        "{tls}"
    );
    assert!(tls.contains("503 5.5.1 Send EHLO or HELO first"), "{tls}");
    assert!(tls.contains("530 5.7.0 Authentication required"), "{tls}");
    assert!(tls.contains("503 5.5.1 TLS already active"), "{tls}");
    assert!(tls.contains("250 AUTH PLAIN LOGIN\r\n"), "{tls}");
    assert!(!tls.contains("STARTTLS\r\n"), "offered again: {tls}");
    let stored = h.intake.messages();
    assert_eq!(stored.len(), 1);
    let received = String::from_utf8_lossy(&stored[0].1).into_owned();
    assert!(received.contains("with ESMTPSA"), "{received}");
    assert!(received.contains("TLSv1.3"), "{received}");
}

#[tokio::test]
async fn the_error_count_is_per_connection_across_starttls() {
    let (mut h, client) = tls_harness();
    h.limits.max_errors = 3;
    let (plain, tls) = starttls_session(
        &h,
        client,
        &[b"EHLO c.test\r\n", b"FOO\r\nSTARTTLS\r\n"],
        &[b"BAR\r\nBAZ\r\nNOOP\r\n"],
    )
    .await;
    assert_eq!(codes(&plain), ["220", "250", "500", "220"], "{plain}");
    // BAR and BAZ are the second and third errors: the count did not start again.
    assert_eq!(codes(&tls), ["500", "500", "421"], "{tls}");
}

#[tokio::test]
async fn a_failed_handshake_after_starttls_closes_the_connection() {
    let (h, _) = tls_harness();
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(corvid_server::run_session(
        h.shared(),
        Arc::new(h.listener.clone()),
        server,
        h.conn(),
    ));
    let mut out = Vec::new();
    read_until(&mut client, &mut out, "220 ", 1).await;
    client.write_all(b"STARTTLS\r\n").await.unwrap();
    read_until(&mut client, &mut out, "220 2.0.0", 1).await;
    client.write_all(b"EHLO not-tls\r\n").await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    task.await.unwrap();
    assert!(no_smtp(&rest), "{rest:?}");
}

#[tokio::test]
async fn implicit_tls_handshakes_before_the_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, client_tls) = tls_harness();
    h.credentials = Some(users(&dir));
    h.listener.mode = ListenerMode::Submissions;
    let (client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(corvid_server::run_session(
        h.shared(),
        Arc::new(h.listener.clone()),
        server,
        h.conn(),
    ));
    let mut tls = tls_connect(client_tls, client).await;
    let mut out = Vec::new();
    read_until(&mut tls, &mut out, "220 ", 1).await;
    tls.write_all(format!("EHLO c.test\r\n{}QUIT\r\n", auth_plain()).as_bytes())
        .await
        .unwrap();
    tls.shutdown().await.unwrap();
    tls.read_to_end(&mut out).await.unwrap();
    task.await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(codes(&out), ["220", "250", "235", "221"], "{out}");
    assert!(!out.contains("STARTTLS"), "{out}");
    // A plaintext client on that listener gets nothing: no greeting before TLS.
    let (mut plain, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(corvid_server::run_session(
        h.shared(),
        Arc::new(h.listener.clone()),
        server,
        h.conn(),
    ));
    plain.write_all(b"EHLO c.test\r\n").await.unwrap();
    let mut rest = Vec::new();
    plain.read_to_end(&mut rest).await.unwrap();
    task.await.unwrap();
    assert!(no_smtp(&rest), "{rest:?}");
}
