//! Deciding what becomes of each recipient after an attempt, in one place: the outcome, the
//! retry schedule and the delivery policy's lifecycle stages together make one [`Fate`],
//! which is then written into the recipient's state as is. Nothing downstream changes it.
//!
//! The policy's stages (the plugins' `deferred`, `bounced` and `delivered`):
//! - `deferred` (a transient failure that will be retried) may move the retry or give up;
//! - `bounced` (a permanent failure, an expiry, or a `deferred` give-up) may suppress the
//!   recipient's DSN or add a note to it;
//! - `delivered` is told after the outcome is on record, off the runner's path ([`tell`]).
//!
//! None of these can lose mail: a policy that fails answers "no opinion" (its host's rule).
//! Each stage is told the attempt's TLS record beside the [`DeliveryInfo`]
//! ([`corvid_types::delivery_call`]: the plugins' `delivery-tls.attempt-tls`).

use crate::{Outcome, RcptReport};
use corvid_queue::{QueuedMessage, RecipientStatus, RetrySchedule, TlsRecord};
use corvid_types::delivery_call::{within, CallFacts, DeliveryTls};
use corvid_types::{BounceAction, Deferral, DeliveryInfo, DeliveryPolicy, Stage};
use std::sync::Arc;

/// The longest retry delay a policy may set.
const MAX_RETRY_AFTER: u64 = 7 * 24 * 3600;

/// One recipient's fate after an attempt.
pub(crate) struct Fate {
    /// The recipient's index in the message.
    pub(crate) index: usize,
    /// What the attempt found (reply, remote MTA, TLS), recorded with the verdict.
    pub(crate) report: RcptReport,
    pub(crate) verdict: Verdict,
    pub(crate) notice: Notice,
    /// For the policy's `delivered` stage, once the outcome is on record, with the
    /// attempt's TLS.
    told: Option<(DeliveryInfo, Arc<CallFacts>)>,
}

/// What the recipient's state becomes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    /// Tried again at `at` (Unix seconds): the schedule's time, or the policy's.
    Deferred {
        reason: String,
        at: u64,
    },
    /// Given up: a permanent failure, or a transient one the policy gave up on.
    Failed {
        reason: String,
    },
    /// The message outlived the retry schedule (RFC 3463 X.4.7).
    Expired {
        last_error: String,
    },
}

/// What the sender is told about this recipient.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// What the sender asked for (`NOTIFY`, the queue's rules in `corvid_queue::dsn`).
    AsAsked,
    /// With the policy's note added to the DSN.
    Annotated(String),
    /// The policy's `bounced` stage suppressed the DSN: no report for this recipient, ever.
    Suppressed,
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
}

/// The delivery policy, with what it listens to.
#[derive(Clone, Copy)]
pub(crate) struct Hooks<'a> {
    policy: Option<&'a Arc<dyn DeliveryPolicy>>,
    observed: Observed,
}

impl<'a> Hooks<'a> {
    pub(crate) fn new(policy: Option<&'a Arc<dyn DeliveryPolicy>>) -> Self {
        Hooks {
            policy,
            observed: Observed::of(policy),
        }
    }
}

/// Decides each reported recipient's fate, asking the policy's stages that listen. A
/// `deferred` give-up fails the recipient (and then goes through `bounced`, like any failure).
pub(crate) async fn decide(
    hooks: Hooks<'_>,
    schedule: &RetrySchedule,
    msg: &QueuedMessage,
    reports: Vec<(usize, RcptReport)>,
    now: u64,
) -> Vec<Fate> {
    let expired = schedule.expired(msg.arrived_at, now);
    // Never past the give-up time: the schedule still decides when to stop.
    let limit = msg.arrived_at.saturating_add(schedule.max_age.as_secs());
    let mut fates = Vec::with_capacity(reports.len());
    for (index, report) in reports {
        let Some(r) = msg.recipients.get(index) else {
            continue;
        };
        let attempts = r.attempts.saturating_add(1);
        // Built only when a stage listens: it copies the recipient and the reply.
        let info = (hooks.observed.deferred || hooks.observed.bounced || hooks.observed.delivered)
            .then(|| info(msg, index, &report))
            .flatten()
            .map(|i| {
                let tls = report.tls_record.as_ref().map(delivery_tls);
                (i, CallFacts::attempt(tls))
            });
        let policy = hooks.policy.zip(info.as_ref());
        let verdict = match &report.outcome {
            Outcome::Delivered => Verdict::Delivered,
            Outcome::Transient(reason) if expired => Verdict::Expired {
                last_error: reason.clone(),
            },
            Outcome::Transient(reason) => {
                let deferral = match policy.filter(|_| hooks.observed.deferred) {
                    Some((p, (ev, facts))) => within(Arc::clone(facts), p.deferred(ev)).await,
                    None => Deferral::Continue,
                };
                let reason = reason.clone();
                match deferral {
                    Deferral::Continue => Verdict::Deferred {
                        reason,
                        at: schedule.next_attempt_at(attempts, now),
                    },
                    Deferral::RetryAfter(d) => Verdict::Deferred {
                        reason,
                        at: now
                            .saturating_add(d.as_secs().min(MAX_RETRY_AFTER))
                            .min(limit),
                    },
                    Deferral::Bounce => {
                        tracing::info!(queue_id = %msg.id, rcpt = %r.recipient.address,
                            "policy gave up on a deferred recipient");
                        Verdict::Failed { reason }
                    }
                }
            }
            Outcome::Permanent(reason) => Verdict::Failed {
                reason: reason.clone(),
            },
        };
        let failed = matches!(verdict, Verdict::Failed { .. } | Verdict::Expired { .. });
        let notice = match policy.filter(|_| failed && hooks.observed.bounced) {
            Some((p, (ev, facts))) => match within(Arc::clone(facts), p.bounced(ev)).await {
                BounceAction::Continue => Notice::AsAsked,
                BounceAction::Suppress => Notice::Suppressed,
                BounceAction::Annotate(text) => Notice::Annotated(text),
            },
            None => Notice::AsAsked,
        };
        let told = info.filter(|_| verdict == Verdict::Delivered && hooks.observed.delivered);
        fates.push(Fate {
            index,
            report,
            verdict,
            notice,
            told,
        });
    }
    fates
}

/// What a lifecycle stage is told about one recipient's attempt.
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

/// The attempt's TLS as the policy's stages see it.
fn delivery_tls(r: &TlsRecord) -> DeliveryTls {
    DeliveryTls {
        version: r.version.clone(),
        cipher: r.cipher.clone(),
        verified: r.verified,
        policy: r.policy.clone(),
        source: r.source.clone(),
        policy_domain: r.policy_domain.clone(),
        failure: r.failure.clone(),
    }
}

/// Writes the fates into the recipients' states, with the per-recipient log line and the
/// delivery metric.
pub(crate) fn write(msg: &mut QueuedMessage, fates: &[Fate]) {
    let id = msg.id.clone();
    for fate in fates {
        let Some(r) = msg.recipients.get_mut(fate.index) else {
            continue;
        };
        let report = &fate.report;
        r.attempts = r.attempts.saturating_add(1);
        r.remote_mta = report.remote_mta.clone();
        r.diagnostic = report.diagnostic.clone();
        if report.tls_record.is_some() {
            r.tls = report.tls_record.clone();
        }
        let rcpt = &r.recipient.address;
        let route = r.route.as_deref().unwrap_or("");
        // Whether the hop was reached over TLS, and verified: the record of an opportunistic
        // delivery to a certificate that did not verify.
        let tls = report.tls.as_deref().unwrap_or("none");
        let label = match &fate.verdict {
            Verdict::Delivered => "delivered",
            Verdict::Deferred { .. } => "deferred",
            Verdict::Failed { .. } => "failed",
            Verdict::Expired { .. } => "expired",
        };
        corvid_types::metrics::observer().delivery(label, route);
        match &fate.verdict {
            Verdict::Delivered => {
                r.status = RecipientStatus::Delivered;
                r.success_report = report.success;
                let reply = report.detail.as_deref().unwrap_or("2.0.0 delivered");
                r.last_reply = Some(reply.to_owned());
                tracing::info!(queue_id = %id, rcpt = %rcpt, route, outcome = label,
                    reply, tls, "recipient done");
            }
            Verdict::Expired { last_error } => {
                r.status = RecipientStatus::Failed;
                r.last_reply = Some(format!("4.4.7 expired in queue, last error: {last_error}"));
                tracing::warn!(queue_id = %id, rcpt = %rcpt, route, outcome = label,
                    reason = %last_error, "giving up on recipient");
            }
            Verdict::Deferred { reason, at } => {
                r.next_attempt = *at;
                r.last_reply = Some(reason.clone());
                tracing::info!(queue_id = %id, rcpt = %rcpt, route, outcome = label,
                    reason = %reason, tls, attempts = r.attempts, next_attempt = r.next_attempt,
                    "recipient deferred");
            }
            Verdict::Failed { reason } => {
                r.status = RecipientStatus::Failed;
                r.last_reply = Some(reason.clone());
                tracing::warn!(queue_id = %id, rcpt = %rcpt, route, outcome = label,
                    reason = %reason, tls, "recipient failed");
            }
        }
        match &fate.notice {
            Notice::AsAsked => {}
            Notice::Annotated(text) => r.note = Some(text.clone()),
            Notice::Suppressed => {
                // Its own state in the queue's record: `dsn::due_reports` never picks it, and
                // `corvid queue show` tells it apart from a report that went out. `reported`
                // too, so that an older Corvid reading the record never sends it either.
                r.dsn_suppressed = true;
                r.reported = true;
                tracing::info!(queue_id = %id, rcpt = %rcpt, "DSN suppressed by the policy");
            }
        }
    }
}

/// Tells the policy's `delivered` stage about the deliveries, once they are on record,
/// without holding up the runner.
pub(crate) fn tell(policy: Option<&Arc<dyn DeliveryPolicy>>, fates: Vec<Fate>) {
    let told: Vec<(DeliveryInfo, Arc<CallFacts>)> =
        fates.into_iter().filter_map(|f| f.told).collect();
    let Some(policy) = policy.filter(|_| !told.is_empty()) else {
        return;
    };
    let policy = Arc::clone(policy);
    tokio::spawn(async move {
        for (ev, facts) in told {
            within(facts, policy.delivered(&ev)).await;
        }
    });
}

#[cfg(test)]
mod tests;
