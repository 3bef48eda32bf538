//! Session flow that was only tested through the binary: pipelining, the 421 at the error
//! count, discard, and BDAT mixed with DATA.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use corvid_types::*;
use std::sync::Arc;

#[tokio::test]
async fn pipelined_transactions_are_answered_in_order() {
    let h = Harness::default();
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\n\
              RCPT TO:<x@far.test>\r\nBDAT 5 LAST\r\n\r\nx\r\nMAIL FROM:<b@b.test>\r\n\
              RCPT TO:<alice@local.test>\r\nBDAT 5 LAST\r\n\r\ny\r\nQUIT\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "550", "250", "250", "250", "250", "221"],
        "{out}"
    );
    let stored = h.intake.messages();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].0.sender_text(), "b@b.test");
}

#[tokio::test]
async fn the_error_limit_closes_with_421() {
    let mut h = Harness::default();
    h.limits.max_errors = 3;
    let out = h
        .run(&[b"EHLO c.test\r\nFOO\r\nRCPT TO:<a@b.test>\r\nBAR\r\nNOOP\r\n"])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "500", "503", "500", "421"],
        "{out}"
    );
    assert!(
        out.ends_with("421 4.7.0 mx.test Too many errors, closing connection\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn discard_answers_250_and_stores_nothing() {
    let mut h = Harness::default();
    h.policy = Arc::new(Script {
        data: Some(Arc::new(|_, _| decision(Verdict::Discard, vec![]))),
        ..Script::default()
    });
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nx\r\n.\r\n",
        ])
        .await;
    assert!(out.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{out}");
    assert!(h.intake.messages().is_empty());
}

#[tokio::test]
async fn data_after_bdat_is_refused_and_ends_the_transaction() {
    let h = Harness::default();
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\n\
              BDAT 3\r\n\r\nxDATA\r\nRCPT TO:<alice@local.test>\r\nQUIT\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "503", "503", "221"],
        "{out}"
    );
    assert!(h.intake.messages().is_empty());
}
