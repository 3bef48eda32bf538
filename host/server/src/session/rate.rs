//! How long a DATA/BDAT transfer may wait for its next bytes.
//!
//! Two rules: no byte for `limits.data_timeout` ends the transfer, and once one
//! `limits.data_rate_window` has passed, every window must have brought at least
//! `min_data_rate` octets per second. The rate is sustained over a sliding window, not a
//! credit earned up front: a client cannot send a burst and then trickle for minutes.

use std::collections::VecDeque;
use tokio::time::{Duration, Instant};

/// Arrivals closer together than this share a bucket, bounding the meter's memory.
const BUCKET: Duration = Duration::from_millis(250);

pub(super) struct RateMeter {
    start: Instant,
    last_progress: Instant,
    idle: Duration,
    window: Duration,
    /// Octets required per window (0: no rate rule).
    need: u64,
    /// (time of arrival, octets), oldest first, within the last window.
    buckets: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub(super) fn new(idle: Duration, min_rate: u64, window: Duration) -> Self {
        let now = Instant::now();
        RateMeter {
            start: now,
            last_progress: now,
            idle,
            window,
            need: (min_rate as f64 * window.as_secs_f64()) as u64,
            buckets: VecDeque::new(),
        }
    }

    pub(super) fn record(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        self.last_progress = now;
        match self.buckets.back_mut() {
            Some((t, bytes)) if now.duration_since(*t) < BUCKET => *bytes += n as u64,
            _ => self.buckets.push_back((now, n as u64)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.buckets.pop_front();
        }
    }

    /// When the transfer fails if no more bytes arrive.
    pub(super) fn deadline(&self) -> Instant {
        let idle = self.last_progress + self.idle;
        if self.need == 0 {
            return idle;
        }
        // The first check is one window after the start; then the window slides.
        let first = (self.start + self.window).max(Instant::now());
        let mut sum: u64 = self
            .buckets
            .iter()
            .filter(|(t, _)| *t + self.window > first)
            .map(|(_, b)| b)
            .sum();
        if sum < self.need {
            return first.min(idle);
        }
        for (t, bytes) in &self.buckets {
            let expires = *t + self.window;
            if expires <= first {
                continue;
            }
            sum -= bytes;
            if sum < self.need {
                return expires.min(idle);
            }
        }
        idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_buys_one_window_not_minutes() {
        let mut m = RateMeter::new(Duration::from_secs(600), 1000, Duration::from_secs(30));
        let start = Instant::now();
        m.record(10_000_000);
        // 10 MB is far beyond one window's 30 kB, yet once it leaves the window, it is gone.
        assert_eq!(m.deadline(), start + Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_client_is_never_due_and_a_slow_one_is() {
        let mut m = RateMeter::new(Duration::from_secs(600), 1000, Duration::from_secs(30));
        for _ in 0..120 {
            tokio::time::advance(Duration::from_secs(1)).await;
            m.record(1500);
            assert!(m.deadline() > Instant::now());
        }
        let mut slow = RateMeter::new(Duration::from_secs(600), 1000, Duration::from_secs(30));
        for _ in 0..29 {
            tokio::time::advance(Duration::from_secs(1)).await;
            slow.record(500);
        }
        assert!(slow.deadline() <= Instant::now() + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_rate_means_only_the_idle_timeout() {
        let mut m = RateMeter::new(Duration::from_secs(60), 0, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(5)).await;
        m.record(1);
        assert_eq!(m.deadline(), Instant::now() + Duration::from_secs(60));
    }
}
