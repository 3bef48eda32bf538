//! Limits a client cannot talk its way around: RCPT counting, hops, header bombs, junk
//! commands, session time, pregreet, BDAT parking.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use corvid_types::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TX: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n";

#[tokio::test]
async fn the_101st_rcpt_gets_452_even_when_it_repeats_an_address() {
    let h = Harness::default();
    let mut script = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for _ in 0..101 {
        script.extend_from_slice(b"RCPT TO:<alice@local.test>\r\n");
    }
    script.extend_from_slice(b"QUIT\r\n");
    let out = h.run(&[&script]).await;
    let c = codes(&out);
    assert_eq!(c.len(), 105, "{out}");
    assert!(c[3..103].iter().all(|c| *c == "250"), "{out}");
    assert_eq!(c[103], "452");
    assert!(out.contains("452 4.5.3"), "{out}");
}

fn with_headers(n: usize, name: &str) -> Vec<u8> {
    let mut m = Vec::new();
    for i in 0..n {
        m.extend_from_slice(format!("{name}: from h{i}\r\n\tby x; date\r\n").as_bytes());
    }
    m.extend_from_slice(b"\r\nbody\r\n.\r\n");
    m
}

#[tokio::test]
async fn more_than_max_hops_received_fields_is_a_loop() {
    let h = Harness::default();
    let out = h.run(&[TX, &with_headers(101, "Received")]).await;
    assert!(out.contains("554 5.4.6"), "{out}");
    assert!(h.intake.messages().is_empty());
    let h = Harness::default();
    let out = h.run(&[TX, &with_headers(100, "received")]).await;
    assert!(out.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{out}");
}

#[tokio::test]
async fn header_bombs_are_refused_before_the_policy_sees_them() {
    let called = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&called);
    let mut h = Harness::default();
    h.limits.max_header_fields = 50;
    h.policy = Arc::new(Script {
        data: Some(Arc::new(move |_, _| {
            seen.store(true, Ordering::SeqCst);
            Decision::proceed()
        })),
        ..Script::default()
    });
    let out = h.run(&[TX, &with_headers(51, "X-H")]).await;
    assert!(out.contains("552 5.3.4 Too many header fields"), "{out}");
    assert!(
        !called.load(Ordering::SeqCst),
        "policy built a view of a bomb"
    );
    let out = h.run(&[TX, &with_headers(50, "X-H")]).await;
    assert!(out.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{out}");
    assert!(called.load(Ordering::SeqCst));
}

#[tokio::test]
async fn junk_commands_are_capped() {
    let mut h = Harness::default();
    h.limits.max_junk_commands = 3;
    let out = h
        .run(&[b"EHLO c.test\r\nNOOP\r\nRSET\r\nVRFY x\r\nHELP\r\nNOOP\r\n"])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "252", "421"],
        "{out}"
    );
    assert!(out.contains("421 4.7.0"), "{out}");
}

/// Runs a session whose client sends `first` after the greeting (or before it), then waits
/// without closing; returns everything read until the server closed.
async fn idle_client(h: &Harness, greet_first: bool, first: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let listener = Arc::new(h.listener.clone());
    let task = tokio::spawn(corvid_server::run_session(
        h.shared(),
        listener,
        server,
        h.conn(),
    ));
    let mut out = Vec::new();
    if greet_first {
        wait_for(&mut client, &mut out, "220 ", 1).await;
    } else {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.write_all(first).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "server did not close");
    task.await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn session_time_is_capped() {
    let mut h = Harness::default();
    h.limits.max_session_time = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let out = idle_client(&h, true, b"EHLO c.test\r\n").await;
    assert!(
        out.ends_with("421 4.7.0 mx.test Session time limit exceeded, closing connection\r\n"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_client_talking_before_the_greeting_is_refused() {
    // No delay: bytes already buffered when the greeting is due.
    let mut h = Harness::default();
    h.wait_for_greeting = false;
    let out = h.run(&[b"EHLO c.test\r\nQUIT\r\n"]).await;
    assert_eq!(codes(&out), ["554"], "{out}");
    assert!(out.starts_with("554 5.5.0"), "{out}");
    // With a delay: bytes arriving during it.
    let mut h = Harness::default();
    h.limits.greet_delay = Duration::from_millis(500);
    let out = idle_client(&h, false, b"EHLO c.test\r\n").await;
    assert!(out.starts_with("554 5.5.0"), "{out}");
    // A patient client is greeted after the delay.
    let started = std::time::Instant::now();
    let out = h.run(&[b"QUIT\r\n"]).await;
    assert_eq!(codes(&out), ["220", "221"], "{out}");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn a_partial_bdat_cannot_be_parked_behind_noops() {
    let h = Harness::default();
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\n\
              BDAT 3\r\nabcNOOP\r\nBDAT 2 LAST\r\nxyQUIT\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "503", "503", "221"],
        "{out}"
    );
    assert!(
        out.contains("Only BDAT, RSET or QUIT may follow a BDAT chunk"),
        "{out}"
    );
    assert!(h.intake.messages().is_empty());
    // Further chunks are fine.
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\n\
              BDAT 3\r\n\r\nxBDAT 3 LAST\r\ny\r\n",
        ])
        .await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "250"],
        "{out}"
    );
    assert_eq!(h.intake.messages().len(), 1);
}
