//! Sessions per destination: a cap on how many are in use at once, and idle sessions kept a
//! short while so the next message to the same destination reuses the connection.
//!
//! The cap counts sessions in use; an idle session waiting for reuse does not hold a slot (it
//! is closed after `reuse_time`), so a burst can briefly have `limit` busy plus a few idle
//! connections. The per-destination slot is taken *before* one of the shared remote permits
//! (see `remote.rs`), so messages queued behind a slow destination wait here without holding
//! a permit other destinations could use (Postfix's per-destination concurrency limit).
//!
//! A destination's entry lives while someone uses or waits for it, or an idle session is
//! kept; entries with none of these are pruned when the map has grown to twice its size after
//! the last pruning, so the map stays bounded by the destinations in use.

use crate::client::Session;
use crate::route::Destination;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Idle sessions kept per destination at most.
const MAX_IDLE: usize = 4;
/// The map is never pruned below this many entries (pruning is a walk over all of them).
const MIN_PRUNE: usize = 256;

pub(crate) struct Pool {
    limit: usize,
    reuse_time: Duration,
    max_messages: usize,
    slots: Mutex<Slots>,
}

struct Slots {
    map: HashMap<Destination, Arc<Slot>>,
    /// Prune when the map reaches this size.
    prune_at: usize,
}

struct Slot {
    sem: Arc<Semaphore>,
    idle: Mutex<Vec<(Session, Instant)>>,
}

/// The right to use one session to a destination, with an idle session when there was one.
pub(crate) struct Lease {
    _permit: Option<OwnedSemaphorePermit>,
    pub(crate) idle: Option<Session>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a single push, pop or retain: the data stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    pub(crate) fn new(limit: usize, reuse_time: Duration, max_messages: usize) -> Arc<Pool> {
        Arc::new(Pool {
            limit: limit.max(1),
            reuse_time,
            max_messages: max_messages.max(1),
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                prune_at: MIN_PRUNE,
            }),
        })
    }

    fn slot(&self, dest: &Destination) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        if slots.map.len() >= slots.prune_at && !slots.map.contains_key(dest) {
            let limit = self.limit;
            // In use: someone holds the entry (waiting, or an idle session's expiry timer), a
            // lease holds one of its permits, or an idle session is parked in it.
            slots.map.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.sem.available_permits() < limit
                    || !lock(&s.idle).is_empty()
            });
            slots.prune_at = (slots.map.len() * 2).max(MIN_PRUNE);
        }
        let slot = slots.map.entry(dest.clone()).or_insert_with(|| {
            Arc::new(Slot {
                sem: Arc::new(Semaphore::new(self.limit)),
                idle: Mutex::new(Vec::new()),
            })
        });
        Arc::clone(slot)
    }

    /// Destinations remembered now (for tests of the pruning).
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        lock(&self.slots).map.len()
    }

    /// Waits for a free slot for `dest`; hands over the most recent idle session, if any.
    pub(crate) async fn acquire(&self, dest: &Destination) -> Lease {
        let slot = self.slot(dest);
        // The semaphore is never closed; were it, the lease would simply not count.
        let permit = Arc::clone(&slot.sem).acquire_owned().await.ok();
        let (found, stale) = {
            let mut idle = lock(&slot.idle);
            let now = Instant::now();
            let mut stale = Vec::new();
            let mut found = None;
            while let Some((s, since)) = idle.pop() {
                if now.duration_since(since) < self.reuse_time {
                    found = Some(s);
                    break;
                }
                stale.push(s);
            }
            (found, stale)
        };
        close_all(stale);
        Lease {
            _permit: permit,
            idle: found,
        }
    }

    /// Gives a session back after a transaction: kept for reuse, or closed.
    pub(crate) fn release(self: &Arc<Self>, dest: &Destination, session: Session) {
        if self.reuse_time.is_zero() || session.messages >= self.max_messages {
            close_all(vec![session]);
            return;
        }
        let slot = self.slot(dest);
        let overflow = {
            let mut idle = lock(&slot.idle);
            idle.push((session, Instant::now()));
            let extra = idle.len().saturating_sub(MAX_IDLE);
            idle.drain(..extra).map(|(s, _)| s).collect::<Vec<_>>()
        };
        close_all(overflow);
        let reuse_time = self.reuse_time;
        tokio::spawn(async move {
            tokio::time::sleep(reuse_time).await;
            let expired = {
                let mut idle = lock(&slot.idle);
                let now = Instant::now();
                let (old, keep): (Vec<_>, Vec<_>) = idle
                    .drain(..)
                    .partition(|(_, since)| now.duration_since(*since) >= reuse_time);
                *idle = keep;
                old.into_iter().map(|(s, _)| s).collect::<Vec<_>>()
            };
            close_all(expired);
        });
    }
}

/// QUITs sessions in the background.
fn close_all(sessions: Vec<Session>) {
    for s in sessions {
        tokio::spawn(s.quit());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::NextHop;

    fn dest(i: usize) -> Destination {
        Destination::new(NextHop::Mx(format!("d{i}.test")))
    }

    #[tokio::test]
    async fn idle_destinations_are_pruned_and_busy_ones_kept() {
        let pool = Pool::new(1, Duration::ZERO, 10);
        let held = pool.acquire(&dest(0)).await;
        for i in 1..5000 {
            drop(pool.acquire(&dest(i)).await);
        }
        assert!(pool.remembered() <= 2 * MIN_PRUNE, "{}", pool.remembered());
        // The busy entry survived every pruning: its one slot is still taken.
        let again = tokio::time::timeout(Duration::from_millis(50), pool.acquire(&dest(0))).await;
        assert!(again.is_err(), "a pruned busy entry gave out a second slot");
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(50), pool.acquire(&dest(0))).await;
        assert!(again.is_ok());
    }
}
