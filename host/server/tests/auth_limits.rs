//! AUTH guessing limits shared across connections, and the server-wide cap on password hashes.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use common::*;
use corvid_server::auth::{hash_password, UsersFile};
use std::sync::Arc;

fn plain(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

fn harness(dir: &tempfile::TempDir) -> Harness {
    let users = UsersFile::load(&dir.path().join("users"), '+').unwrap();
    users
        .set("alice@local.test", hash_password("pw").unwrap(), None)
        .unwrap();
    let mut h = Harness::default();
    h.credentials = Some(Arc::new(users));
    h
}

/// Runs `n` sessions at once on one server, each sending `script`; returns their transcripts.
async fn parallel(h: Arc<Harness>, n: usize, script: String) -> Vec<String> {
    let shared = h.shared();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (h, shared, script) = (Arc::clone(&h), Arc::clone(&shared), script.clone());
            tokio::spawn(async move { h.run_on(shared, &[script.as_bytes()]).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_connections_from_one_address_share_the_guess_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(&dir);
    h.auth.max_failures_per_ip = 4;
    h.auth.max_failures_per_connection = 3;
    let bad = plain("alice@local.test", "wrong");
    let script =
        format!("EHLO c.test\r\nAUTH PLAIN {bad}\r\nAUTH PLAIN {bad}\r\nAUTH PLAIN {bad}\r\n");
    let outs = parallel(Arc::new(h), 6, script).await;
    let guesses: usize = outs.iter().map(|o| o.matches("535 5.7.8").count()).sum();
    let refused: usize = outs.iter().map(|o| o.matches("454 4.7.0").count()).sum();
    // 6 connections x 3 attempts = 18 asked; only 4 may be checked.
    assert_eq!(guesses, 4, "{outs:#?}");
    assert_eq!(refused, 14, "{outs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hashes_beyond_the_server_wide_cap_get_454() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(&dir);
    h.auth.max_concurrent_hashes = 1;
    // Different client addresses would not help: the cap is server-wide.
    let good = plain("alice@local.test", "pw");
    let script = format!("EHLO c.test\r\nAUTH PLAIN {good}\r\nQUIT\r\n");
    let outs = parallel(Arc::new(h), 6, script).await;
    let ok = outs.iter().filter(|o| o.contains("235 2.7.0")).count();
    let busy = outs
        .iter()
        .filter(|o| o.contains("454 4.7.0 Too many authentications in progress"))
        .count();
    assert!(ok >= 1, "{outs:#?}");
    assert!(busy >= 1, "six hashes at once with a cap of 1: {outs:#?}");
    assert_eq!(ok + busy, 6, "{outs:#?}");
}
