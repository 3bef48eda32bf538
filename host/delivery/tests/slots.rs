//! Delivery slots: local delivery has permits of its own, and one remote destination holds
//! at most `max_per_destination` of the remote ones.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::peer::{Peer, Script};
use support::*;

/// A next hop that accepts connections and never greets (a stalled MX); counts accepts.
async fn stalled_peer() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(stream);
        }
    });
    (addr, accepted)
}

fn config(
    slow: std::net::SocketAddr,
    fast: Option<std::net::SocketAddr>,
    per_dest: usize,
) -> corvid_delivery::DeliveryConfig {
    let mut text = format!(
        "max_per_destination = {per_dest}\ntimeouts = {{ connect = \"2s\", greeting = \"60s\" }}\n[[route]]\ndomain = \"slow.test\"\nto = \"smtp://{slow}\"\n"
    );
    if let Some(fast) = fast {
        text.push_str(&format!(
            "[[route]]\ndomain = \"fast.test\"\nto = \"smtp://{fast}\"\n"
        ));
    }
    toml::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_remote_mxes_do_not_starve_local_delivery() {
    let (slow, accepted) = stalled_peer().await;
    let h = Harness::start_full(config(slow, None, 8), fast_retry(), 2);
    for i in 0..6 {
        h.submit(
            &envelope(Some("a@corvid.test"), &[&format!("u{i}@slow.test")]),
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await;
    }
    wait_until("both remote permits are taken", 5, || {
        accepted.load(Ordering::SeqCst) >= 2
    })
    .await;
    h.submit(
        &envelope(Some("a@corvid.test"), &["alice@corvid.test"]),
        b"Subject: local\r\n\r\nhi\r\n",
    )
    .await;
    let root = h.mail_root();
    wait_until("the local message is in the Maildir", 3, || {
        maildir(&root, "alice").len() == 1
    })
    .await;
    // Only the two remote permits ever reached the stalled MX.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_destination_holds_at_most_its_share_of_remote_permits() {
    let (slow, accepted) = stalled_peer().await;
    let fast = Peer::start(Script::default()).await;
    let h = Harness::start_full(config(slow, Some(fast.addr), 2), fast_retry(), 3);
    for i in 0..6 {
        h.submit(
            &envelope(Some("a@corvid.test"), &[&format!("u{i}@slow.test")]),
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await;
    }
    wait_until("the slow destination has its share", 5, || {
        accepted.load(Ordering::SeqCst) >= 2
    })
    .await;
    h.submit(
        &envelope(Some("a@corvid.test"), &["b@fast.test"]),
        b"Subject: fast\r\n\r\nhi\r\n",
    )
    .await;
    wait_until("the other destination got a permit", 3, || {
        fast.completed().len() == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "more than max_per_destination sessions"
    );
    h.stop().await;
}
