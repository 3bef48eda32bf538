//! Slows password guessing: failures are remembered per client network for a window.
//!
//! An IPv4 client is one address; an IPv6 client is its /64, the smallest block an ISP hands
//! a site (RFC 6177), so that stepping through addresses of one's own /64 gains nothing.
//! Attempts being checked count like failures until they are decided, so parallel connections
//! from one client cannot run more guesses at once than the limit allows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Entries kept at most; beyond that the least recently failed are forgotten (never the whole
/// table), so a flood of addresses cannot grow memory without bound nor wipe out the others.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6Prefix(u64),
}

fn key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::V4(u32::from(v4)),
            None => Key::V6Prefix((u128::from(v6) >> 64) as u64),
        },
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    in_flight: u32,
}

pub struct AuthThrottle {
    window: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// An attempt admitted by [`AuthThrottle::begin`]; counts against its client until dropped.
pub struct Attempt<'a> {
    throttle: &'a AuthThrottle,
    key: Key,
}

impl AuthThrottle {
    pub fn new(window: Duration) -> Self {
        AuthThrottle {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Recent failures plus attempts in progress from `ip`'s network.
    pub fn recent(&self, ip: IpAddr) -> u32 {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&key(ip)).map_or(0, |e| self.live(e) + e.in_flight)
    }

    fn live(&self, e: &Entry) -> u32 {
        if e.last.elapsed() < self.window {
            e.failures
        } else {
            0
        }
    }

    /// Admits one attempt from `ip` unless its recent failures and the attempts already in
    /// progress reach `max`.
    pub fn begin(&self, ip: IpAddr, max: u32) -> Option<Attempt<'_>> {
        let k = key(ip);
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(&k) && map.len() >= MAX_TRACKED {
            self.evict(&mut map);
        }
        let e = map.entry(k).or_insert(Entry {
            failures: 0,
            last: Instant::now(),
            in_flight: 0,
        });
        if e.last.elapsed() >= self.window {
            e.failures = 0;
        }
        if e.failures + e.in_flight >= max {
            return None;
        }
        e.in_flight += 1;
        Some(Attempt {
            throttle: self,
            key: k,
        })
    }

    /// Forgets expired entries, then if still full the eighth least recently failed.
    fn evict(&self, map: &mut HashMap<Key, Entry>) {
        let window = self.window;
        map.retain(|_, e| e.in_flight > 0 || e.last.elapsed() < window);
        if map.len() < MAX_TRACKED {
            return;
        }
        let mut idle: Vec<(Instant, Key)> = map
            .iter()
            .filter(|(_, e)| e.in_flight == 0)
            .map(|(k, e)| (e.last, *k))
            .collect();
        idle.sort_unstable_by_key(|(last, _)| *last);
        for (_, k) in idle.iter().take(MAX_TRACKED / 8) {
            map.remove(k);
        }
    }
}

impl Attempt<'_> {
    /// Records the attempt as failed; returns the recent failures of its client.
    pub fn failed(self) -> u32 {
        let mut map = self
            .throttle
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(e) = map.get_mut(&self.key) else {
            return 1;
        };
        e.failures += 1;
        e.last = Instant::now();
        e.failures
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut map = self
            .throttle
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(&self.key) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_per_address_and_expires() {
        let t = AuthThrottle::new(Duration::from_millis(50));
        let a = ip("127.0.0.1");
        assert_eq!(t.begin(a, 10).unwrap().failed(), 1);
        assert_eq!(t.begin(a, 10).unwrap().failed(), 2);
        assert_eq!(t.recent(ip("127.0.0.2")), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.recent(a), 0);
        assert_eq!(t.begin(a, 10).unwrap().failed(), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t = AuthThrottle::new(Duration::from_secs(60));
        t.begin(ip("2001:db8::1"), 10).unwrap().failed();
        t.begin(ip("2001:db8::ffff:2"), 10).unwrap().failed();
        assert_eq!(t.recent(ip("2001:db8::3")), 2);
        assert_eq!(t.recent(ip("2001:db8:0:1::1")), 0);
        t.begin(ip("::ffff:192.0.2.1"), 10).unwrap().failed();
        assert_eq!(t.recent(ip("192.0.2.1")), 1);
    }

    #[test]
    fn attempts_in_progress_count_so_parallel_guesses_do_not_multiply() {
        let t = AuthThrottle::new(Duration::from_secs(60));
        let a = ip("192.0.2.7");
        let first = t.begin(a, 2).unwrap();
        let second = t.begin(a, 2).unwrap();
        assert!(t.begin(a, 2).is_none(), "two in flight fill a limit of 2");
        drop(first); // succeeded: not a failure
        second.failed();
        assert!(t.begin(a, 2).is_some());
        assert_eq!(t.recent(a), 1);
    }

    #[test]
    fn a_full_table_forgets_the_oldest_not_everything() {
        let t = AuthThrottle::new(Duration::from_secs(600));
        let victim = ip("10.255.255.255");
        t.begin(victim, 100).unwrap().failed();
        for i in 0..MAX_TRACKED as u32 + 10 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.begin(a, 100).unwrap().failed();
        }
        let len = t.entries.lock().unwrap().len();
        assert!(len <= MAX_TRACKED, "{len}");
        assert!(len > MAX_TRACKED / 2, "{len}: the table was wiped");
        // The newest entries survive.
        let newest = IpAddr::V4(std::net::Ipv4Addr::from(
            0x0a00_0000 + MAX_TRACKED as u32 + 9,
        ));
        assert_eq!(t.recent(newest), 1);
    }
}
