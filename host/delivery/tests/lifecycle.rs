//! The delivery policy's lifecycle stages (`deferred`, `bounced`, `delivered`) as the runner
//! applies them: a moved retry, a give-up, a suppressed or annotated DSN, and the `delivered`
//! notice after the outcome is on record. Local delivery, a real sled spool, a scripted policy
//! and an intake that keeps the DSNs.

use async_trait::async_trait;
use corvid_delivery::Dispatcher;
use corvid_queue::{unix_secs, RecipientStatus, RetrySchedule, SledSpool, Spool};
use corvid_types::{
    BounceAction, Deferral, DeliveryInfo, DeliveryPolicy, Envelope, Intake, IntakeError, QueueId,
    Stage, SubmitOptions,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use support::{directory, envelope, wait_until, LOCAL};
use tokio_util::sync::CancellationToken;

mod support;

const BODY: &[u8] = b"Subject: test\r\n\r\nhello\r\n";

/// What the scripted policy answers, and what it was told.
#[derive(Default)]
struct Script {
    deferral: Option<Deferral>,
    bounce: Option<BounceAction>,
    deferred: Mutex<Vec<String>>,
    bounced: Mutex<Vec<String>>,
    delivered: Mutex<Vec<String>>,
}

#[async_trait]
impl DeliveryPolicy for Script {
    fn observes(&self, stage: Stage) -> bool {
        matches!(stage, Stage::Deferred | Stage::Bounced | Stage::Delivered)
    }
    async fn deferred(&self, info: &DeliveryInfo) -> Deferral {
        self.deferred.lock().unwrap().push(info.reason.clone());
        self.deferral.clone().unwrap_or(Deferral::Continue)
    }
    async fn bounced(&self, info: &DeliveryInfo) -> BounceAction {
        self.bounced.lock().unwrap().push(info.reason.clone());
        self.bounce.clone().unwrap_or(BounceAction::Continue)
    }
    async fn delivered(&self, info: &DeliveryInfo) {
        self.delivered
            .lock()
            .unwrap()
            .push(info.recipient.to_string());
    }
}

/// Keeps the DSNs instead of queueing them.
#[derive(Default)]
struct Dsns {
    sent: Mutex<Vec<Vec<u8>>>,
    ids: AtomicUsize,
    /// Refuse every DSN, as a failing queue store does.
    refuse: AtomicBool,
    refused: AtomicUsize,
}

#[async_trait]
impl Intake for Dsns {
    fn next_id(&self) -> QueueId {
        QueueId(format!("dsn{}", self.ids.fetch_add(1, Ordering::Relaxed)))
    }
    async fn submit_with(
        &self,
        _id: &QueueId,
        _envelope: &Envelope,
        content: &[u8],
        _options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        if self.refuse.load(Ordering::Relaxed) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(IntakeError::Storage("disk full".into()));
        }
        self.sent.lock().unwrap().push(content.to_vec());
        Ok(())
    }
}

async fn submit(spool: &SledSpool, rcpt: &str) -> QueueId {
    let id = spool.next_id();
    let envelope = envelope(Some("bob@sender.test"), &[&format!("{rcpt}@{LOCAL}")]);
    spool.submit(&id, &envelope, BODY).await.unwrap();
    id
}

/// Makes local delivery fail transiently: a file where the domain's directory belongs.
fn block_domain(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join(LOCAL), b"").unwrap();
}

/// Runs the dispatcher with `script` until `done` holds.
async fn run(
    spool: Arc<SledSpool>,
    root: &Path,
    script: Arc<Script>,
    dsns: Arc<Dsns>,
    what: &str,
    done: impl FnMut() -> bool,
) {
    let token = CancellationToken::new();
    let dispatcher = Dispatcher::new(spool, directory(), root.into(), RetrySchedule::default())
        .with_policy(script)
        .with_intake(dsns)
        .with_poll_interval(Duration::from_millis(100));
    let handle = tokio::spawn(dispatcher.run(token.clone()));
    wait_until(what, 5, done).await;
    token.cancel();
    handle.await.unwrap();
}

fn setup() -> (tempfile::TempDir, Arc<SledSpool>, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let spool = SledSpool::open(&tmp.path().join("spool")).unwrap();
    (tmp, spool, root)
}

#[tokio::test]
async fn deferred_may_move_the_retry() {
    let (_tmp, spool, root) = setup();
    block_domain(&root);
    let id = submit(&spool, "alice").await;
    let script = Arc::new(Script {
        deferral: Some(Deferral::RetryAfter(Duration::from_secs(42))),
        ..Script::default()
    });
    let s = Arc::clone(&spool);
    run(
        spool.clone(),
        &root,
        script.clone(),
        Arc::default(),
        "attempt",
        || s.get(&id).unwrap().unwrap().recipients[0].attempts > 0,
    )
    .await;
    let r = &spool.get(&id).unwrap().unwrap().recipients[0];
    assert_eq!(r.status, RecipientStatus::Pending);
    let delay = r.next_attempt - unix_secs(SystemTime::now());
    assert!((40..=42).contains(&delay), "retry in {delay}s");
    assert_eq!(script.deferred.lock().unwrap().len(), 1);
    assert!(script.bounced.lock().unwrap().is_empty());
}

#[tokio::test]
async fn deferred_may_give_up_and_then_bounced_is_asked() {
    let (_tmp, spool, root) = setup();
    block_domain(&root);
    submit(&spool, "alice").await;
    let script = Arc::new(Script {
        deferral: Some(Deferral::Bounce),
        ..Script::default()
    });
    let dsns = Arc::new(Dsns::default());
    let d = Arc::clone(&dsns);
    run(spool.clone(), &root, script.clone(), dsns, "a DSN", || {
        !d.sent.lock().unwrap().is_empty()
    })
    .await;
    let bounced = script.bounced.lock().unwrap();
    assert_eq!(bounced.len(), 1);
    assert!(bounced[0].starts_with("4.3.0"), "{bounced:?}");
    let sent = d.sent.lock().unwrap();
    let text = String::from_utf8_lossy(&sent[0]);
    assert!(text.contains("Action: failed"), "{text}");
}

#[tokio::test]
async fn bounced_may_suppress_the_dsn() {
    let (_tmp, spool, root) = setup();
    let id = submit(&spool, "nobody").await;
    let script = Arc::new(Script {
        bounce: Some(BounceAction::Suppress),
        ..Script::default()
    });
    let dsns = Arc::new(Dsns::default());
    let s = Arc::clone(&spool);
    run(
        spool.clone(),
        &root,
        script.clone(),
        dsns.clone(),
        "done",
        || s.get(&id).unwrap().is_none(),
    )
    .await;
    assert_eq!(script.bounced.lock().unwrap().len(), 1);
    assert!(dsns.sent.lock().unwrap().is_empty(), "suppressed");
}

#[tokio::test]
async fn bounced_may_annotate_the_dsn() {
    let (_tmp, spool, root) = setup();
    submit(&spool, "nobody").await;
    let script = Arc::new(Script {
        bounce: Some(BounceAction::Annotate("ask the help desk".into())),
        ..Script::default()
    });
    let dsns = Arc::new(Dsns::default());
    let d = Arc::clone(&dsns);
    run(spool.clone(), &root, script, dsns, "a DSN", || {
        !d.sent.lock().unwrap().is_empty()
    })
    .await;
    let sent = d.sent.lock().unwrap();
    let text = String::from_utf8_lossy(&sent[0]);
    assert!(text.contains("ask the help desk"), "{text}");
    assert!(text.contains("5.1.1"), "{text}");
}

#[tokio::test]
async fn delivered_is_told_once_on_record() {
    let (_tmp, spool, root) = setup();
    let id = submit(&spool, "alice").await;
    let script = Arc::new(Script::default());
    let s = Arc::clone(&spool);
    let t = Arc::clone(&script);
    run(
        spool.clone(),
        &root,
        script.clone(),
        Arc::default(),
        "told",
        || s.get(&id).unwrap().is_none() && !t.delivered.lock().unwrap().is_empty(),
    )
    .await;
    assert_eq!(
        *script.delivered.lock().unwrap(),
        vec![format!("alice@{LOCAL}")]
    );
    assert!(script.deferred.lock().unwrap().is_empty());
    assert!(script.bounced.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_dsn_the_intake_refuses_keeps_the_message_until_it_is_queued() {
    let (_tmp, spool, root) = setup();
    let id = submit(&spool, "nobody").await;
    let dsns = Arc::new(Dsns::default());
    dsns.refuse.store(true, Ordering::Relaxed);
    let d = Arc::clone(&dsns);
    run(
        spool.clone(),
        &root,
        Arc::default(),
        dsns.clone(),
        "a refused DSN",
        || d.refused.load(Ordering::Relaxed) > 0,
    )
    .await;
    // Not removed with its report unsent: kept, due again for the report alone.
    let msg = spool.get(&id).unwrap().expect("the message stays queued");
    assert_eq!(msg.recipients[0].status, RecipientStatus::Failed);
    assert!(!msg.recipients[0].reported);
    let retry = msg.dsn_retry_at.expect("a retry time for the DSN");
    assert!(retry > unix_secs(SystemTime::now()) + 200, "{retry}");

    // The retry comes (moved to now here) and the intake takes it: sent once, then removed.
    let mut due_now = msg.clone();
    due_now.dsn_retry_at = Some(unix_secs(SystemTime::now()));
    spool.update(&due_now).unwrap();
    dsns.refuse.store(false, Ordering::Relaxed);
    let s = Arc::clone(&spool);
    run(
        spool.clone(),
        &root,
        Arc::default(),
        dsns.clone(),
        "removed",
        || s.get(&id).unwrap().is_none(),
    )
    .await;
    let sent = dsns.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert!(String::from_utf8_lossy(&sent[0]).contains("Action: failed"));
}
