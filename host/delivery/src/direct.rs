//! Local delivery at intake (`delivery.local_at_intake`): a message whose recipients are all
//! routed to local mailboxes is delivered into its Maildirs before the server answers the end
//! of DATA, instead of being written into the queue, read back and removed again. The
//! Maildir files are then the durable copy: each is fdatasynced and its `new/` directory
//! fsynced before [`Intake::submit_with`] returns, so the 250 still follows stable storage
//! (RFC 5321 6.1).
//!
//! It is the queue's first attempt, run earlier, through the same steps as
//! [`crate::attempt`]: route (the policy's `route` stage included) → deliver → decide (the
//! `deferred`/`bounced` stages) → notify (DSNs, `NOTIFY=SUCCESS` ones included) → record →
//! tell (`delivered`). What the attempt leaves pending (a Maildir that failed, a policy's
//! retry) is written into the queue with the recipients' states, and the queue takes over; a
//! message nothing is left of never touches the queue. Anything else goes into the queue
//! first, as before: quarantined messages, a recipient routed anywhere but a local mailbox
//! (the route stage is then asked again by the queue's attempt, as at every attempt), and any
//! message arriving while the runner is not started.
//!
//! At least once, as for the queue, with a wider window for duplicates: a crash (or a client
//! that stops waiting) anywhere between the first Maildir sync and the 250 makes the client
//! send the message again (the window RFC 1047 describes; queued first it is only the group
//! commit), and the mailboxes get it twice. A failure to queue what is left pending, or a
//! DSN that cannot be queued, answers 451: the recipients already delivered get the retry
//! again (logged), and its DSNs and lifecycle hooks run again. So that shutdown does not do
//! that, [`DirectHandle::close`] stops new attempts and waits for running ones before the
//! queue closes; a message finding every slot taken, or with more than [`MAX_RECIPIENTS`]
//! recipients, is queued first.

use crate::attempt::{deliver_decide_notify, mark_routes, route_all, Pipeline};
use crate::content::LazyContent;
use crate::fate;
use crate::route::NextHop;
use async_trait::async_trait;
use corvid_queue::{unix_secs, QueuedMessage};
use corvid_types::{Envelope, Intake, IntakeError, QueueId, SubmitOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// More envelope recipients than this: queued first. Each is delivered (and its lifecycle
/// hooks asked) one after another before the 250, which a long list would hold up.
const MAX_RECIPIENTS: usize = 16;

/// Where the dispatcher puts its pipeline once built; until then, and once closed, every
/// message is queued.
#[derive(Clone, Default)]
pub struct DirectHandle(Arc<Shared>);

#[derive(Default)]
struct Shared {
    direct: OnceLock<Direct>,
    closed: AtomicBool,
    /// The attempts running, awaited by [`DirectHandle::close`].
    running: TaskTracker,
}

impl DirectHandle {
    pub(crate) fn set(&self, pipeline: &Arc<Pipeline>, slots: usize) {
        let direct = Direct {
            pipeline: Arc::clone(pipeline),
            // Maildir writes at intake, apart from the queue runner's local permits so that
            // neither starves the other. A message finding none free is queued first: a slow
            // or hung mail file system must not hold every session before its 250.
            slots: Arc::new(Semaphore::new(slots.max(1))),
        };
        // Set once, by the dispatcher that owns the handle.
        let _ = self.0.direct.set(direct);
    }

    /// Stops delivering at intake (the next messages are queued, or refused by a closed
    /// queue before anything is written) and waits up to `grace` for the attempts running,
    /// so that what they leave pending is queued before the queue closes. Returns how many
    /// were still running.
    pub async fn close(&self, grace: Duration) -> usize {
        self.0.closed.store(true, Ordering::Release);
        self.0.running.close();
        let _ = tokio::time::timeout(grace, self.0.running.wait()).await;
        self.0.running.len()
    }
}

struct Direct {
    pipeline: Arc<Pipeline>,
    slots: Arc<Semaphore>,
}

/// An [`Intake`] that delivers local-only messages at once and queues the rest through
/// `queue`.
pub struct DirectIntake {
    queue: Arc<dyn Intake>,
    handle: DirectHandle,
}

impl DirectIntake {
    /// `queue` takes what is not delivered here; give `handle` to the dispatcher
    /// ([`crate::Dispatcher::with_direct`]).
    pub fn new(queue: Arc<dyn Intake>, handle: DirectHandle) -> Self {
        DirectIntake { queue, handle }
    }
}

#[async_trait]
impl Intake for DirectIntake {
    fn next_id(&self) -> QueueId {
        self.queue.next_id()
    }

    async fn submit_with(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
        options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        self.submit_owned(id, envelope, Arc::new(content.to_vec()), options)
            .await
    }

    async fn submit_owned(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: Arc<Vec<u8>>,
        options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        let shared = &self.handle.0;
        let direct = shared
            .direct
            .get()
            .filter(|_| options.hold.is_none() && !shared.closed.load(Ordering::Acquire));
        if let Some(direct) = direct {
            let span = tracing::info_span!("delivery", queue_id = %id);
            let attempt = deliver_now(direct, id, envelope, &content, options);
            let attempt = shared.running.track_future(attempt);
            if let Some(done) = tracing::Instrument::instrument(attempt, span).await {
                return done;
            }
        }
        self.queue
            .submit_with(id, envelope, &content, options)
            .await
    }

    fn backlog(&self) -> Option<u64> {
        self.queue.backlog()
    }
}

/// The attempt at intake; `None` when the message is not for local mailboxes only (nothing
/// was delivered: the caller queues it).
async fn deliver_now(
    direct: &Direct,
    id: &QueueId,
    envelope: &Envelope,
    content: &Arc<Vec<u8>>,
    options: &SubmitOptions,
) -> Option<Result<(), IntakeError>> {
    let p = &direct.pipeline;
    let n = envelope.recipients.len();
    if n == 0 || n > MAX_RECIPIENTS {
        return None;
    }
    // The static routes say at no cost whether this can be local: mail for a next hop is
    // queued without asking a `route` plugin here (the queue's attempt asks it). A plugin
    // may still send a local recipient elsewhere, below.
    if !envelope
        .recipients
        .iter()
        .all(|r| p.router.route(&r.address).hop == NextHop::Local)
    {
        return None;
    }
    let permit = Arc::clone(&direct.slots).try_acquire_owned().ok()?;
    let now = unix_secs(SystemTime::now());
    let mut msg = QueuedMessage::new(id.clone(), envelope.clone(), content.len() as u64, now);
    msg.trusted_client = options.trusted_client;
    msg.is_report = corvid_queue::dsn::is_delivery_report(content);
    let all: Vec<usize> = (0..msg.recipients.len()).collect();
    let groups = route_all(p.policy.as_ref(), &p.router, &msg, &all).await;
    if groups.iter().any(|(d, _)| d.hop != NextHop::Local) {
        // A `route` plugin sent a local recipient elsewhere: the queue's attempt asks it
        // again (route decisions are per attempt).
        return None;
    }
    mark_routes(&mut msg, &groups);
    let content = Arc::new(LazyContent::ready(
        Arc::clone(&p.spool),
        id.clone(),
        Arc::clone(content),
        p.max_hops,
    ));
    let fates = deliver_decide_notify(p, &mut msg, groups, &content, permit, now).await;
    Some(record(p, &msg, &content).await.inspect(|()| {
        fate::tell(p.policy.as_ref(), fates);
    }))
}

/// Queues what the attempt left pending, with its recipients' states; nothing when every
/// recipient is decided (delivered, or failed with its DSN queued).
async fn record(
    p: &Pipeline,
    msg: &QueuedMessage,
    content: &LazyContent,
) -> Result<(), IntakeError> {
    if !msg.has_pending() {
        tracing::debug!(queue_id = %msg.id, "delivered at intake, never queued");
        return Ok(());
    }
    let body = content.get().await.unwrap_or_default();
    let stored = p.spool.insert_attempted(msg, &body).await;
    if let Err(e) = &stored {
        let delivered = msg
            .recipients
            .iter()
            .filter(|r| r.status == corvid_queue::RecipientStatus::Delivered)
            .count();
        tracing::warn!(queue_id = %msg.id, error = %e, delivered,
            "cannot queue the recipients left after delivery at intake; the client is told to retry, so the ones delivered get the message again");
    }
    stored
}
