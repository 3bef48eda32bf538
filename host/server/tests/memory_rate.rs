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

#[tokio::test]
async fn a_declared_size_that_cannot_fit_now_gets_452_at_mail() {
    let mut h = Harness::default();
    h.limits.max_inflight_bytes = 100_000;
    let shared = h.shared();
    // Another session holds 50 kB of a message it has not finished.
    let (mut other, server) = tokio::io::duplex(1 << 20);
    let held = tokio::spawn(corvid_server::run_session(
        Arc::clone(&shared),
        Arc::new(h.listener.clone()),
        server,
        h.conn(),
    ));
    let mut out = Vec::new();
    wait_for(&mut other, &mut out, "220 ", 1).await;
    let mut first = TX.to_vec();
    first.extend_from_slice(b"DATA\r\n");
    other.write_all(&first).await.unwrap();
    wait_for(&mut other, &mut out, "354 ", 1).await;
    other.write_all(&vec![b'x'; 50_000]).await.unwrap();
    while shared.memory.used() < 50_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // RFC 1870 6.1: what cannot fit beside it now is refused at MAIL, before any transfer.
    let out = h
        .run_on(
            Arc::clone(&shared),
            &[b"EHLO c.test\r\nMAIL FROM:<a@b.test> SIZE=60000\r\n\
                MAIL FROM:<a@b.test> SIZE=20000\r\nQUIT\r\n"],
        )
        .await;
    assert_eq!(codes(&out), ["220", "250", "452", "250", "221"], "{out}");
    assert!(
        out.contains("452 4.3.1 Insufficient system storage"),
        "{out}"
    );
    drop(other);
    held.await.unwrap();
    assert_eq!(shared.memory.used(), 0, "the stalled message was released");
    // With nothing held, the same declaration fits.
    let out = h
        .run_on(
            shared,
            &[b"EHLO c.test\r\nMAIL FROM:<a@b.test> SIZE=60000\r\nQUIT\r\n"],
        )
        .await;
    assert_eq!(codes(&out), ["220", "250", "250", "221"], "{out}");
}

/// The server's end of the pipe, checking at each read during DATA that the bytes read so
/// far were charged to the budget before they arrived.
struct Spy {
    inner: tokio::io::DuplexStream,
    budget: Arc<corvid_server::MemoryBudget>,
    max: usize,
    in_data: bool,
    read_in_data: usize,
    uncharged: Arc<std::sync::Mutex<Vec<String>>>,
}

impl tokio::io::AsyncRead for Spy {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let charged = this.budget.used();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if buf.filled()[before..].windows(5).any(|w| w == b"BDAT ") {
            // The chunk follows its command (sent separately by the test).
            this.in_data = true;
            this.read_in_data = 0;
        } else if this.in_data && n > 0 {
            this.read_in_data += n;
            // Past the ceiling the content is dropped, and reads need no charge.
            if this.read_in_data > charged && charged < this.max {
                this.uncharged.lock().unwrap().push(format!(
                    "read {n} octets, {} in DATA, with {charged} charged",
                    this.read_in_data
                ));
            }
        }
        r
    }
}

impl tokio::io::AsyncWrite for Spy {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if buf.windows(4).any(|w| w == b"354 ") {
            this.in_data = true;
            this.read_in_data = 0;
        }
        std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn message_bytes_are_charged_before_they_are_read() {
    let mut h = Harness::default();
    h.limits.max_inflight_bytes = 4000;
    let shared = h.shared();
    let mut data = TX.to_vec();
    data.extend_from_slice(b"DATA\r\n");
    // 3981 octets of body make a message of exactly 4000 with its header and terminator.
    let cases = [
        (5000, "452 4.3.1"),
        (1000, "250 2.0.0"),
        (3981, "250 2.0.0"),
        (3982, "452 4.3.1"),
    ];
    for (body, reply) in cases {
        let uncharged = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let spy = Spy {
            inner: server,
            budget: Arc::clone(&shared.memory),
            max: 4000,
            in_data: false,
            read_in_data: 0,
            uncharged: Arc::clone(&uncharged),
        };
        let task = tokio::spawn(corvid_server::run_session(
            Arc::clone(&shared),
            Arc::new(h.listener.clone()),
            spy,
            h.conn(),
        ));
        let mut out = Vec::new();
        wait_for(&mut client, &mut out, "220 ", 1).await;
        client.write_all(&data).await.unwrap();
        wait_for(&mut client, &mut out, "354 ", 1).await;
        // The whole message in one write: a read buffer would take it at once.
        client.write_all(&message(body)).await.unwrap();
        client.shutdown().await.unwrap();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains(reply), "{body}: {out}");
        let uncharged = uncharged.lock().unwrap();
        assert!(uncharged.is_empty(), "{body}: {uncharged:#?}");
        assert_eq!(shared.memory.used(), 0, "{body}: released");
    }
}

#[tokio::test]
async fn bdat_chunks_are_charged_before_they_are_read() {
    let mut h = Harness::default();
    h.limits.max_inflight_bytes = 4000;
    let shared = h.shared();
    for (size, reply) in [(5000usize, "452 4.3.1"), (3000, "250 2.0.0")] {
        let uncharged = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let spy = Spy {
            inner: server,
            budget: Arc::clone(&shared.memory),
            max: 4000,
            in_data: false,
            read_in_data: 0,
            uncharged: Arc::clone(&uncharged),
        };
        let task = tokio::spawn(corvid_server::run_session(
            Arc::clone(&shared),
            Arc::new(h.listener.clone()),
            spy,
            h.conn(),
        ));
        let mut out = Vec::new();
        wait_for(&mut client, &mut out, "220 ", 1).await;
        client.write_all(TX).await.unwrap();
        wait_for(&mut client, &mut out, "250 2.1.5", 1).await;
        client
            .write_all(format!("BDAT {size} LAST\r\n").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut chunk = b"Subject: c\r\n\r\n".to_vec();
        chunk.resize(size, b'z');
        client.write_all(&chunk).await.unwrap();
        client.shutdown().await.unwrap();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains(reply), "{size}: {out}");
        let uncharged = uncharged.lock().unwrap();
        assert!(uncharged.is_empty(), "{size}: {uncharged:#?}");
        assert_eq!(shared.memory.used(), 0, "{size}: released");
    }
}
