//! Flow control: when delivery falls behind, intake slows down instead of the queue growing
//! without bound (Postfix's `in_flow_delay`). Read at MAIL, before its 250, so that data
//! already accepted is never at risk.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The `[queue] flow_*` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowControl {
    /// Messages still to deliver beyond which each MAIL reply waits `delay`.
    pub delay_backlog: u64,
    /// How long a MAIL reply waits above `delay_backlog` (at most `limits.command_timeout`).
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Messages still to deliver beyond which MAIL gets 451 4.3.1.
    pub hard_backlog: u64,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            delay_backlog: 10_000,
            delay: Duration::from_secs(1),
            hard_backlog: 50_000,
        }
    }
}

/// What a MAIL meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowLevel {
    /// Below the soft limit: answered at once.
    Open = 0,
    /// Above `delay_backlog`: the reply waits.
    Delayed = 1,
    /// Above `hard_backlog`: refused for now.
    Refused = 2,
}

/// The server-wide flow state, so that entering and leaving flow control is logged once per
/// transition, never per message.
#[derive(Debug, Default)]
pub struct FlowGate {
    level: AtomicU8,
}

impl FlowGate {
    /// The level for `backlog` (`None`: the intake does not know, no flow control); logs a
    /// change of level.
    pub fn assess(&self, settings: &FlowControl, backlog: Option<u64>) -> FlowLevel {
        let Some(n) = backlog else {
            return FlowLevel::Open;
        };
        let level = if n > settings.hard_backlog {
            FlowLevel::Refused
        } else if n > settings.delay_backlog {
            FlowLevel::Delayed
        } else {
            FlowLevel::Open
        };
        let before = self.level.swap(level as u8, Ordering::Relaxed);
        if before != level as u8 {
            match level {
                FlowLevel::Open => tracing::info!(
                    backlog = n,
                    "flow control off: queue backlog back under the limit"
                ),
                FlowLevel::Delayed => {
                    tracing::warn!(backlog = n, limit = settings.delay_backlog, delay = ?settings.delay, "flow control on: delaying MAIL replies")
                }
                FlowLevel::Refused => tracing::warn!(
                    backlog = n,
                    limit = settings.hard_backlog,
                    "flow control: queue backlog over the hard limit, refusing MAIL with 451 4.3.1"
                ),
            }
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_limits() {
        let s = FlowControl {
            delay_backlog: 10,
            delay: Duration::from_secs(1),
            hard_backlog: 20,
        };
        let g = FlowGate::default();
        assert_eq!(g.assess(&s, None), FlowLevel::Open);
        assert_eq!(g.assess(&s, Some(10)), FlowLevel::Open);
        assert_eq!(g.assess(&s, Some(11)), FlowLevel::Delayed);
        assert_eq!(g.assess(&s, Some(20)), FlowLevel::Delayed);
        assert_eq!(g.assess(&s, Some(21)), FlowLevel::Refused);
        assert_eq!(g.assess(&s, Some(0)), FlowLevel::Open);
    }
}
