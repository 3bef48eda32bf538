//! The queue runner: finds due messages and attempts them, a bounded number at a time.

use crate::attempt::{self, Context};
use corvid_queue::{RetrySchedule, Spool};
use corvid_types::{Directory, QueueId};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Messages attempted at the same time, by default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The longest the runner sleeps without looking at the queue, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    ctx: Arc<Context>,
    concurrency: usize,
    poll_interval: Duration,
}

impl Dispatcher {
    pub fn new(
        spool: Arc<dyn Spool>,
        directory: Arc<Directory>,
        maildir_root: PathBuf,
        schedule: RetrySchedule,
    ) -> Self {
        Dispatcher {
            ctx: Arc::new(Context {
                spool,
                directory,
                maildir_root,
                schedule,
            }),
            concurrency: DEFAULT_CONCURRENCY,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// How many messages may be in delivery at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The longest sleep between two looks at the queue.
    pub fn with_poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Runs until `shutdown` is cancelled, then waits for the attempts in progress so that
    /// their outcomes are recorded. The queue is looked at on start, when the spool signals
    /// new or flushed messages, when an attempt ends, when the next message falls due, and at
    /// least every poll interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut wake = self.ctx.spool.subscribe();
        let mut wake_open = true;
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut running = Running::default();
        tracing::info!(
            concurrency = self.concurrency,
            "delivery dispatcher started"
        );
        while self.start_due(&permits, &mut running, &shutdown).await {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = wake.changed(), if wake_open => wake_open = changed.is_ok(),
                _ = tokio::time::sleep(self.nap()) => {}
                Some(joined) = running.tasks.join_next() => log_panic(joined),
            }
        }
        while let Some(joined) = running.tasks.join_next().await {
            log_panic(joined);
        }
        tracing::info!("delivery dispatcher stopped");
    }

    /// Starts an attempt for every due message not already in progress. Returns false when
    /// shutdown came while waiting for a free slot.
    async fn start_due(
        &self,
        permits: &Arc<Semaphore>,
        running: &mut Running,
        shutdown: &CancellationToken,
    ) -> bool {
        let due = match self.ctx.spool.due(SystemTime::now()) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot list due messages");
                return true;
            }
        };
        for id in due {
            let Some(claim) = running.claim(&id) else {
                continue;
            };
            let permit = tokio::select! {
                p = Arc::clone(permits).acquire_owned() => p,
                _ = shutdown.cancelled() => return false,
            };
            // The semaphore is never closed.
            let Ok(permit) = permit else { return false };
            let ctx = Arc::clone(&self.ctx);
            running.tasks.spawn_blocking(move || {
                let _slot = (permit, claim);
                attempt::process(&ctx, &id);
            });
        }
        true
    }

    /// Until the next message falls due, bounded by the poll interval. A due time in the past
    /// belongs to a message in progress; its end wakes the runner anyway.
    fn nap(&self) -> Duration {
        let now = SystemTime::now();
        match self.ctx.spool.next_wakeup() {
            Some(at) if at > now => at
                .duration_since(now)
                .unwrap_or(self.poll_interval)
                .min(self.poll_interval),
            _ => self.poll_interval,
        }
    }
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "delivery attempt panicked");
    }
}

/// The attempts in progress, so a message is never attempted twice at the same time.
#[derive(Default)]
struct Running {
    tasks: JoinSet<()>,
    ids: Arc<Mutex<HashSet<QueueId>>>,
}

impl Running {
    fn claim(&self, id: &QueueId) -> Option<Claim> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.insert(id.clone()).then(|| Claim {
            ids: Arc::clone(&self.ids),
            id: id.clone(),
        })
    }
}

/// Marks a message as in progress until dropped (also when the attempt panics).
struct Claim {
    ids: Arc<Mutex<HashSet<QueueId>>>,
    id: QueueId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.remove(&self.id);
    }
}
