//! The in-memory schedule: which message is due when, and which a runner has claimed.
//!
//! Only one process can open a sled database, so the spool can keep this index in memory,
//! rebuild it from the metadata at open, and keep it in step with every write. `due()` is then
//! a range scan instead of decoding every record on disk.
//!
//! A runner takes due messages with [`DueIndex::take`]: the claimed ones leave the time order
//! until [`DueIndex::release`], so a pass never walks past the messages in progress and costs
//! O(taken x log n) whatever the backlog. Claims live in memory only: after a restart nothing
//! is in progress, and the index rebuilt at open has no claims.

use corvid_types::QueueId;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How long a message whose attempt recorded nothing waits before the next one (in memory
/// only: after a restart it is due at its recorded time). A minute, like the first retry a
/// failed connection gets, and well below any retry schedule's later steps.
pub(crate) const UNRECORDED_RETRY_SECS: u64 = 60;

#[derive(Debug, Default)]
pub(crate) struct DueIndex {
    /// The scheduled messages no runner has claimed, by due time (ties in id order).
    by_time: BTreeSet<(u64, QueueId)>,
    /// Every scheduled message's due time, claimed or not.
    by_id: HashMap<QueueId, u64>,
    /// Messages a runner took and has not released, and whether anything was recorded for
    /// them since (a reschedule, hold, removal, ETRN). Such a change touches only `by_id`;
    /// the release puts the message back in time order if it is still scheduled.
    claimed: HashMap<QueueId, bool>,
    /// Held messages and when they were held: an update from delivery (which never holds)
    /// must not undo a hold made meanwhile, and expiry needs no scan of the queue.
    held: HashMap<QueueId, u64>,
    /// `by_id.len()`, published for flow control: the server reads it on every MAIL
    /// without taking the index lock.
    scheduled: Arc<AtomicU64>,
}

impl DueIndex {
    /// Records that `id` is held since `since`, or not held when `None`.
    pub(crate) fn set_held(&mut self, id: &QueueId, since: Option<u64>) {
        match since {
            Some(t) => self.held.insert(id.clone(), t),
            None => self.held.remove(id),
        };
    }

    /// When `id` was held, if it is.
    pub(crate) fn held_since(&self, id: &QueueId) -> Option<u64> {
        self.held.get(id).copied()
    }

    /// Held messages held at or before `cutoff`.
    pub(crate) fn held_before(&self, cutoff: u64) -> Vec<QueueId> {
        let mut ids: Vec<QueueId> = self
            .held
            .iter()
            .filter(|(_, &t)| t <= cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Records that `id` is next due at `at`, or not at all when `None`.
    pub(crate) fn set(&mut self, id: &QueueId, at: Option<u64>) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_time.remove(&(old, id.clone()));
        }
        if let Some(recorded) = self.claimed.get_mut(id) {
            *recorded = true;
        }
        if let Some(at) = at {
            self.by_id.insert(id.clone(), at);
            if !self.claimed.contains_key(id) {
                self.by_time.insert((at, id.clone()));
            }
        }
        self.scheduled
            .store(self.by_id.len() as u64, Ordering::Relaxed);
    }

    /// A live count of the messages with a delivery still to come (pending recipients, not
    /// held): the queue's backlog.
    pub(crate) fn backlog_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.scheduled)
    }

    /// How many messages are held, and how many are scheduled (a recipient or a DSN still to
    /// deliver, not held): [`crate::SledSpool::depth`] without a scan of the records.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.held.len(), self.by_id.len())
    }

    /// Ids due at or before `now`, claimed or not, earliest first (ties in id, that is
    /// arrival, order).
    pub(crate) fn due(&self, now: u64) -> Vec<QueueId> {
        let mut due: Vec<(u64, &QueueId)> = self
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(at, id)| (*at, id))
            .collect();
        if !self.claimed.is_empty() {
            let claimed = self
                .claimed
                .keys()
                .filter_map(|id| self.by_id.get(id).map(|&at| (at, id)));
            due.extend(claimed.filter(|(at, _)| *at <= now));
            due.sort_unstable();
        }
        due.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Claims up to `limit` unclaimed ids due at or before `now`, earliest first: each is
    /// taken off the time order (O(log n)) and copied once.
    pub(crate) fn take(&mut self, now: u64, limit: usize) -> Vec<QueueId> {
        let mut taken = Vec::new();
        while taken.len() < limit && self.by_time.first().is_some_and(|(at, _)| *at <= now) {
            let Some((_, id)) = self.by_time.pop_first() else {
                break;
            };
            self.claimed.insert(id.clone(), false);
            taken.push(id);
        }
        taken
    }

    /// Ends the claim on `id`: if it is still scheduled, it is back in time order at the due
    /// time its attempt recorded (or any change made meanwhile). An attempt that recorded
    /// nothing (its record failed to write, its content could not be read) leaves the old,
    /// past due time: the message is then due again `UNRECORDED_RETRY_SECS` after `now`,
    /// not at once, so that a storage failure does not turn into a loop re-delivering it.
    /// Nothing for an unclaimed id.
    pub(crate) fn release(&mut self, id: &QueueId, now: u64) {
        let Some(recorded) = self.claimed.remove(id) else {
            return;
        };
        if let Some(at) = self.by_id.get_mut(id) {
            if !recorded {
                *at = (*at).max(now.saturating_add(UNRECORDED_RETRY_SECS));
            }
            self.by_time.insert((*at, id.clone()));
        }
    }

    /// The earliest time an unclaimed message is due: a claimed one is not waited for, its
    /// runner learns when its attempt ends.
    pub(crate) fn earliest(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> QueueId {
        QueueId(s.into())
    }

    #[test]
    fn reschedules_and_removes() {
        let mut ix = DueIndex::default();
        ix.set(&id("b"), Some(10));
        ix.set(&id("a"), Some(10));
        ix.set(&id("c"), Some(30));
        assert_eq!(ix.due(10), [id("a"), id("b")]);
        ix.set(&id("a"), Some(40));
        assert_eq!(ix.due(35), [id("b"), id("c")]);
        ix.set(&id("b"), None);
        assert_eq!(ix.due(100), [id("c"), id("a")]);
        assert_eq!(ix.earliest(), Some(30));
        assert_eq!(ix.backlog_counter().load(Ordering::Relaxed), 2);
    }

    #[test]
    fn takes_in_due_order_and_never_twice() {
        let mut ix = DueIndex::default();
        for (name, at) in [("c", 5), ("a", 10), ("b", 10), ("d", 50)] {
            ix.set(&id(name), Some(at));
        }
        assert_eq!(ix.take(10, 2), [id("c"), id("a")]);
        assert_eq!(ix.take(10, 5), [id("b")], "only what is unclaimed and due");
        assert!(ix.take(100, 0).is_empty());
        assert!(ix.take(10, 5).is_empty(), "claims are not handed out again");
        // The listing still shows the claimed messages; the wake-up time does not wait for them.
        assert_eq!(ix.due(10), [id("c"), id("a"), id("b")]);
        assert_eq!(ix.earliest(), Some(50));
        assert_eq!(ix.take(100, 5), [id("d")]);
        assert_eq!(ix.earliest(), None);
        assert_eq!(ix.counts(), (0, 4), "claimed messages are still scheduled");
    }

    #[test]
    fn a_release_restores_the_state_recorded_meanwhile() {
        let mut ix = DueIndex::default();
        for name in ["a", "b", "c", "d"] {
            ix.set(&id(name), Some(10));
        }
        assert_eq!(ix.take(10, 4).len(), 4);
        ix.set(&id("a"), Some(300)); // retried later
        ix.set(&id("b"), None); // delivered and removed
        ix.set(&id("c"), None); // held
        ix.set_held(&id("c"), Some(10));
        // d's attempt recorded nothing (its record failed): due again a minute after the
        // release, not at once.
        for name in ["a", "b", "c", "d"] {
            ix.release(&id(name), 20);
        }
        ix.release(&id("a"), 20); // a second release does nothing
        assert!(ix.take(79, 10).is_empty(), "no immediate retry of d");
        assert_eq!(ix.take(80, 10), [id("d")]);
        assert_eq!(ix.take(300, 10), [id("a")]);
        assert!(
            ix.take(u64::MAX, 10).is_empty(),
            "removed and held never come back"
        );
        assert_eq!(ix.due(u64::MAX), [id("d"), id("a")]);
        // Both recorded something this time (a's reschedule to the same time counts).
        ix.set(&id("d"), Some(10));
        ix.set(&id("a"), Some(300));
        ix.release(&id("d"), 400);
        ix.release(&id("a"), 400);
        assert_eq!(ix.due(u64::MAX), [id("d"), id("a")]);
        assert_eq!(ix.earliest(), Some(10));
    }
}
