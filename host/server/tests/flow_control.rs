//! Flow control (`[queue] flow_*`): MAIL replies wait while the queue's backlog is over the
//! soft limit and are 451 4.3.1 over the hard limit; the session goes on.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use corvid_server::FlowControl;
use std::time::{Duration, Instant};

const TX: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n";
const BODY: &[u8] = b"Subject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n";

fn harness(backlog: Option<u64>, delay: Duration) -> Harness {
    let mut h = Harness::default();
    h.flow = FlowControl {
        delay_backlog: 10,
        delay,
        hard_backlog: 20,
    };
    *h.intake.backlog.lock().unwrap() = backlog;
    h
}

/// Runs one transaction; returns the transcript and how long it took.
async fn timed(h: &Harness) -> (String, Duration) {
    let start = Instant::now();
    let out = h.run(&[TX, BODY]).await;
    (out, start.elapsed())
}

#[tokio::test]
async fn below_the_soft_limit_mail_is_answered_at_once() {
    let h = harness(Some(10), Duration::from_secs(5));
    let (out, took) = timed(&h).await;
    assert!(out.contains("250 2.0.0 Ok: queued as Q1"), "{out}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(h.intake.messages().len(), 1);
}

#[tokio::test]
async fn an_intake_without_a_backlog_is_never_slowed() {
    let mut h = harness(None, Duration::from_secs(5));
    h.flow.delay_backlog = 0;
    h.flow.hard_backlog = 0;
    let (out, took) = timed(&h).await;
    assert!(out.contains("250 2.0.0 Ok: queued as Q1"), "{out}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn above_the_soft_limit_the_mail_reply_waits_flow_delay() {
    let h = harness(Some(11), Duration::from_millis(600));
    let (out, took) = timed(&h).await;
    // Delayed, not refused: the message is accepted.
    assert!(out.contains("250 2.0.0 Ok: queued as Q1"), "{out}");
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert_eq!(h.intake.messages().len(), 1);
}

#[tokio::test]
async fn the_delay_is_bounded_by_the_command_timeout() {
    let mut h = harness(Some(15), Duration::from_secs(3600));
    h.limits.command_timeout = Duration::from_millis(300);
    let (out, took) = timed(&h).await;
    assert!(out.contains("250 2.0.0 Ok: queued as Q1"), "{out}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[tokio::test]
async fn above_the_hard_limit_mail_gets_451_4_3_1_and_the_session_goes_on() {
    let h = harness(Some(21), Duration::from_secs(5));
    let script = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\nQUIT\r\n";
    let start = Instant::now();
    let out = h.run(&[script]).await;
    // Refused at once, not after the soft limit's delay.
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(codes(&out), ["220", "250", "451", "250", "221"], "{out}");
    assert!(out.contains("451 4.3.1 "), "{out}");
    assert!(h.intake.messages().is_empty());
}

#[tokio::test]
async fn a_later_mail_is_accepted_once_the_backlog_drains() {
    let h = harness(Some(25), Duration::from_secs(5));
    let shared = h.shared();
    let out = h
        .run_on(
            shared.clone(),
            &[b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n"],
        )
        .await;
    assert!(out.contains("451 4.3.1 "), "{out}");
    *h.intake.backlog.lock().unwrap() = Some(3);
    let out = h.run_on(shared, &[TX, BODY]).await;
    assert!(out.contains("250 2.0.0 Ok: queued as Q1"), "{out}");
}
