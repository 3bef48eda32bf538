//! Queue ids: short, unique, and sortable by arrival.
//!
//! An id is 13 upper-case hex digits of microseconds since the epoch (enough until the year
//! 2112) followed by 4 hex digits of a counter, e.g. `0641F2A3B4C5D0000`. Ids never repeat and
//! never go backwards within a process: when the clock has not moved (or moved back) since the
//! last id, the counter advances instead, carrying into the microseconds when it overflows.
//! Across restarts ids stay unique because time has moved on past the previous run's ids.

use corvid_types::QueueId;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
pub(crate) struct IdGenerator {
    /// The (microseconds, counter) pair of the last id handed out.
    last: Mutex<(u64, u16)>,
}

impl IdGenerator {
    pub(crate) fn next(&self) -> QueueId {
        let now = now_micros();
        // A poisoned lock only means another thread panicked mid-update of two integers; the
        // values are still usable.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = successor(*last, now);
        QueueId(format!("{:013X}{:04X}", last.0, last.1))
    }
}

/// The smallest (micros, counter) after `last` that is not before `now`.
fn successor(last: (u64, u16), now: u64) -> (u64, u16) {
    if now > last.0 {
        return (now, 0);
    }
    match last.1.checked_add(1) {
        Some(c) => (last.0, c),
        None => (last.0 + 1, 0),
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_sorted() {
        let g = IdGenerator::default();
        let ids: Vec<QueueId> = (0..10_000).map(|_| g.next()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        assert!(ids.iter().all(|i| i.0.len() == 17));
    }

    #[test]
    fn clock_going_back_does_not_repeat() {
        assert_eq!(successor((100, 5), 50), (100, 6));
        assert_eq!(successor((100, u16::MAX), 100), (101, 0));
        assert_eq!(successor((100, 7), 200), (200, 0));
    }

    #[test]
    fn ids_from_separate_generators_still_sort_by_time() {
        let a = IdGenerator::default().next();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = IdGenerator::default().next();
        assert!(a < b);
    }
}
