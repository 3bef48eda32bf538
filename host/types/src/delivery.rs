//! The seam between delivery and whatever decides delivery policy (the plugin host's `route`,
//! `deferred`, `bounced` and `delivered` stages, or a fake in tests). The queue runner asks at
//! fixed points and applies the answers; every method defaults to "no opinion".

use crate::{Address, Reply, Stage};
use async_trait::async_trait;
use std::time::Duration;

/// The question of the `route` stage: where does mail for this recipient go?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRequest {
    pub queue_id: String,
    pub sender: Option<Address>,
    pub recipient: Address,
}

/// Where mail for a recipient goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No opinion: the static routes, local domains, then MX decide.
    Continue,
    Local,
    /// MX lookup of this domain.
    Mx(String),
    /// A smarthost.
    Relay {
        host: String,
        port: u16,
    },
    /// Drop the recipient without a bounce.
    Drop,
}

/// What is known about one recipient's delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    pub queue_id: String,
    pub sender: Option<Address>,
    pub recipient: Address,
    /// Attempts made so far, this one included.
    pub attempt: u32,
    /// The host that answered, when a remote host was reached.
    pub remote_host: Option<String>,
    /// The remote host's reply, when there was one.
    pub reply: Option<Reply>,
    /// The outcome in words, starting with an enhanced status code (RFC 3463).
    pub reason: String,
    /// Why the message was quarantined ("<plugin>: <reason>"), when it was held for an
    /// administrator before this attempt; plugins read it with `lifecycle.quarantined`.
    pub quarantined: Option<String>,
}

/// The answer of the `deferred` stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferral {
    /// Keep the retry schedule.
    Continue,
    /// Retry after this delay instead (the host caps it at 7 days).
    RetryAfter(Duration),
    /// Give up now: the recipient fails and bounces.
    Bounce,
}

/// The answer of the `bounced` stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BounceAction {
    /// Send the DSN as composed.
    Continue,
    /// Send no DSN for this recipient.
    Suppress,
    /// Add this text to the DSN's human-readable part.
    Annotate(String),
}

/// Delivery policy, consulted by the queue runner.
#[async_trait]
pub trait DeliveryPolicy: Send + Sync {
    /// Whether anything listens at `stage`; lets the runner skip the work of asking.
    fn observes(&self, _stage: Stage) -> bool {
        false
    }

    /// Where mail for `req.recipient` goes.
    async fn route(&self, _req: &RouteRequest) -> Route {
        Route::Continue
    }

    /// An attempt failed temporarily and the recipient will be retried.
    async fn deferred(&self, _info: &DeliveryInfo) -> Deferral {
        Deferral::Continue
    }

    /// A recipient failed permanently (or expired); a DSN is about to be composed.
    async fn bounced(&self, _info: &DeliveryInfo) -> BounceAction {
        BounceAction::Continue
    }

    /// A recipient was delivered and the outcome is on record (notification only).
    async fn delivered(&self, _info: &DeliveryInfo) {}
}
