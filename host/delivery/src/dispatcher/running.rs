//! The attempts in progress, and how often the runner looks at the queue.
//!
//! The spool lists every due message, those in progress included (they keep their due time
//! until their attempt records a new one). A pass over that listing is O(listed), and one ran
//! after every attempt's end: with thousands in progress, O(backlog) per message. Now the ids
//! in progress cost one hash lookup each and are never copied, the claims are taken under one
//! lock per pass, and passes are spaced by [`pass_gap`], so their cost per message stays
//! bounded however long the listing is. Attempts that end in between are reaped together.

use corvid_types::QueueId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinSet;

/// The spacing of passes, per message the last pass listed: a listing costs about a
/// microsecond per message (an id copied by the spool, one lookup here), so passes then cost
/// at most a few percent of a core.
const GAP_PER_LISTED: Duration = Duration::from_micros(20);
/// The longest spacing: what a new message waits at most, beyond its due time, for its
/// attempt to start when the queue is long.
const MAX_GAP: Duration = Duration::from_millis(250);

/// How long after a pass that listed `listed` messages the next one may run.
pub(super) fn pass_gap(listed: usize) -> Duration {
    GAP_PER_LISTED
        .saturating_mul(u32::try_from(listed).unwrap_or(u32::MAX))
        .min(MAX_GAP)
}

/// The attempts in progress, so a message is never attempted twice at the same time.
#[derive(Default)]
pub(super) struct Running {
    pub(super) tasks: JoinSet<()>,
    ids: Arc<Mutex<HashSet<QueueId>>>,
}

impl Running {
    /// Claims the messages of `due` that are not in progress, in their order, under one lock.
    /// An id in progress costs one lookup; a claimed one is copied once (the claim keeps it).
    pub(super) fn claim_all(&self, due: Vec<QueueId>) -> Vec<Claim> {
        let mut ids = lock(&self.ids);
        due.into_iter()
            .filter_map(|id| {
                if ids.contains(&id) {
                    return None;
                }
                ids.insert(id.clone());
                Some(Claim {
                    ids: Arc::clone(&self.ids),
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
    ids: Arc<Mutex<HashSet<QueueId>>>,
    id: QueueId,
}

impl Claim {
    pub(super) fn id(&self) -> &QueueId {
        &self.id
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.ids).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a set operation: the set stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<QueueId> {
        names.iter().map(|n| QueueId(n.to_string())).collect()
    }

    fn names(claims: &[Claim]) -> Vec<&str> {
        claims.iter().map(|c| c.id().0.as_str()).collect()
    }

    #[test]
    fn claims_skip_what_is_in_progress_and_end_when_dropped() {
        let running = Running::default();
        let first = running.claim_all(ids(&["a", "b", "a"]));
        assert_eq!(names(&first), ["a", "b"], "in order, each once");
        // A pass listing them again, with a new one: only the new one is claimed.
        let second = running.claim_all(ids(&["a", "b", "c"]));
        assert_eq!(names(&second), ["c"]);
        drop(first);
        let third = running.claim_all(ids(&["a", "b", "c"]));
        assert_eq!(names(&third), ["a", "b"], "c is still in progress");
        assert_eq!(lock(&running.ids).len(), 3);
        drop((second, third));
        assert!(lock(&running.ids).is_empty());
    }

    #[test]
    fn a_long_listing_spaces_the_passes_a_short_one_does_not() {
        assert_eq!(pass_gap(0), Duration::ZERO);
        assert!(pass_gap(10) <= Duration::from_millis(1));
        assert_eq!(pass_gap(5_000), Duration::from_millis(100));
        assert_eq!(pass_gap(1_000_000), MAX_GAP);
        assert_eq!(pass_gap(usize::MAX), MAX_GAP);
    }
}
