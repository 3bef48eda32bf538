//! Delivery at intake ([`DirectIntake`]) against a real sled spool and Maildirs in temporary
//! directories: what it delivers before answering, what it hands to the queue, and that
//! closing it sends everything to the queue.

use async_trait::async_trait;
use corvid_delivery::{DirectHandle, DirectIntake, Dispatcher};
use corvid_queue::{RetrySchedule, SledSpool, Spool};
use corvid_types::{
    Address, Directory, DomainEntry, Envelope, Intake, IntakeError, QueueId, RcptParams, Recipient,
    SubmitOptions,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BODY: &[u8] = b"Subject: test\r\n\r\nhello\r\n";

fn directory() -> Arc<Directory> {
    let mut d = Directory::new(None, Some('+'));
    let mut e = DomainEntry::default();
    e.mailboxes.extend(["alice".into(), "bob".into()]);
    d.add_domain("example.test", e);
    Arc::new(d)
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: Some(Address::new("sender", "example.org")),
        recipients: rcpts
            .iter()
            .map(|a| {
                let (local, domain) = a.split_once('@').unwrap();
                Recipient {
                    address: Address::new(local, domain),
                    params: RcptParams::default(),
                }
            })
            .collect(),
        ..Envelope::default()
    }
}

/// Whether `local@example.test` has the message `id` in new/ (the file name carries the id).
fn has(root: &Path, local: &str, id: &QueueId) -> bool {
    let dir = root.join("example.test").join(local).join("Maildir/new");
    let tag = format!(".Q{id}.");
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(&tag))
    })
}

/// The queue behind the intake, counting the messages handed to it.
struct Counting {
    inner: Arc<SledSpool>,
    queued: AtomicUsize,
}

#[async_trait]
impl Intake for Counting {
    fn next_id(&self) -> QueueId {
        self.inner.next_id()
    }

    async fn submit_with(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
        options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.inner.submit_with(id, envelope, content, options).await
    }
}

#[tokio::test]
async fn local_mail_is_delivered_before_the_answer_and_the_rest_is_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let sled = SledSpool::open(&tmp.path().join("spool")).unwrap();
    let spool: Arc<dyn Spool> = sled.clone();
    let queue = Arc::new(Counting {
        inner: sled.clone(),
        queued: AtomicUsize::new(0),
    });
    let queued = || queue.queued.load(Ordering::SeqCst);
    let handle = DirectHandle::default();
    let intake = DirectIntake::new(queue.clone(), handle.clone());
    let env = envelope(&["alice@example.test"]);
    let opts = SubmitOptions::default();

    // Before the runner starts, every message is queued.
    let early = intake.next_id();
    intake.submit_with(&early, &env, BODY, &opts).await.unwrap();
    assert_eq!(queued(), 1);

    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::new(
        Arc::clone(&spool),
        directory(),
        root.clone(),
        RetrySchedule::default(),
    )
    .with_direct(handle.clone());
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    // The runner hands over its pipeline when it starts; until then messages are queued.
    let mut direct = None;
    for _ in 0..500 {
        let before = queued();
        let id = intake.next_id();
        intake.submit_with(&id, &env, BODY, &opts).await.unwrap();
        if queued() == before {
            direct = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let direct = direct.expect("never delivered at intake");
    // In the mailbox when submit returned (it was never queued, so only intake wrote it).
    assert!(has(&root, "alice", &direct));
    assert!(spool.get(&direct).unwrap().is_none());

    // A local and a remote recipient: handed to the queue, not delivered at intake.
    let before = queued();
    let mixed = intake.next_id();
    let env2 = envelope(&["bob@example.test", "carol@remote.test"]);
    intake
        .submit_with(&mixed, &env2, BODY, &opts)
        .await
        .unwrap();
    assert_eq!(queued(), before + 1);

    // A quarantined message is held in the queue.
    let held = intake.next_id();
    let hold = SubmitOptions {
        hold: Some("review".into()),
        ..SubmitOptions::default()
    };
    intake.submit_with(&held, &env, BODY, &hold).await.unwrap();
    assert_eq!(queued(), before + 2);
    assert!(spool
        .get(&held)
        .unwrap()
        .is_some_and(|m| m.quarantined.is_some()));
    assert!(!has(&root, "alice", &held));

    // More than 16 recipients: queued first.
    let many: Vec<String> = (0..17).map(|n| format!("alice+{n}@example.test")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    intake
        .submit_with(&intake.next_id(), &envelope(&many), BODY, &opts)
        .await
        .unwrap();
    assert_eq!(queued(), before + 3);

    // Closed: the next local message is queued, not delivered at intake.
    assert_eq!(handle.close(Duration::from_secs(1)).await, 0);
    let late = intake.next_id();
    intake.submit_with(&late, &env, BODY, &opts).await.unwrap();
    assert_eq!(queued(), before + 4);

    stop.cancel();
    run.await.unwrap();
}
