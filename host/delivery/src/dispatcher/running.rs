//! The attempts in progress.
//!
//! The runner takes due messages from the spool with [`Spool::take_due`], which claims them:
//! the spool hands out each message once until its claim is released, so a pass costs
//! O(taken + log n) however long the queue, and passes no longer need spacing (the listing of
//! every due message, in progress included, made each pass O(backlog)). A [`Claim`] ends both
//! the runner's own mark and the spool's claim when its attempt ends (also when it panics or is
//! abandoned at shutdown). The runner's own set of ids stays as a guard for spools that keep
//! no claims (the trait's default lists every due message): one hash lookup per id.

use corvid_queue::Spool;
use corvid_types::QueueId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::JoinSet;

/// The attempts in progress, so a message is never attempted twice at the same time.
pub(super) struct Running {
    pub(super) tasks: JoinSet<()>,
    shared: Arc<Shared>,
}

struct Shared {
    ids: Mutex<HashSet<QueueId>>,
    spool: Arc<dyn Spool>,
}

impl Running {
    pub(super) fn new(spool: Arc<dyn Spool>) -> Self {
        Running {
            tasks: JoinSet::new(),
            shared: Arc::new(Shared {
                ids: Mutex::default(),
                spool,
            }),
        }
    }

    /// Marks the messages of `taken` (claimed from the spool) that are not in progress, in
    /// their order, under one lock. An id already in progress comes only from a spool that
    /// keeps no claims: it is skipped, and its running attempt keeps the claim.
    pub(super) fn claim_all(&self, taken: Vec<QueueId>) -> Vec<Claim> {
        let mut ids = lock(&self.shared.ids);
        taken
            .into_iter()
            .filter_map(|id| {
                if ids.contains(&id) {
                    return None;
                }
                ids.insert(id.clone());
                Some(Claim {
                    shared: Arc::clone(&self.shared),
                    id,
                })
            })
            .collect()
    }

    /// Collects the attempts that ended since the last look, without waiting.
    pub(super) fn reap(&mut self) {
        while let Some(joined) = self.tasks.try_join_next() {
            log_panic(joined);
        }
    }
}

pub(super) fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "delivery attempt panicked");
    }
}

/// Marks a message as in progress until dropped (also when the attempt panics).
pub(super) struct Claim {
    shared: Arc<Shared>,
    id: QueueId,
}

impl Claim {
    pub(super) fn id(&self) -> &QueueId {
        &self.id
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // The runner's mark goes first: once the spool hands the message out again, it must
        // not be skipped as in progress (it would stay claimed and never be attempted).
        lock(&self.shared.ids).remove(&self.id);
        self.shared.spool.release_claim(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a set operation: the set stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_queue::SledSpool;
    use corvid_types::{Address, Envelope, Intake, RcptParams, Recipient};
    use std::time::{Duration, SystemTime};

    fn ids(names: &[&str]) -> Vec<QueueId> {
        names.iter().map(|n| QueueId(n.to_string())).collect()
    }

    fn names(claims: &[Claim]) -> Vec<&str> {
        claims.iter().map(|c| c.id().0.as_str()).collect()
    }

    fn soon() -> SystemTime {
        SystemTime::now() + Duration::from_secs(5)
    }

    #[test]
    fn claims_skip_what_is_in_progress_and_end_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let running = Running::new(SledSpool::open(dir.path()).unwrap());
        // As from a spool that keeps no claims: every due id, in progress or not.
        let first = running.claim_all(ids(&["a", "b", "a"]));
        assert_eq!(names(&first), ["a", "b"], "in order, each once");
        let second = running.claim_all(ids(&["a", "b", "c"]));
        assert_eq!(names(&second), ["c"]);
        drop(first);
        let third = running.claim_all(ids(&["a", "b", "c"]));
        assert_eq!(names(&third), ["a", "b"], "c is still in progress");
        assert_eq!(lock(&running.shared.ids).len(), 3);
        drop((second, third));
        assert!(lock(&running.shared.ids).is_empty());
    }

    #[tokio::test]
    async fn the_end_of_an_attempt_releases_the_spools_claim() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SledSpool::open(dir.path()).unwrap();
        let id = spool.next_id();
        let envelope = Envelope {
            recipients: vec![Recipient {
                address: Address::new("a", "x.test"),
                params: RcptParams::default(),
            }],
            ..Envelope::default()
        };
        spool.submit(&id, &envelope, b"x\r\n").await.unwrap();
        let running = Running::new(spool.clone());
        let claims = running.claim_all(spool.take_due(soon(), 8).unwrap());
        assert_eq!(names(&claims), [id.0.as_str()]);
        assert!(spool.take_due(soon(), 8).unwrap().is_empty(), "in progress");
        drop(claims);
        // Its attempt recorded nothing new (say the record failed): due again a minute
        // later (not at once: no loop re-delivering it), and not skipped as in progress.
        assert!(
            spool.take_due(soon(), 8).unwrap().is_empty(),
            "no retry at once"
        );
        let minute = SystemTime::now() + Duration::from_secs(61);
        let again = running.claim_all(spool.take_due(minute, 8).unwrap());
        assert_eq!(names(&again), [id.0.as_str()]);
    }
}
