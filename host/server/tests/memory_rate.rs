//! The server-wide memory ceiling for message content, and the sustained data rate.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TX: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\n";

fn message(body: usize) -> Vec<u8> {
    let mut m = b"Subject: m\r\n\r\n".to_vec();
    m.extend(std::iter::repeat_n(b'x', body));
    m.extend_from_slice(b"\r\n.\r\n");
    m
}

#[tokio::test]
async fn content_beyond_the_memory_ceiling_gets_452_and_the_budget_is_released() {
    let mut h = Harness::default();
    h.limits.max_inflight_bytes = 4000;
    let shared = h.shared();
    let mut data = TX.to_vec();
    data.extend_from_slice(b"DATA\r\n");
    let big = message(5000);
    let out = h.run_on(Arc::clone(&shared), &[&data, &big]).await;
    assert!(
        out.ends_with("452 4.3.1 Insufficient system storage, try again later\r\n"),
        "{out}"
    );
    assert!(h.intake.messages().is_empty());
    // The refused message released its charge: a small one fits, on the same server.
    let out = h
        .run_on(Arc::clone(&shared), &[&data, &message(1000)])
        .await;
    assert!(out.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{out}");
    // BDAT is charged too, chunk by chunk.
    let mut bdat = TX.to_vec();
    bdat.extend_from_slice(b"BDAT 3000\r\n");
    bdat.extend(std::iter::repeat_n(b'y', 3000));
    bdat.extend_from_slice(b"BDAT 3000 LAST\r\n");
    bdat.extend(std::iter::repeat_n(b'y', 3000));
    bdat.extend_from_slice(b"MAIL FROM:<a@b.test>\r\n");
    let out = h.run_on(shared, &[&bdat]).await;
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "452", "250"],
        "{out}"
    );
    assert!(out.contains("452 4.3.1"), "{out}");
    assert_eq!(h.intake.messages().len(), 1);
}

/// Greets, sends `first`, waits for `wait_code`, then sends `then` and stays silent, never
/// closing; returns what the server sent until it closed, and how long that took.
async fn stalling_client(h: &Harness, first: &[u8], then: &[u8]) -> (String, Duration) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(corvid_server::run_session(
        h.shared(),
        Arc::new(h.listener.clone()),
        server,
        h.conn(),
    ));
    let mut out = Vec::new();
    wait_for(&mut client, &mut out, "220 ", 1).await;
    client.write_all(first).await.unwrap();
    wait_for(&mut client, &mut out, "354 ", 1).await;
    let started = std::time::Instant::now();
    client.write_all(then).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "server did not close");
    task.await.unwrap();
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_burst_does_not_buy_minutes_of_trickling() {
    let mut h = Harness::default();
    h.limits.min_data_rate = 1000;
    h.limits.data_rate_window = Duration::from_millis(500);
    let mut first = TX.to_vec();
    first.extend_from_slice(b"DATA\r\n");
    // 100 kB would have earned 100 s of credit under an up-front rate; with a sliding window
    // the client must keep sending.
    let burst = vec![b'x'; 100_000];
    let (out, took) = stalling_client(&h, &first, &burst).await;
    assert!(
        out.ends_with("421 4.4.2 mx.test Timeout exceeded, closing connection\r\n"),
        "{out}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn data_timeout_is_an_idle_limit_when_there_is_no_rate() {
    let mut h = Harness::default();
    h.limits.min_data_rate = 0;
    h.limits.data_timeout = Duration::from_millis(300);
    let mut first = TX.to_vec();
    first.extend_from_slice(b"DATA\r\n");
    let (out, took) = stalling_client(&h, &first, b"Subject: x\r\n").await;
    assert!(
        out.ends_with("421 4.4.2 mx.test Timeout exceeded, closing connection\r\n"),
        "{out}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}
