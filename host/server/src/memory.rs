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

    /// Whether `n` more bytes would fit now (a SIZE declared at MAIL, RFC 1870 6.1).
    pub fn fits(&self, n: u64) -> bool {
        let free = self.max.saturating_sub(self.used()) as u64;
        n <= free
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

impl Charge {
    /// Adds as much of `n` bytes as fits under the ceiling; returns how many were added.
    pub fn grow_up_to(&mut self, n: usize) -> usize {
        let max = self.budget.max;
        let mut granted = 0;
        let _ = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                granted = n.min(max.saturating_sub(used));
                Some(used + granted)
            });
        self.bytes += granted;
        granted
    }

    /// Gives `n` of the charged bytes back (at most all of them).
    pub fn release(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.budget.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The charge of one DATA or BDAT transfer, taken before the bytes are read: every read is
/// paid for in advance (its `credit`), so the bytes a session holds never pass the ceiling,
/// not even by the read buffer. Once the ceiling is reached the content is dropped and the
/// rest of the transfer is read without being kept (the answer is then 452 4.3.1).
#[derive(Debug)]
pub struct Metered {
    charge: Charge,
    /// Octets charged for bytes not read yet.
    credit: usize,
    over: bool,
}

impl Metered {
    pub fn new(charge: Charge) -> Self {
        Metered {
            charge,
            credit: 0,
            over: false,
        }
    }

    /// How many octets the next read may take, at most `want`: the credit is topped up to
    /// `want` first. Past the ceiling (see [`Metered::over`]) reads are not charged, since
    /// nothing read is kept.
    pub fn room(&mut self, want: usize) -> usize {
        if self.over {
            return want;
        }
        if self.credit < want {
            self.credit += self.charge.grow_up_to(want - self.credit);
        }
        if self.credit == 0 {
            self.over = true;
            return want;
        }
        self.credit.min(want)
    }

    /// `n` octets were taken into the message: paid from the credit, or charged now for bytes
    /// that were buffered before the transfer began (pipelined with the command).
    pub fn took(&mut self, n: usize) {
        if self.over {
            return;
        }
        let paid = n.min(self.credit);
        self.credit -= paid;
        if !self.charge.grow(n - paid) {
            self.over = true;
        }
    }

    /// True once the ceiling was reached: the content must be dropped.
    pub fn over(&self) -> bool {
        self.over
    }

    /// The charge for the bytes kept; the unused credit is given back.
    pub fn into_charge(mut self) -> Charge {
        self.charge.release(self.credit);
        self.charge
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

    #[test]
    fn reads_are_paid_before_they_are_made() {
        let b = MemoryBudget::new(100);
        let mut m = Metered::new(b.charge());
        assert_eq!(m.room(64), 64);
        assert_eq!(b.used(), 64, "charged before the read");
        m.took(10);
        assert_eq!(m.room(64), 64);
        assert_eq!(b.used(), 74);
        m.took(64);
        // Only 26 more fit under the ceiling: the read is cut to them.
        assert_eq!(m.room(64), 26);
        assert_eq!(b.used(), 100);
        m.took(26);
        assert!(!m.over());
        assert_eq!(m.room(64), 64);
        assert!(m.over());
        let mut m2 = Metered::new(b.charge());
        drop(m);
        assert_eq!(b.used(), 0);
        assert_eq!(m2.room(30), 30);
        m2.took(5);
        let c = m2.into_charge();
        assert_eq!(b.used(), 5, "unused credit given back");
        assert!(b.fits(95) && !b.fits(96));
        drop(c);
    }
}
