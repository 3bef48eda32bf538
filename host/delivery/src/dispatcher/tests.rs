//! The runner against a real sled spool: a due queue longer than a pass's batch is delivered
//! in full, each message once.

use super::{Dispatcher, PASS_BATCH};
use corvid_queue::{RetrySchedule, SledSpool, Spool};
use corvid_types::{Address, Directory, DomainEntry, Envelope, Intake, RcptParams, Recipient};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_longer_than_a_batch_is_delivered_once_each() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let spool = SledSpool::open(&tmp.path().join("spool")).unwrap();
    let envelope = Envelope {
        recipients: vec![Recipient {
            address: Address::new("alice", "example.test"),
            params: RcptParams::default(),
        }],
        ..Envelope::default()
    };
    let total = PASS_BATCH + PASS_BATCH / 2;
    for i in 0..total {
        let id = spool.next_id();
        let body = format!("Subject: {i}\r\n\r\nhello\r\n");
        spool.submit(&id, &envelope, body.as_bytes()).await.unwrap();
    }
    let mut directory = Directory::new(None, None);
    let mut domain = DomainEntry::default();
    domain.mailboxes.insert("alice".into());
    directory.add_domain("example.test", domain);
    let token = CancellationToken::new();
    let dispatcher = Dispatcher::new(
        spool.clone(),
        Arc::new(directory),
        root.clone(),
        RetrySchedule::default(),
    )
    .with_poll_interval(Duration::from_secs(60));
    let runner = tokio::spawn(dispatcher.run(token.clone()));
    for _ in 0..3000 {
        if spool.list().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    token.cancel();
    runner.await.unwrap();
    assert!(spool.list().unwrap().is_empty(), "every message delivered");
    let delivered = std::fs::read_dir(root.join("example.test/alice/Maildir/new"))
        .unwrap()
        .count();
    assert_eq!(delivered, total, "each message once");
    assert!(spool
        .take_due(SystemTime::now(), usize::MAX)
        .unwrap()
        .is_empty());
}
