//! The spool's periodic chores, run by the server: held mail past `queue.quarantine_max_age`
//! is bounced or discarded, and expired kv entries are removed a bounded number at a time.

use crate::SledSpool;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often `corvid serve` runs [`SledSpool::maintain_once`].
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

/// Most kv entries one pass looks at: the sweep holds the kv write lock while it works, so a
/// pass must stay short (a few milliseconds); a large store is covered over several passes.
pub const KV_SWEEP_BUDGET: usize = 5_000;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub held_expired: usize,
    pub kv_removed: usize,
}

impl SledSpool {
    /// Runs [`SledSpool::maintain_once`] every `every` until `stop` completes. A pass in
    /// progress is finished, not cut (a bounce half done would send its DSN twice).
    pub async fn maintain(self: Arc<Self>, every: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.maintain_once(SystemTime::now()).await;
        }
    }

    /// One pass at `now`.
    pub async fn maintain_once(&self, now: SystemTime) -> Maintenance {
        let held_expired = self.expire_held(now).await;
        let kv = self.kv();
        let swept = tokio::task::spawn_blocking(move || kv.sweep_some(KV_SWEEP_BUDGET)).await;
        let kv_removed = match swept {
            Ok(Ok((n, _))) => n,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "kv sweep failed");
                0
            }
            Err(e) => {
                tracing::error!(error = %e, "kv sweep task failed");
                0
            }
        };
        if kv_removed > 0 {
            tracing::debug!(removed = kv_removed, "expired kv entries removed");
        }
        Maintenance {
            held_expired,
            kv_removed,
        }
    }
}
