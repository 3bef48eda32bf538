//! Envelope modifications from policy apply only when the stage's verdict accepts, and go
//! through the same rules as the client's own commands (issue 11: no open relay through a
//! plugin).

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use corvid_types::*;
use std::sync::Arc;

const HEAD: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n";

fn rcpts(env: &Envelope) -> Vec<String> {
    env.recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect()
}

#[tokio::test]
async fn added_remote_recipient_beside_a_refused_rcpt_is_not_relayed() {
    let mut h = Harness::default();
    // continue + add-recipient(x@remote) on every RCPT: the first RCPT is refused by the
    // built-in relay rule, the second accepted (a local mailbox).
    h.policy = Arc::new(Script {
        rcpt: Some(Arc::new(|_, _| {
            decision(
                Verdict::Continue,
                vec![Modification::AddRecipient(addr("x@remote.test"))],
            )
        })),
        ..Script::default()
    });
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<y@other.test>\r\n\
              RCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "550", "250", "354", "250", "221"],
        "{out}"
    );
    let stored = h.intake.messages();
    assert_eq!(rcpts(&stored[0].0), ["alice@local.test"], "{out}");
}

#[tokio::test]
async fn a_refusing_verdict_discards_its_modifications() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        rcpt: Some(Arc::new(|_, r| {
            let verdict = if r.address.local == "bob" {
                Verdict::Reject(Reply::new(550, "5.7.1", "no bob"))
            } else {
                Verdict::Continue
            };
            // A local recipient: would pass every rule if it were applied.
            decision(
                verdict,
                vec![Modification::AddRecipient(addr("postmaster@local.test"))],
            )
        })),
        ..Script::default()
    });
    let mut script = HEAD.to_vec();
    script.extend_from_slice(b"RCPT TO:<bob@local.test>\r\nQUIT\r\n");
    let out = h.run(&[&script]).await;
    assert_eq!(codes(&out), ["220", "250", "250", "550", "221"], "{out}");
    // And at MAIL: a refused sender's change-sender does not survive into the next MAIL.
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        mail: Some(Arc::new(|env| {
            let refuse = env.sender.as_ref().is_some_and(|s| s.local == "spam");
            let verdict = if refuse {
                Verdict::Reject(Reply::new(550, "5.7.1", "spam"))
            } else {
                Verdict::Continue
            };
            decision(
                verdict,
                vec![Modification::AddRecipient(addr("alice@local.test"))],
            )
        })),
        ..Script::default()
    });
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<spam@b.test>\r\nDATA\r\nMAIL FROM:<ok@b.test>\r\nDATA\r\n",
            b"\r\nx\r\n.\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "550", "503", "250", "354", "250"],
        "{out}"
    );
    assert_eq!(rcpts(&h.intake.messages()[0].0), ["alice@local.test"]);
}

#[tokio::test]
async fn added_recipients_follow_directory_relay_and_utf8_rules() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        rcpt: Some(Arc::new(|_, _| {
            decision(
                Verdict::Accept,
                vec![
                    Modification::AddRecipient(addr("nobody@local.test")),
                    Modification::AddRecipient(addr("x@remote.test")),
                    Modification::AddRecipient(addr("jörg@local.test")),
                    Modification::AddRecipient(addr("postmaster@local.test")),
                ],
            )
        })),
        ..Script::default()
    });
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nx\r\n.\r\n",
        ])
        .await;
    assert_eq!(codes(&out), ["220", "250", "250", "250", "354", "250"]);
    assert_eq!(
        rcpts(&h.intake.messages()[0].0),
        ["alice@local.test", "postmaster@local.test"]
    );
}

#[tokio::test]
async fn relay_clients_may_have_remote_recipients_added_up_to_max_recipients() {
    let mut h = Harness::default();
    h.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    h.policy = Arc::new(Script {
        rcpt: Some(Arc::new(|_, _| {
            let adds = (0..150)
                .map(|i| Modification::AddRecipient(addr(&format!("r{i}@remote.test"))))
                .collect();
            decision(Verdict::Continue, adds)
        })),
        ..Script::default()
    });
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nx\r\n.\r\n",
        ])
        .await;
    assert_eq!(codes(&out), ["220", "250", "250", "250", "354", "250"]);
    let got = rcpts(&h.intake.messages()[0].0);
    assert_eq!(got.len(), 100, "max_recipients bounds added recipients");
    assert_eq!(got[1], "r0@remote.test");
}

#[tokio::test]
async fn remove_recipient_of_the_current_recipient_works() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        rcpt: Some(Arc::new(|_, r| {
            if r.address.local == "alice+gone" {
                decision(
                    Verdict::Continue,
                    vec![Modification::RemoveRecipient(r.address.clone())],
                )
            } else {
                Decision::proceed()
            }
        })),
        ..Script::default()
    });
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice+gone@local.test>\r\n\
              RCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nx\r\n.\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "354", "250"]
    );
    assert_eq!(rcpts(&h.intake.messages()[0].0), ["alice@local.test"]);
}

#[tokio::test]
async fn data_stage_modifications_apply_only_on_acceptance_and_are_checked() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        data: Some(Arc::new(|_, content| {
            let verdict = if content.windows(4).any(|w| w == b"SPAM") {
                Verdict::Reject(Reply::new(550, "5.7.1", "spam"))
            } else {
                Verdict::Continue
            };
            decision(
                verdict,
                vec![
                    Modification::AddRecipient(addr("x@remote.test")),
                    Modification::AddRecipient(addr("postmaster@local.test")),
                    Modification::ChangeSender(Some(addr("new@b.test"))),
                ],
            )
        })),
        ..Script::default()
    });
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nSPAM\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nham\r\n.\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "354", "550", "250", "250", "354", "250"],
        "{out}"
    );
    let stored = h.intake.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        rcpts(&stored[0].0),
        ["alice@local.test", "postmaster@local.test"]
    );
    assert_eq!(stored[0].0.sender_text(), "new@b.test");
}

#[tokio::test]
async fn a_message_left_only_with_refused_added_recipients_is_refused_not_lost() {
    // An alias at DATA to another domain, for a client without relay rights: the original is
    // removed, the target refused. Answering 250 would deliver the message nowhere.
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        data: Some(Arc::new(|_, _| {
            decision(
                Verdict::Continue,
                vec![
                    Modification::RemoveRecipient(addr("alice@local.test")),
                    Modification::AddRecipient(addr("x@remote.test")),
                ],
            )
        })),
        ..Script::default()
    });
    let mut script = HEAD.to_vec();
    script.extend_from_slice(b"RCPT TO:<alice@local.test>\r\nDATA\r\n");
    let out = h
        .run(&[&script, b"Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n"])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "354", "550", "221"],
        "{out}"
    );
    assert!(out.contains("550 5.7.1"), "{out}");
    assert!(h.intake.messages().is_empty(), "{out}");
}
