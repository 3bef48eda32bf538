//! Slows password guessing: failures are remembered per client address for a window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Entries kept at most; beyond that the oldest are forgotten, so a flood of addresses cannot
/// grow memory without bound.
const MAX_TRACKED: usize = 65_536;

pub struct AuthThrottle {
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    pub fn new(window: Duration) -> Self {
        AuthThrottle {
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Recent failures from `ip` (0 once the window since the last failure has passed).
    pub fn recent(&self, ip: IpAddr) -> u32 {
        let map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(&ip) {
            Some((n, last)) if last.elapsed() < self.window => *n,
            _ => 0,
        }
    }

    /// Records a failure and returns the count within the window.
    pub fn record_failure(&self, ip: IpAddr) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED {
            let window = self.window;
            map.retain(|_, (_, last)| last.elapsed() < window);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
        entry.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_expires() {
        let t = AuthThrottle::new(Duration::from_millis(50));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(t.record_failure(a), 1);
        assert_eq!(t.record_failure(a), 2);
        assert_eq!(t.recent("127.0.0.2".parse().unwrap()), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.recent(a), 0);
        assert_eq!(t.record_failure(a), 1);
    }
}
