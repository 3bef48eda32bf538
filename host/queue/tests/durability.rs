//! The spool's syncs: the group commit fdatasyncs sled's log and fsyncs the blob files that
//! sled never syncs, shares one sync among concurrent submitters, and fails a submit whose
//! sync failed.

use corvid_queue::{SledSpool, Spool};
use corvid_types::{Address, Envelope, Intake, QueueId, RcptParams, Recipient};
use std::sync::Arc;

fn envelope() -> Envelope {
    Envelope {
        sender: Some(Address::new("from", "sender.test")),
        recipients: vec![Recipient {
            address: Address::new("a", "x.test"),
            params: RcptParams::default(),
        }],
        ..Envelope::default()
    }
}

fn blob_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("blobs")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_share_one_log_sync() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let (syncs_at_open, _) = spool.sync_counts();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let spool = Arc::clone(&spool);
        tasks.push(tokio::spawn(async move {
            let id = spool.next_id();
            let body = format!("Subject: {i}\r\n\r\nbody\r\n");
            spool
                .submit(&id, &envelope(), body.as_bytes())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (syncs, _) = spool.sync_counts();
    let syncs = syncs - syncs_at_open;
    assert!(syncs >= 1, "no fdatasync at all");
    assert!(syncs < 150, "{syncs} log syncs for 300 submits");
    assert_eq!(spool.list().unwrap().len(), 300);
}

#[tokio::test]
async fn a_large_message_lands_in_a_blob_file_that_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let (log0, blobs0) = spool.sync_counts();
    assert_eq!(blob_files(dir.path()), 0);
    let body: Vec<u8> = (0..300 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let id = spool.next_id();
    spool.submit(&id, &envelope(), &body).await.unwrap();
    assert!(blob_files(dir.path()) >= 1, "sled kept 300 KiB inline");
    let (log1, blobs1) = spool.sync_counts();
    assert!(log1 > log0, "the log was not synced");
    assert!(
        blobs1 > blobs0,
        "the blob file was not synced before the submit returned"
    );

    // Small messages after it do not sync the (whole, already synced) blob again.
    let small = spool.next_id();
    spool.submit(&small, &envelope(), b"x\r\n").await.unwrap();
    let small2 = spool.next_id();
    spool.submit(&small2, &envelope(), b"y\r\n").await.unwrap();
    let (_, blobs2) = spool.sync_counts();
    assert!(
        blobs2 <= blobs1 + 1,
        "{blobs1} -> {blobs2}: blobs resynced every time"
    );

    drop(spool);
    let spool = SledSpool::open(dir.path()).unwrap();
    assert_eq!(spool.content(&id).unwrap().as_deref(), Some(&body[..]));
}

#[tokio::test]
async fn a_failed_sync_fails_the_submit_and_shutdown_sync() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    // The blob directory is listed at every commit; without it nothing can be proven durable.
    std::fs::remove_dir(dir.path().join("blobs")).unwrap();
    let id: QueueId = spool.next_id();
    let err = spool.submit(&id, &envelope(), b"x\r\n").await.unwrap_err();
    assert!(err.to_string().contains("blobs"), "{err}");
    assert!(
        spool.get(&id).unwrap().is_none(),
        "an unacknowledged message stays queued"
    );
    assert!(spool.sync().await.is_err());
    std::fs::create_dir(dir.path().join("blobs")).unwrap();
    spool.sync().await.unwrap();
}
