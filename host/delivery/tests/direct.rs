//! Delivery at intake ([`DirectIntake`]) against a real sled spool and Maildirs in temporary
//! directories: what it delivers before answering, what it hands to the queue, that closing
//! it sends everything to the queue, and that a message finding every slot taken is queued.

use async_trait::async_trait;
use corvid_delivery::{DirectHandle, DirectIntake, Dispatcher};
use corvid_queue::{RetrySchedule, SledSpool, Spool};
use corvid_types::{
    Address, DeliveryPolicy, Directory, DomainEntry, Envelope, Intake, IntakeError, QueueId,
    RcptParams, Recipient, Route, RouteRequest, Stage, SubmitOptions,
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

impl Counting {
    /// A sled spool in `dir`, and this queue in front of it.
    fn open(dir: &Path) -> (Arc<dyn Spool>, Arc<Counting>) {
        let sled = SledSpool::open(&dir.join("spool")).unwrap();
        let queue = Counting {
            inner: sled.clone(),
            queued: AtomicUsize::new(0),
        };
        (sled, Arc::new(queue))
    }
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

/// Submits `env` until a submit is not handed to `queue`: the runner hands over its pipeline
/// when it starts, and until then messages are queued. Returns the id delivered at intake.
async fn first_direct(intake: &DirectIntake, queue: &Counting, env: &Envelope) -> QueueId {
    let opts = SubmitOptions::default();
    for _ in 0..500 {
        let before = queue.queued.load(Ordering::SeqCst);
        let id = intake.next_id();
        intake.submit_with(&id, env, BODY, &opts).await.unwrap();
        if queue.queued.load(Ordering::SeqCst) == before {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never delivered at intake");
}

#[tokio::test]
async fn local_mail_is_delivered_before_the_answer_and_the_rest_is_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let (spool, queue) = Counting::open(tmp.path());
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
    let direct = first_direct(&intake, &queue, &env).await;
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

/// A `route` stage that holds each attempt for alice until the gate opens (Maildir writes at
/// intake take their slot before routing, so a held attempt holds its slot), counting them.
struct Gate {
    open: tokio::sync::watch::Sender<bool>,
    held: AtomicUsize,
}

#[async_trait]
impl DeliveryPolicy for Gate {
    fn observes(&self, stage: Stage) -> bool {
        stage == Stage::Route
    }

    async fn route(&self, req: &RouteRequest) -> Route {
        if req.recipient.local == "alice" {
            let mut open = self.open.subscribe();
            self.held.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|o| *o).await;
        }
        Route::Continue
    }
}

#[tokio::test]
async fn a_message_finding_every_slot_taken_is_queued_first() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let (spool, queue) = Counting::open(tmp.path());
    let queued = || queue.queued.load(Ordering::SeqCst);
    let gate = Arc::new(Gate {
        open: tokio::sync::watch::Sender::new(false),
        held: AtomicUsize::new(0),
    });
    let handle = DirectHandle::default();
    let intake = Arc::new(DirectIntake::new(queue.clone(), handle.clone()));
    let stop = CancellationToken::new();
    // One runner permit: eight slots for delivery at intake (the dispatcher's
    // DIRECT_SLOTS_PER_PERMIT).
    let dispatcher = Dispatcher::new(spool, directory(), root.clone(), RetrySchedule::default())
        .with_concurrency(1)
        .with_policy(gate.clone())
        .with_direct(handle.clone());
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    let to_bob = envelope(&["bob@example.test"]);
    first_direct(&intake, &queue, &to_bob).await;

    // Messages for alice take slots and wait in the route stage, one more each time.
    let mut holders = Vec::new();
    let mut hold = |n: usize| {
        let intake = Arc::clone(&intake);
        holders.push(tokio::spawn(async move {
            let id = intake.next_id();
            let env = envelope(&["alice@example.test"]);
            let opts = SubmitOptions::default();
            intake
                .submit_with(&id, &env, BODY, &opts)
                .await
                .map(|()| id)
        }));
        let gate = Arc::clone(&gate);
        async move {
            for _ in 0..5000 {
                if gate.held.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("attempt {n} for alice never reached the route stage");
        }
    };
    let submit_bob = || async {
        let before = queued();
        let id = intake.next_id();
        let opts = SubmitOptions::default();
        let sent = intake.submit_with(&id, &to_bob, BODY, &opts);
        tokio::time::timeout(Duration::from_secs(5), sent)
            .await
            .expect("submit waited for a slot")
            .unwrap();
        (id, queued() - before)
    };
    for n in 1..=7 {
        hold(n).await;
    }
    // Seven of eight taken: bob's message has the last one and is in his Maildir at once.
    let (free, handed) = submit_bob().await;
    assert_eq!(handed, 0, "queued with a slot free");
    assert!(has(&root, "bob", &free));

    hold(8).await;
    // Every slot taken: queued first (whether the runner delivered it yet does not matter).
    let (_, handed) = submit_bob().await;
    assert_eq!(handed, 1, "not queued with every slot taken");

    // The gate opens: the eight held messages are delivered at intake, never queued.
    let before = queued();
    gate.open.send_replace(true);
    for holder in holders {
        let id = holder.await.unwrap().unwrap();
        assert!(has(&root, "alice", &id));
    }
    assert_eq!(queued(), before);
    // Their slots are free again.
    let (again, handed) = submit_bob().await;
    assert_eq!(handed, 0);
    assert!(has(&root, "bob", &again));

    stop.cancel();
    run.await.unwrap();
}
