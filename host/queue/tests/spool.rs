//! The spool against a real sled database in a temporary directory.

use corvid_queue::{unix_secs, QueuedMessage, RecipientStatus, SledSpool, Spool};
use corvid_types::{Address, Envelope, Intake, IntakeError, QueueId, RcptParams, Recipient};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: Some(Address::new("from", "sender.test")),
        recipients: rcpts
            .iter()
            .map(|l| Recipient {
                address: Address::new(*l, "x.test"),
                params: RcptParams::default(),
            })
            .collect(),
        ..Envelope::default()
    }
}

async fn submit(spool: &SledSpool, rcpts: &[&str], body: &[u8]) -> QueueId {
    let id = spool.next_id();
    spool.submit(&id, &envelope(rcpts), body).await.unwrap();
    id
}

fn later(secs: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(secs)
}

#[tokio::test]
async fn a_submitted_message_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let id = submit(&spool, &["a", "b"], b"Subject: x\r\n\r\nhi\r\n").await;
    drop(spool);

    let spool = SledSpool::open(dir.path()).unwrap();
    let msg = spool.get(&id).unwrap().expect("message after reopen");
    assert_eq!(msg.envelope, envelope(&["a", "b"]));
    assert_eq!(msg.size, 18);
    assert_eq!(msg.recipients.len(), 2);
    assert!(msg.recipients.iter().all(|r| r.is_pending()));
    assert_eq!(
        spool.content(&id).unwrap().as_deref(),
        Some(&b"Subject: x\r\n\r\nhi\r\n"[..])
    );
    assert_eq!(spool.due(SystemTime::now()).unwrap(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let spool = Arc::clone(&spool);
        tasks.push(tokio::spawn(async move {
            let body = format!("Subject: {i}\r\n\r\nbody\r\n");
            submit(&spool, &["a"], body.as_bytes()).await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(spool.list().unwrap().len(), 200);
    let flushes = spool.flush_count();
    assert!(flushes < 100, "{flushes} flushes for 200 submits");
}

#[tokio::test]
async fn update_reschedules_and_remove_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let id = submit(&spool, &["a", "b"], b"x\r\n").await;

    let mut msg = spool.get(&id).unwrap().unwrap();
    msg.recipients[0].status = RecipientStatus::Delivered;
    msg.recipients[1].attempts = 1;
    msg.recipients[1].next_attempt = unix_secs(later(600));
    msg.recipients[1].last_reply = Some("451 4.3.0 try later".into());
    spool.update(&msg).unwrap();

    assert!(spool.due(SystemTime::now()).unwrap().is_empty());
    assert_eq!(spool.due(later(601)).unwrap(), std::slice::from_ref(&id));
    assert_eq!(spool.get(&id).unwrap().unwrap(), msg);
    let next = spool.next_wakeup().unwrap();
    assert!(next > later(590) && next <= later(601));

    assert!(spool.remove(&id).unwrap());
    assert!(!spool.remove(&id).unwrap());
    assert!(spool.get(&id).unwrap().is_none());
    assert!(spool.content(&id).unwrap().is_none());
    assert!(spool.due(later(10_000)).unwrap().is_empty());
    assert!(matches!(
        spool.update(&msg),
        Err(corvid_queue::QueueError::NotFound(_))
    ));
}

#[tokio::test]
async fn flush_all_makes_deferred_messages_due_and_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let a = submit(&spool, &["a"], b"x\r\n").await;
    let b = submit(&spool, &["b"], b"y\r\n").await;
    let done = submit(&spool, &["c"], b"z\r\n").await;
    for id in [&a, &b] {
        let mut msg = spool.get(id).unwrap().unwrap();
        msg.recipients[0].next_attempt = unix_secs(later(3600));
        spool.update(&msg).unwrap();
    }
    let mut msg = spool.get(&done).unwrap().unwrap();
    msg.recipients[0].status = RecipientStatus::Failed;
    spool.update(&msg).unwrap();
    assert!(spool.due(SystemTime::now()).unwrap().is_empty());

    let mut wake = spool.subscribe();
    wake.mark_unchanged();
    assert_eq!(spool.flush_all().unwrap(), 2);
    assert!(wake.has_changed().unwrap());
    assert_eq!(spool.due(SystemTime::now()).unwrap(), [a, b]);
}

#[tokio::test]
async fn a_submit_wakes_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let mut wake = spool.subscribe();
    let waiter = tokio::spawn(async move { wake.changed().await.is_ok() });
    submit(&spool, &["a"], b"x\r\n").await;
    assert!(tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap());
}

#[tokio::test]
async fn closed_spool_refuses_submissions() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    spool.close();
    let id = spool.next_id();
    let r = spool.submit(&id, &envelope(&["a"]), b"x").await;
    assert!(matches!(r, Err(IntakeError::Closed)));
    spool.sync().await.unwrap();
}

#[tokio::test]
async fn finished_messages_are_removed_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let pending = submit(&spool, &["a"], b"x\r\n").await;
    let failed = submit(&spool, &["b"], b"y\r\n").await;
    let mut msg: QueuedMessage = spool.get(&failed).unwrap().unwrap();
    msg.recipients[0].status = RecipientStatus::Failed;
    spool.update(&msg).unwrap();
    drop(spool);

    let spool = SledSpool::open(dir.path()).unwrap();
    assert_eq!(
        spool.due(SystemTime::now()).unwrap(),
        std::slice::from_ref(&pending)
    );
    // A crash between the last update and the removal must not leave it in the queue.
    let left: Vec<_> = spool.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(left, [pending]);
    assert!(spool.content(&failed).unwrap().is_none());
}

#[tokio::test]
async fn an_abandoned_submit_leaves_nothing_to_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SledSpool::open(dir.path()).unwrap();
    let id = spool.next_id();
    let env = envelope(&["a"]);
    // A zero timeout polls the submit once and then drops it, as when the session's task is
    // cancelled while waiting for the fsync. Either it finished in that single poll (then it
    // is stored) or it was abandoned (then nothing may remain to be delivered).
    let outcome = tokio::time::timeout(Duration::ZERO, spool.submit(&id, &env, b"x\r\n")).await;
    let stored = spool.get(&id).unwrap().is_some();
    assert_eq!(stored, matches!(outcome, Ok(Ok(()))));
    assert_eq!(spool.due(SystemTime::now()).unwrap().is_empty(), !stored);
    assert_eq!(spool.content(&id).unwrap().is_some(), stored);
}

#[test]
fn metadata_shows_as_json() {
    let msg = QueuedMessage::new(QueueId("ID1".into()), envelope(&["a"]), 3, 100);
    let json = serde_json::to_value(&msg).unwrap();
    assert_eq!(json["id"], "ID1");
    assert_eq!(json["recipients"][0]["status"], "pending");
    assert_eq!(json["recipients"][0]["recipient"]["address"]["local"], "a");
    assert_eq!(json["arrived_at"], 100);
}
