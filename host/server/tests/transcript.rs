//! Session transcripts over an in-memory pipe, with a fake policy and an in-memory intake.

use async_trait::async_trait;
use corvid_server::auth::{hash_password, Credentials, UsersFile};
use corvid_server::{
    run_session, AuthSettings, Limits, ListenerConfig, ListenerMode, ServerConfig, Services, Shared,
};
use corvid_types::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::MemIntake;

/// Rejects sender `spam@...`, accepts recipients at `relay.test` (an explicit relay grant),
/// and stamps a header at DATA.
struct FakePolicy;
struct FakeSession;

impl Policy for FakePolicy {
    fn session(&self, _conn: &ConnectionInfo) -> Box<dyn PolicySession> {
        Box::new(FakeSession)
    }
}

#[async_trait]
impl PolicySession for FakeSession {
    async fn mail(&mut self, _c: &ConnectionInfo, env: &Envelope) -> Decision {
        match &env.sender {
            Some(a) if a.local == "spam" => Decision::reject(Reply::new(550, "5.7.1", "go away")),
            _ => Decision::proceed(),
        }
    }
    async fn rcpt(&mut self, _c: &ConnectionInfo, _e: &Envelope, r: &Recipient) -> Decision {
        if r.address.domain == "relay.test" {
            Decision::accept()
        } else {
            Decision::proceed()
        }
    }
    async fn data(&mut self, _c: &ConnectionInfo, _e: &Envelope, _m: MessageView<'_>) -> Decision {
        Decision {
            verdict: Verdict::Continue,
            modifications: vec![Modification::AddHeader {
                name: "X-Stamp".into(),
                value: "yes".into(),
            }],
        }
    }
}

fn shared(intake: Arc<MemIntake>, credentials: Option<Arc<dyn Credentials>>) -> Arc<Shared> {
    let mut dir = Directory::new(Some(Address::new("postmaster", "local.test")), Some('+'));
    let mut d = DomainEntry::default();
    d.mailboxes
        .extend(["alice".to_string(), "postmaster".to_string()]);
    dir.add_domain("local.test", d);
    let config = ServerConfig {
        hostname: "mx.test".into(),
        limits: Limits {
            max_errors: 50,
            ..Limits::default()
        },
        listeners: Vec::new(),
        relay_networks: Vec::new(),
        etrn_networks: Vec::new(),
        auth: AuthSettings {
            failure_delay: std::time::Duration::ZERO,
            ..AuthSettings::default()
        },
        flow: Default::default(),
    };
    let services = Services {
        policy: Arc::new(FakePolicy),
        intake,
        directory: Arc::new(dir),
        tls: None,
        credentials,
        queue_control: None,
        dns: None,
    };
    Arc::new(Shared::new(&config, services))
}

fn listener(mode: ListenerMode, allow_plaintext_auth: bool) -> Arc<ListenerConfig> {
    Arc::new(ListenerConfig {
        name: "test".into(),
        address: "127.0.0.1:0".parse().unwrap(),
        mode,
        require_tls: Some(false),
        auth: None,
        allow_plaintext_auth,
        proxy_protocol: false,
        proxy_from: Vec::new(),
    })
}

/// Sends each segment in one write (as a pipelining client would); after every segment but the
/// last it waits for the 354 that lets a client send message content. Then closes the write
/// side and returns all replies.
async fn transcript(segments: &[&[u8]]) -> (String, Arc<MemIntake>) {
    transcript_on(listener(ListenerMode::Smtp, false), None, segments).await
}

async fn transcript_on(
    listener: Arc<ListenerConfig>,
    credentials: Option<Arc<dyn Credentials>>,
    segments: &[&[u8]],
) -> (String, Arc<MemIntake>) {
    let intake = Arc::new(MemIntake::default());
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let conn = ConnectionInfo {
        session_id: 1,
        listener: "smtp".into(),
        local_addr: "127.0.0.1:25".parse().unwrap(),
        peer_addr: "127.0.0.2:5000".parse().unwrap(),
        peer_rdns: None,
        helo: None,
        esmtp: false,
        tls: None,
        auth_user: None,
    };
    let shared = shared(Arc::clone(&intake), credentials);
    let task = tokio::spawn(run_session(shared, listener, server, conn));
    let mut out = Vec::new();
    // The client waits for the greeting: talking first is a pregreet, refused.
    let mut buf = [0u8; 512];
    while !out.ends_with(b"\r\n") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "no greeting");
        out.extend_from_slice(&buf[..n]);
    }
    for (i, seg) in segments.iter().enumerate() {
        client.write_all(seg).await.unwrap();
        if i + 1 < segments.len() {
            wait_for_354(&mut client, &mut out).await;
        }
    }
    // End of input: a session that is not told QUIT sees EOF instead of waiting for a timeout.
    client.shutdown().await.unwrap();
    client.read_to_end(&mut out).await.unwrap();
    task.await.unwrap();
    (String::from_utf8_lossy(&out).into_owned(), intake)
}

async fn wait_for_354(client: &mut tokio::io::DuplexStream, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(out)
        .lines()
        .any(|l| l.starts_with("354 "))
    {
        let n = client.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "session closed before 354: {}",
            String::from_utf8_lossy(out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

fn codes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect()
}

#[tokio::test]
async fn pipelined_transaction_is_queued_with_stamp_and_trace_header() {
    let (out, intake) = transcript(&[
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
        b"Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    ])
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "354", "250", "221"],
        "{out}"
    );
    let stored = intake.stored.lock().unwrap();
    let text = String::from_utf8_lossy(&stored[0].1).into_owned();
    assert!(
        text.starts_with("Received: from c.test (unknown [127.0.0.2])\r\n\tby mx.test"),
        "{text}"
    );
    assert!(
        text.ends_with("Subject: hi\r\nX-Stamp: yes\r\n\r\n.dot\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn policy_reject_relay_denial_and_explicit_relay_grant() {
    let (out, intake) = transcript(&[
        b"EHLO c.test\r\nMAIL FROM:<spam@b.test>\r\nMAIL FROM:<a@b.test>\r\n\
          RCPT TO:<x@other.test>\r\nRCPT TO:<nobody@local.test>\r\nRCPT TO:<x@relay.test>\r\n\
          RCPT TO:<postmaster>\r\nQUIT\r\n",
    ])
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "550", "250", "550", "550", "250", "250", "221"],
        "{out}"
    );
    assert!(
        out.contains("550 5.7.1 <x@other.test>: Relay access denied"),
        "{out}"
    );
    assert!(out.contains("550 5.1.1"), "{out}");
    assert!(intake.stored.lock().unwrap().is_empty());
}

#[tokio::test]
async fn smuggled_commands_inside_data_are_never_executed() {
    let (out, intake) = transcript(&[
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
        b"x\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\nevil\r\n.\r\nNOOP\r\n",
    ])
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "354", "554", "250"],
        "{out}"
    );
    assert!(intake.stored.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bdat_chunks_and_refused_chunk_is_swallowed() {
    let (out, intake) = transcript(&[
        b"EHLO c.test\r\nBDAT 12\r\nRSET\r\nQUIT\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\n\
          BDAT 6\r\nA: 1\r\nBDAT 5 LAST\r\n\r\nx\r\n",
    ])
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "503", "250", "250", "250", "250"],
        "{out}"
    );
    let stored = intake.stored.lock().unwrap();
    assert!(
        String::from_utf8_lossy(&stored[0].1).ends_with("\r\nA: 1\r\nX-Stamp: yes\r\n\r\nx\r\n")
    );
}

#[tokio::test]
async fn sequence_errors_and_unknown_commands() {
    let (out, _) = transcript(&[
        b"MAIL FROM:<a@b.test>\r\nEHLO c.test\r\nRCPT TO:<alice@local.test>\r\nDATA\r\nFOO\r\nTURN\r\nQUIT\r\n",
    ])
    .await;
    assert_eq!(
        codes(&out),
        ["220", "503", "250", "503", "503", "500", "502", "221"],
        "{out}"
    );
}

#[tokio::test]
async fn content_sent_before_354_ends_the_session() {
    let (out, intake) = transcript(&[
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\nQUIT\r\n",
    ])
    .await;
    assert_eq!(codes(&out), ["220", "250", "250", "250", "554"], "{out}");
    assert!(out.contains("554 5.5.0"), "{out}");
    assert!(intake.stored.lock().unwrap().is_empty());
}

fn users(dir: &tempfile::TempDir) -> Arc<dyn Credentials> {
    let users = UsersFile::load(&dir.path().join("users"), '+').unwrap();
    users
        .set("alice@local.test", hash_password("pw").unwrap(), None)
        .unwrap();
    Arc::new(users)
}

fn plain(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

#[tokio::test]
async fn auth_plain_then_relay_and_sender_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "EHLO c.test\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\n\
         MAIL FROM:<bob@local.test>\r\nMAIL FROM:<alice+x@local.test>\r\nRCPT TO:<x@far.test>\r\nQUIT\r\n",
        plain("alice@local.test", "bad"),
        plain("alice@local.test", "pw"),
        plain("alice@local.test", "pw"),
    );
    let l = listener(ListenerMode::Submission, true);
    let (out, _) = transcript_on(l, Some(users(&dir)), &[script.as_bytes()]).await;
    assert_eq!(
        codes(&out),
        ["220", "250", "535", "235", "503", "553", "250", "250", "221"],
        "{out}"
    );
    assert!(out.contains("250 AUTH PLAIN LOGIN"), "{out}");
    assert!(out.contains("535 5.7.8"), "{out}");
}

#[tokio::test]
async fn auth_login_cancel_unknown_mechanism_and_submission_needs_auth() {
    let dir = tempfile::tempdir().unwrap();
    let l = listener(ListenerMode::Submission, true);
    let (out, _) = transcript_on(
        l,
        Some(users(&dir)),
        &[
            b"EHLO c.test\r\nMAIL FROM:<alice@local.test>\r\nAUTH CRAM-MD5\r\nAUTH LOGIN\r\n*\r\n\
           AUTH PLAIN\r\n!!!\r\nAUTH LOGIN YWxpY2VAbG9jYWwudGVzdA==\r\ncHc=\r\nQUIT\r\n",
        ],
    )
    .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "530", "504", "334", "501", "334", "501", "334", "235", "221"],
        "{out}"
    );
}

#[tokio::test]
async fn auth_without_tls_is_refused_and_not_advertised() {
    let dir = tempfile::tempdir().unwrap();
    let l = listener(ListenerMode::Smtp, false);
    let script = format!(
        "EHLO c.test\r\nAUTH PLAIN {}\r\nQUIT\r\n",
        plain("alice@local.test", "pw")
    );
    let (out, _) = transcript_on(l, Some(users(&dir)), &[script.as_bytes()]).await;
    assert_eq!(codes(&out), ["220", "250", "538", "221"], "{out}");
    assert!(!out.contains("AUTH PLAIN"), "{out}");
}

#[tokio::test]
async fn repeated_auth_failures_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let l = listener(ListenerMode::Submission, true);
    let bad = plain("alice@local.test", "nope");
    let script = format!(
        "EHLO c.test\r\nAUTH PLAIN {bad}\r\nAUTH PLAIN {bad}\r\nAUTH PLAIN {bad}\r\nNOOP\r\n"
    );
    let (out, _) = transcript_on(l, Some(users(&dir)), &[script.as_bytes()]).await;
    assert_eq!(
        codes(&out),
        ["220", "250", "535", "535", "535", "421"],
        "{out}"
    );
}
