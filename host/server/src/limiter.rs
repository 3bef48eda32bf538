//! Connection admission: a cap in total and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// The caps are atomics so that a config reload can change them: connections already admitted
/// are never cut, only new ones meet the new caps.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Held for the life of a connection; releases its slot when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicUsize::new(max_per_ip),
            state: Mutex::new(State::default()),
        })
    }

    /// A permit, or `None` when either cap is reached.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        if st.total >= self.max_total.load(Relaxed) || from_ip >= self.max_per_ip.load(Relaxed) {
            return None;
        }
        st.total += 1;
        st.per_ip.insert(ip, from_ip + 1);
        Some(ConnPermit {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// New caps for the connections admitted from now on (a reload).
    pub fn set_limits(&self, max_total: usize, max_per_ip: usize) {
        self.max_total.store(max_total, Relaxed);
        self.max_per_ip.store(max_per_ip, Relaxed);
    }

    pub fn active(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut st = self
            .limiter
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_ip_and_releases() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = l.try_admit(a).unwrap();
        let _p2 = l.try_admit(a).unwrap();
        assert!(l.try_admit(a).is_none(), "per-ip cap");
        let _p3 = l.try_admit(b).unwrap();
        assert!(l.try_admit(b).is_none(), "total cap");
        drop(p1);
        let _p4 = l.try_admit(b).expect("slot freed by drop");
        assert_eq!(l.active(), 3);
    }
}
