//! When to try a deferred recipient again, and when to give up.
//!
//! The default follows Postfix's spirit (`minimal_backoff_time` 5m doubling, capped, with a
//! 5-day `maximal_queue_lifetime`): 5m, 10m, 20m, 40m, 80m, then every 160m, expiring after
//! 5 days. RFC 5321 4.5.4.1 asks for a retry interval of at least 30 minutes in general and a
//! give-up time of at least 4-5 days; the short first steps are the common practice for
//! greylisting, which expects a retry within minutes.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const MINUTE: u64 = 60;

/// Delay used when the configured list is empty.
const FALLBACK_DELAY: Duration = Duration::from_secs(5 * MINUTE);

/// The retry policy, read from the config (durations as humantime strings such as `"5m"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySchedule {
    /// Delay after the 1st, 2nd, ... failed attempt; the last one repeats.
    #[serde(with = "duration_list")]
    pub delays: Vec<Duration>,
    /// How long a message may stay in the queue before its pending recipients fail.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Random spread as a fraction of each delay (0.1 = ±10%), so that messages deferred
    /// together do not all retry in the same second. Clamped to 0..=0.5.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays: [5, 10, 20, 40, 80, 160]
                .iter()
                .map(|m| Duration::from_secs(m * MINUTE))
                .collect(),
            max_age: Duration::from_secs(5 * 24 * 60 * MINUTE),
            jitter: 0.1,
        }
    }
}

impl RetrySchedule {
    /// The wait after `attempts` failed attempts (`0` is treated as `1`), with jitter applied.
    pub fn next_delay(&self, attempts: u32) -> Duration {
        let base = self.base_delay(attempts);
        let spread = self.jitter.clamp(0.0, 0.5);
        if spread == 0.0 {
            return base;
        }
        let factor = rand::thread_rng().gen_range(1.0 - spread..=1.0 + spread);
        base.mul_f64(factor)
    }

    /// Unix seconds of the next attempt after `attempts` failures, counted from `now`.
    pub fn next_attempt_at(&self, attempts: u32, now: u64) -> u64 {
        now.saturating_add(self.next_delay(attempts).as_secs().max(1))
    }

    /// True when a message that arrived at `arrived_at` has outlived `max_age` at `now`
    /// (both unix seconds).
    pub fn expired(&self, arrived_at: u64, now: u64) -> bool {
        now.saturating_sub(arrived_at) >= self.max_age.as_secs()
    }

    /// The delay without jitter.
    fn base_delay(&self, attempts: u32) -> Duration {
        let index = (attempts.max(1) - 1) as usize;
        match self.delays.get(index).or(self.delays.last()) {
            Some(d) => *d,
            None => FALLBACK_DELAY,
        }
    }
}

/// `Vec<Duration>` as a list of humantime strings.
mod duration_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<humantime_serde::Serde<Duration>> =
            v.iter().map(|d| humantime_serde::Serde::from(*d)).collect();
        wrapped.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let wrapped = Vec::<humantime_serde::Serde<Duration>>::deserialize(d)?;
        Ok(wrapped.into_iter().map(|w| w.into_inner()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact() -> RetrySchedule {
        RetrySchedule {
            jitter: 0.0,
            ..RetrySchedule::default()
        }
    }

    #[test]
    fn delays_double_then_cap() {
        let s = exact();
        let mins: Vec<u64> = (0..9).map(|a| s.next_delay(a).as_secs() / 60).collect();
        assert_eq!(mins, [5, 5, 10, 20, 40, 80, 160, 160, 160]);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let s = RetrySchedule::default();
        for _ in 0..1000 {
            let d = s.next_delay(1).as_secs_f64();
            assert!((270.0..=330.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn next_attempt_is_in_the_future() {
        assert_eq!(exact().next_attempt_at(2, 1000), 1600);
        let zero = RetrySchedule {
            delays: vec![Duration::ZERO],
            ..exact()
        };
        assert_eq!(zero.next_attempt_at(1, 1000), 1001);
    }

    #[test]
    fn expiry_after_max_age() {
        let s = exact();
        let five_days = 5 * 24 * 3600;
        assert!(!s.expired(1000, 1000 + five_days - 1));
        assert!(s.expired(1000, 1000 + five_days));
        assert!(!s.expired(2000, 1000), "a clock going back never expires");
    }

    #[test]
    fn empty_list_falls_back() {
        let s = RetrySchedule {
            delays: vec![],
            ..exact()
        };
        assert_eq!(s.next_delay(3), FALLBACK_DELAY);
    }

    #[test]
    fn deserializes_from_humantime_strings() {
        let s: RetrySchedule =
            serde_json::from_str(r#"{"delays":["1m","1h 30m"],"max_age":"2d"}"#).unwrap();
        assert_eq!(
            s.delays,
            [Duration::from_secs(60), Duration::from_secs(5400)]
        );
        assert_eq!(s.max_age, Duration::from_secs(2 * 86400));
        assert_eq!(s.jitter, 0.1);
        let back: RetrySchedule =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
