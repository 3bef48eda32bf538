//! The delivery policy's lifecycle calls around one attempt's outcomes (the plugins'
//! `deferred`, `bounced` and `delivered` stages):
//! - `deferred` (a transient failure that will be retried) may move the retry or give up;
//! - `bounced` (a permanent failure, an expiry, or a `deferred` give-up) may suppress the
//!   recipient's DSN or add a note to it;
//! - `delivered` is told after the outcome is on record, off the runner's path.
//!
//! None of these can lose mail: a policy that fails answers "no opinion" (its host's rule).

use crate::{Outcome, RcptReport};
use corvid_queue::{QueuedMessage, RetrySchedule};
use corvid_types::{BounceAction, Deferral, DeliveryInfo, DeliveryPolicy, Stage};
use std::sync::Arc;

/// The longest retry delay a policy may set.
const MAX_RETRY_AFTER: u64 = 7 * 24 * 3600;

/// What the policy asked for, applied to the recipients after the outcomes are written.
#[derive(Default)]
pub(crate) struct Adjustments {
    retry_at: Vec<(usize, u64)>,
    suppress: Vec<usize>,
    notes: Vec<(usize, String)>,
    /// `delivered` notifications to send once the outcome is on record.
    delivered: Vec<DeliveryInfo>,
}

fn info(msg: &QueuedMessage, i: usize, report: &RcptReport) -> Option<DeliveryInfo> {
    let r = msg.recipients.get(i)?;
    let reason = match &report.outcome {
        Outcome::Delivered => report
            .detail
            .clone()
            .unwrap_or_else(|| "2.0.0 delivered".into()),
        Outcome::Transient(t) | Outcome::Permanent(t) => t.clone(),
    };
    Some(DeliveryInfo {
        queue_id: msg.id.0.clone(),
        sender: msg.envelope.sender.clone(),
        recipient: r.recipient.address.clone(),
        attempt: r.attempts.saturating_add(1),
        remote_host: report.remote_mta.clone(),
        reply: report.reply.clone(),
        reason,
        // Held now, or held once and released by an administrator.
        quarantined: msg
            .quarantined
            .clone()
            .or_else(|| msg.released_hold.clone()),
    })
}

/// Which outcome stages the policy listens to, asked once per attempt.
#[derive(Clone, Copy, Default)]
pub(crate) struct Observed {
    deferred: bool,
    bounced: bool,
    delivered: bool,
}

impl Observed {
    pub(crate) fn of(policy: Option<&Arc<dyn DeliveryPolicy>>) -> Observed {
        match policy {
            Some(p) => Observed {
                deferred: p.observes(Stage::Deferred),
                bounced: p.observes(Stage::Bounced),
                delivered: p.observes(Stage::Delivered),
            },
            None => Observed::default(),
        }
    }

    /// Whether anything listens (else the runner keeps its fast paths).
    pub(crate) fn any(self) -> bool {
        self.deferred || self.bounced || self.delivered
    }
}

/// Asks the policy about each outcome before it is written. A `deferred` give-up turns the
/// report permanent (and then goes through `bounced`, like any failure).
pub(crate) async fn consult(
    policy: Option<&Arc<dyn DeliveryPolicy>>,
    schedule: &RetrySchedule,
    observed: Observed,
    msg: &QueuedMessage,
    reports: &mut [(usize, RcptReport)],
    now: u64,
) -> Adjustments {
    let mut adj = Adjustments::default();
    let Some(policy) = policy.filter(|_| observed.any()) else {
        return adj;
    };
    let expired = schedule.expired(msg.arrived_at, now);
    for (i, report) in reports.iter_mut() {
        let Some(ev) = info(msg, *i, report) else {
            continue;
        };
        let mut failed = matches!(report.outcome, Outcome::Permanent(_));
        if let Outcome::Transient(reason) = &report.outcome {
            if expired {
                failed = true;
            } else if observed.deferred {
                match policy.deferred(&ev).await {
                    Deferral::Continue => {}
                    Deferral::RetryAfter(d) => {
                        let at = now.saturating_add(d.as_secs().min(MAX_RETRY_AFTER));
                        adj.retry_at.push((*i, at));
                    }
                    Deferral::Bounce => {
                        tracing::info!(queue_id = %msg.id, rcpt = %ev.recipient, "policy gave up on a deferred recipient");
                        report.outcome = Outcome::Permanent(reason.clone());
                        failed = true;
                    }
                }
            }
        }
        if failed && observed.bounced {
            match policy.bounced(&ev).await {
                BounceAction::Continue => {}
                BounceAction::Suppress => adj.suppress.push(*i),
                BounceAction::Annotate(text) => adj.notes.push((*i, text)),
            }
        }
        if report.outcome == Outcome::Delivered && observed.delivered {
            adj.delivered.push(ev);
        }
    }
    adj
}

impl Adjustments {
    /// Writes the policy's answers into the recipients, after `apply` wrote the outcomes.
    pub(crate) fn apply_to(&mut self, msg: &mut QueuedMessage, schedule: &RetrySchedule) {
        for &(i, at) in &self.retry_at {
            if let Some(r) = msg.recipients.get_mut(i).filter(|r| r.is_pending()) {
                // Never past the give-up time: the schedule still decides when to stop.
                let limit = msg.arrived_at.saturating_add(schedule.max_age.as_secs());
                r.next_attempt = at.min(limit);
            }
        }
        for &i in &self.suppress {
            if let Some(r) = msg.recipients.get_mut(i) {
                // Marked as reported: `dsn::due_reports` leaves it out.
                r.reported = true;
            }
        }
        for (i, text) in self.notes.drain(..) {
            if let Some(r) = msg.recipients.get_mut(i) {
                r.note = Some(text);
            }
        }
    }

    /// Tells the policy about the deliveries, once they are on record, without holding up
    /// the runner.
    pub(crate) fn notify_delivered(self, policy: Option<&Arc<dyn DeliveryPolicy>>) {
        let Some(policy) = policy.filter(|_| !self.delivered.is_empty()) else {
            return;
        };
        let policy = Arc::clone(policy);
        tokio::spawn(async move {
            for ev in &self.delivered {
                policy.delivered(ev).await;
            }
        });
    }
}
