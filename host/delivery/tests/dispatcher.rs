//! The dispatcher against a real sled spool and Maildirs in temporary directories.

use async_trait::async_trait;
use corvid_delivery::Dispatcher;
use corvid_queue::{QueueError, QueuedMessage, RecipientStatus, RetrySchedule, SledSpool, Spool};
use corvid_types::{
    Address, Directory, DomainEntry, Envelope, Intake, QueueId, RcptParams, Recipient,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const BODY: &[u8] = b"Subject: test\r\n\r\nhello\r\n";

fn directory() -> Arc<Directory> {
    let mut d = Directory::new(None, Some('+'));
    let mut e = DomainEntry::default();
    e.mailboxes.extend(["alice".into(), "bob".into()]);
    e.aliases
        .insert("team".into(), vec!["alice".into(), "bob".into()]);
    d.add_domain("example.test", e);
    Arc::new(d)
}

fn envelope(sender: Option<Address>, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender,
        recipients: rcpts
            .iter()
            .map(|l| Recipient {
                address: Address::new(*l, "example.test"),
                params: RcptParams::default(),
            })
            .collect(),
        ..Envelope::default()
    }
}

async fn submit(spool: &SledSpool, sender: Option<Address>, rcpts: &[&str]) -> QueueId {
    let id = spool.next_id();
    spool
        .submit(&id, &envelope(sender, rcpts), BODY)
        .await
        .unwrap();
    id
}

/// The files delivered to `local@example.test`, sorted.
fn delivered(root: &Path, local: &str) -> Vec<Vec<u8>> {
    let dir = root.join("example.test").join(local).join("Maildir/new");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<Vec<u8>> = entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    files.sort();
    files
}

/// Waits (at most 5 s) until `cond` holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Waits until no message in the spool has a pending recipient.
async fn settle(spool: &dyn Spool) {
    wait_until("no recipient is pending", || {
        spool.list().unwrap().iter().all(|m| !m.has_pending())
    })
    .await;
}

/// Waits until the first recipient of `id` was attempted.
async fn attempted(spool: &dyn Spool, id: &QueueId) {
    wait_until("the first attempt", || {
        spool
            .get(id)
            .unwrap()
            .is_some_and(|m| m.recipients[0].attempts > 0)
    })
    .await;
}

/// Makes delivery to example.test fail transiently: a file where its directory belongs.
fn block_domain(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("example.test"), b"").unwrap();
}

fn start(spool: Arc<dyn Spool>, root: PathBuf) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let dispatcher = Dispatcher::new(spool, directory(), root, RetrySchedule::default())
        .with_concurrency(2)
        .with_poll_interval(Duration::from_millis(200));
    let handle = tokio::spawn(dispatcher.run(token.clone()));
    (token, handle)
}

/// A spool that keeps a copy of every update, to see the final state of removed messages.
struct Recording {
    inner: Arc<SledSpool>,
    updates: Mutex<Vec<QueuedMessage>>,
}

#[async_trait]
impl Spool for Recording {
    fn list(&self) -> Result<Vec<QueuedMessage>, QueueError> {
        self.inner.list()
    }
    fn get(&self, id: &QueueId) -> Result<Option<QueuedMessage>, QueueError> {
        self.inner.get(id)
    }
    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, QueueError> {
        self.inner.content(id)
    }
    fn update(&self, msg: &QueuedMessage) -> Result<(), QueueError> {
        self.updates.lock().unwrap().push(msg.clone());
        self.inner.update(msg)
    }
    fn remove(&self, id: &QueueId) -> Result<bool, QueueError> {
        self.inner.remove(id)
    }
    // Passed through so that these tests run the async record path the attempts use in the
    // server (the trait's defaults would call the blocking forms).
    async fn update_async(&self, msg: &QueuedMessage) -> Result<(), QueueError> {
        self.updates.lock().unwrap().push(msg.clone());
        self.inner.update_async(msg).await
    }
    async fn remove_async(&self, id: &QueueId) -> Result<bool, QueueError> {
        self.inner.remove_async(id).await
    }
    fn due(&self, now: SystemTime) -> Result<Vec<QueueId>, QueueError> {
        self.inner.due(now)
    }
    // Passed through so that these tests run the runner's claim path, as the server does.
    fn take_due(&self, now: SystemTime, limit: usize) -> Result<Vec<QueueId>, QueueError> {
        self.inner.take_due(now, limit)
    }
    fn release_claim(&self, id: &QueueId) {
        self.inner.release_claim(id)
    }
    fn next_wakeup(&self) -> Option<SystemTime> {
        self.inner.next_wakeup()
    }
    fn flush_all(&self) -> Result<usize, QueueError> {
        self.inner.flush_all()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }
    async fn sync(&self) -> Result<(), QueueError> {
        self.inner.sync().await
    }
    fn close(&self) {
        self.inner.close()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_expands_dedups_and_fails_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let sled = SledSpool::open(&tmp.path().join("spool")).unwrap();
    let spool = Arc::new(Recording {
        inner: Arc::clone(&sled),
        updates: Mutex::new(Vec::new()),
    });
    let (token, handle) = start(spool.clone(), root.clone());

    let bob = Some(Address::new("bob", "sender.test"));
    submit(&sled, bob.clone(), &["alice"]).await;
    // The alias and an extension of a member: alice gets this message once.
    submit(&sled, None, &["team", "alice+x"]).await;
    let unknown = submit(&sled, bob, &["nobody"]).await;
    settle(spool.as_ref()).await;
    token.cancel();
    handle.await.unwrap();

    let alice = delivered(&root, "alice");
    let mut expected = vec![
        [&b"Return-Path: <bob@sender.test>\r\n"[..], BODY].concat(),
        [&b"Return-Path: <>\r\n"[..], BODY].concat(),
    ];
    expected.sort();
    assert_eq!(alice, expected);
    assert_eq!(
        delivered(&root, "bob"),
        [[&b"Return-Path: <>\r\n"[..], BODY].concat()]
    );
    assert!(delivered(&root, "nobody").is_empty());

    assert!(sled.list().unwrap().is_empty(), "finished messages removed");
    let updates = spool.updates.lock().unwrap();
    let failed = updates.iter().find(|m| m.id == unknown).unwrap();
    assert_eq!(failed.recipients[0].status, RecipientStatus::Failed);
    assert_eq!(
        failed.recipients[0].last_reply.as_deref(),
        Some("5.1.1 unknown local recipient")
    );
    assert_eq!(failed.recipients[0].attempts, 1);
}

#[tokio::test]
async fn a_message_queued_before_start_is_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let spool_dir = tmp.path().join("spool");
    let spool = SledSpool::open(&spool_dir).unwrap();
    submit(&spool, None, &["bob"]).await;
    drop(spool);

    let spool = SledSpool::open(&spool_dir).unwrap();
    let (token, handle) = start(spool.clone(), root.clone());
    settle(spool.as_ref()).await;
    token.cancel();
    handle.await.unwrap();
    assert_eq!(delivered(&root, "bob").len(), 1);
    assert!(spool.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_transient_failure_is_rescheduled() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    block_domain(&root);
    let spool = SledSpool::open(&tmp.path().join("spool")).unwrap();
    let id = submit(&spool, None, &["alice"]).await;
    let (token, handle) = start(spool.clone(), root.clone());
    attempted(spool.as_ref(), &id).await;
    token.cancel();
    handle.await.unwrap();

    let msg = spool.get(&id).unwrap().unwrap();

    let r = &msg.recipients[0];
    assert_eq!(r.status, RecipientStatus::Pending);
    assert_eq!(r.attempts, 1);
    assert!(r.last_reply.as_deref().unwrap().starts_with("4.3.0"));
    let delay = r.next_attempt - corvid_queue::unix_secs(SystemTime::now());
    assert!((240..=330).contains(&delay), "retry in {delay}s");
    assert!(spool.due(SystemTime::now()).unwrap().is_empty());
}

#[tokio::test]
async fn flush_all_retries_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    block_domain(&root);
    let spool = SledSpool::open(&tmp.path().join("spool")).unwrap();
    let id = submit(&spool, None, &["alice"]).await;
    let (token, handle) = start(spool.clone(), root.clone());
    attempted(spool.as_ref(), &id).await;
    // The administrator fixes the problem and flushes the queue.
    std::fs::remove_file(root.join("example.test")).unwrap();
    assert_eq!(spool.flush_all().unwrap(), 1);
    settle(spool.as_ref()).await;
    token.cancel();
    handle.await.unwrap();
    assert_eq!(delivered(&root, "alice").len(), 1);
}

#[tokio::test]
async fn a_transient_failure_after_max_age_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    block_domain(&root);
    let sled = SledSpool::open(&tmp.path().join("spool")).unwrap();
    let id = submit(&sled, None, &["alice"]).await;
    let mut msg = sled.get(&id).unwrap().unwrap();
    msg.arrived_at -= 6 * 24 * 3600;
    sled.update(&msg).unwrap();
    let spool = Arc::new(Recording {
        inner: Arc::clone(&sled),
        updates: Mutex::new(Vec::new()),
    });
    let (token, handle) = start(spool.clone(), root.clone());
    settle(spool.as_ref()).await;
    token.cancel();
    handle.await.unwrap();

    assert!(sled.list().unwrap().is_empty());
    let updates = spool.updates.lock().unwrap();
    let r = &updates.last().unwrap().recipients[0];
    assert_eq!(r.status, RecipientStatus::Failed);
    assert!(r.last_reply.as_deref().unwrap().starts_with("4.4.7"));
}
