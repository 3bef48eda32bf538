//! The server-wide ceiling on message bytes held in memory (`limits.max_inflight_bytes`).
//! Each transaction is charged as its content arrives and released when the message is queued
//! or dropped; beyond the ceiling new content is refused with 452 4.3.1 (RFC 3463 X.3.1: mail
//! system full) instead of letting many slow large messages exhaust the process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct MemoryBudget {
    max: usize,
    used: AtomicUsize,
}

/// Bytes charged to the budget; released when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl MemoryBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes charged now by all transactions.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// True when nothing more may be charged.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.max
    }

    /// An empty charge, to grow as content arrives.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }
}

impl Charge {
    /// Adds `n` bytes, or returns false (charging nothing) when that would pass the ceiling.
    pub fn grow(&mut self, n: usize) -> bool {
        let max = self.budget.max;
        let ok = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= max)
            })
            .is_ok();
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_ceiling_and_releases_on_drop() {
        let b = MemoryBudget::new(100);
        let mut c1 = b.charge();
        assert!(c1.grow(60));
        let mut c2 = b.charge();
        assert!(!c2.grow(41));
        assert!(c2.grow(40));
        assert!(b.exhausted());
        drop(c1);
        assert_eq!(b.used(), 40);
        drop(c2);
        assert_eq!(b.used(), 0);
    }
}
