//! The quarantine verdict holds the message; every submit says whether the client is trusted.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use corvid_types::*;
use std::sync::Arc;

const TX: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n";

#[tokio::test]
async fn quarantine_at_data_is_submitted_on_hold_with_its_reason() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        data: Some(Arc::new(|_, _| {
            decision(Verdict::Quarantine("virus-scan: EICAR".into()), vec![])
        })),
        ..Script::default()
    });
    let out = h.run(&[TX, b"\r\nx\r\n.\r\n"]).await;
    assert_eq!(codes(&out), ["220", "250", "250", "250", "354", "250"]);
    let stored = h.intake.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].2.hold.as_deref(), Some("virus-scan: EICAR"));
    assert!(!stored[0].2.trusted_client);
}

#[tokio::test]
async fn quarantine_at_rcpt_holds_and_plain_messages_are_not_held() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        rcpt: Some(Arc::new(|_, r| {
            if r.address.local == "alice+q" {
                decision(Verdict::Quarantine("held".into()), vec![])
            } else {
                Decision::proceed()
            }
        })),
        ..Script::default()
    });
    let out = h
        .run(&[
            TX,
            b"\r\nx\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice+q@local.test>\r\nDATA\r\n",
            b"\r\ny\r\n.\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "354", "250", "250", "250", "354", "250"]
    );
    let stored = h.intake.messages();
    assert_eq!(stored[0].2.hold, None);
    assert_eq!(stored[1].2.hold.as_deref(), Some("held"));
}

#[tokio::test]
async fn relay_network_clients_are_trusted() {
    let mut h = Harness::default();
    h.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    h.run(&[TX, b"\r\nx\r\n.\r\n"]).await;
    assert!(h.intake.messages()[0].2.trusted_client);
}

#[tokio::test]
async fn authenticated_clients_are_trusted() {
    use corvid_server::auth::{hash_password, UsersFile};
    let dir = tempfile::tempdir().unwrap();
    let users = UsersFile::load(&dir.path().join("users"), '+').unwrap();
    users
        .set("alice@local.test", hash_password("pw").unwrap(), None)
        .unwrap();
    let mut h = Harness::default();
    h.credentials = Some(Arc::new(users));
    let plain = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("\0alice@local.test\0pw")
    };
    let script = format!(
        "EHLO c.test\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<alice@local.test>\r\n\
         RCPT TO:<x@far.test>\r\nDATA\r\n"
    );
    let out = h.run(&[script.as_bytes(), b"\r\nx\r\n.\r\n"]).await;
    assert_eq!(
        codes(&out),
        ["220", "250", "235", "250", "250", "354", "250"]
    );
    assert!(h.intake.messages()[0].2.trusted_client);
}

#[tokio::test]
async fn headers_added_by_policy_are_folded_and_unfoldable_ones_dropped() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        data: Some(Arc::new(|_, _| {
            let long = (0..200).map(|i| format!("t{i}")).collect::<Vec<_>>();
            decision(
                Verdict::Continue,
                vec![
                    Modification::AddHeader {
                        name: "X-Long".into(),
                        value: long.join(" "),
                    },
                    Modification::AddHeader {
                        name: "X-Bomb".into(),
                        value: "z".repeat(1000),
                    },
                ],
            )
        })),
        ..Script::default()
    });
    let out = h.run(&[TX, b"Subject: s\r\n\r\nx\r\n.\r\n"]).await;
    assert!(out.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{out}");
    let content = String::from_utf8(h.intake.messages()[0].1.clone()).unwrap();
    assert!(content.contains("X-Long: t0 t1"), "{content}");
    assert!(!content.contains("X-Bomb"), "{content}");
    assert!(content.split("\r\n").all(|l| l.len() <= 78), "{content}");
}
