//! The in-memory schedule: which message is due when.
//!
//! Only one process can open a sled database, so the spool can keep this index in memory,
//! rebuild it from the metadata at open, and keep it in step with every write. `due()` is then
//! a range scan instead of decoding every record on disk.

use corvid_types::QueueId;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct DueIndex {
    by_time: BTreeSet<(u64, QueueId)>,
    by_id: HashMap<QueueId, u64>,
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
        if let Some(at) = at {
            self.by_id.insert(id.clone(), at);
            self.by_time.insert((at, id.clone()));
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

    /// Ids due at or before `now`, earliest first (ties in id, that is arrival, order).
    pub(crate) fn due(&self, now: u64) -> Vec<QueueId> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The earliest time anything is due.
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
}
