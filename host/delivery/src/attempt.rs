//! One delivery attempt of one queued message: route, deliver per destination, consult the
//! delivery policy about the outcomes, record, and notify the sender.
//!
//! Spool access and Maildir writes block on disk, so they run on blocking threads; network
//! delivery runs on the runtime. The destinations of one message are served concurrently.

use crate::blocking::blocking;
use crate::content::LazyContent;
use crate::lifecycle::{self, Adjustments};
use crate::notify::{self, Notifier};
use crate::record::{record, record_now};
use crate::remote::Remote;
use crate::route::{self, Destination, NextHop, Router};
use crate::{local, Outcome, RcptReport};
use corvid_queue::dsn;
use corvid_queue::SuccessReport;
use corvid_queue::{unix_secs, QueuedMessage, RecipientStatus, RetrySchedule, Spool};
use corvid_types::{DeliveryPolicy, Directory, QueueId, RouteRequest, Stage};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What every attempt needs.
pub(crate) struct Context {
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) maildir_root: PathBuf,
    pub(crate) schedule: RetrySchedule,
    pub(crate) router: Router,
    pub(crate) policy: Option<Arc<dyn DeliveryPolicy>>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) notifier: Notifier,
    /// Local delivery's permits, apart from the remote ones (in [`Remote`]).
    pub(crate) local_permits: Arc<Semaphore>,
    /// More `Received:` fields than this: a loop (RFC 5321 6.3).
    pub(crate) max_hops: usize,
}

/// Attempts every due recipient of message `id` and records the outcomes durably.
///
/// Reading, routing and local delivery run under a local permit; each remote destination
/// takes its own slot and a remote permit inside [`Remote::deliver`], after the local permit
/// is given back. A slow remote MX therefore never holds a permit Maildir delivery needs.
pub(crate) async fn process(ctx: Arc<Context>, id: QueueId) {
    // The semaphore is never closed.
    let Ok(local_permit) = Arc::clone(&ctx.local_permits).acquire_owned().await else {
        return;
    };
    let now = unix_secs(SystemTime::now());
    let spool = Arc::clone(&ctx.spool);
    let read_id = id.clone();
    let Some(read) = blocking(move || spool.get(&read_id)).await else {
        return;
    };
    let mut msg = match read {
        Ok(Some(msg)) => msg,
        Ok(None) => return,
        Err(e) => return tracing::error!(queue_id = %id, error = %e, "cannot read message"),
    };
    // The message may have been handled since the runner listed it.
    if msg.next_due().is_none_or(|t| t > now) {
        return;
    }
    let due: Vec<usize> = (0..msg.recipients.len())
        .filter(|&i| msg.recipients[i].is_pending() && msg.recipients[i].next_attempt <= now)
        .collect();
    let groups = route_all(&ctx, &msg, &due).await;
    for (dest, idx) in &groups {
        for &i in idx {
            if let Some(r) = msg.recipients.get_mut(i) {
                r.route = Some(dest.hop.to_string());
            }
        }
    }
    let content = Arc::new(LazyContent::new(Arc::clone(&ctx.spool), id, ctx.max_hops));
    let observed = lifecycle::Observed::of(ctx.policy.as_ref());
    let local_only = groups.iter().all(|(d, _)| d.hop == NextHop::Local);
    if local_only && !observed.any() {
        if let Ok(body) = content.for_delivery().await {
            return local_only_fast(&ctx, msg, due, body, now).await;
        }
    }
    drop(local_permit);
    let reports = deliver_groups(&ctx, &msg, groups, &content).await;
    let body = content.get().await.unwrap_or_default();
    finish(&ctx, observed, msg, reports, &body, now).await;
}

/// Local only, and no policy observes outcomes: the Maildir writes and [`settle`] run on one
/// blocking thread, so that the time between a Maildir rename and the spool update (where a
/// crash makes a duplicate) stays as short as possible. Then the same tail as [`finish`].
async fn local_only_fast(
    ctx: &Arc<Context>,
    msg: QueuedMessage,
    due: Vec<usize>,
    content: Arc<Vec<u8>>,
    now: u64,
) {
    let c = Arc::clone(ctx);
    let body = Arc::clone(&content);
    let left = blocking(move || {
        let reports = local::deliver(&c.directory, &c.maildir_root, &msg, &due, &body);
        settle(&c, msg, &reports, &mut Adjustments::default(), now)
    })
    .await;
    if let Some(Some(msg)) = left {
        tell_and_record(ctx, msg, &content, now).await;
    }
}

/// Consults the policy about the outcomes, then the one tail: [`settle`], and the DSNs due.
async fn finish(
    ctx: &Arc<Context>,
    observed: lifecycle::Observed,
    msg: QueuedMessage,
    mut reports: Vec<(usize, RcptReport)>,
    content: &[u8],
    now: u64,
) {
    let adjust = lifecycle::consult(
        ctx.policy.as_ref(),
        &ctx.schedule,
        observed,
        &msg,
        &mut reports,
        now,
    )
    .await;
    let c = Arc::clone(ctx);
    let settled = blocking(move || {
        let mut adjust = adjust;
        let left = settle(&c, msg, &reports, &mut adjust, now);
        (left, adjust)
    })
    .await;
    let Some((left, adjust)) = settled else {
        return;
    };
    if let Some(msg) = left {
        tell_and_record(ctx, msg, content, now).await;
    }
    adjust.notify_delivered(ctx.policy.as_ref());
}

/// Writes the outcomes and the policy's answers into the recipients; when no DSN is due,
/// records the message at once (blocking) and returns `None`, else hands it back for
/// [`tell_and_record`].
fn settle(
    ctx: &Context,
    mut msg: QueuedMessage,
    reports: &[(usize, RcptReport)],
    adjust: &mut Adjustments,
    now: u64,
) -> Option<QueuedMessage> {
    apply(&mut msg, reports, &ctx.schedule, now);
    adjust.apply_to(&mut msg, &ctx.schedule);
    let policy = ctx.spool.dsn_policy();
    if !dsn::due_reports_with(&msg, now, ctx.notifier.delay_warning, &policy).is_empty() {
        return Some(msg);
    }
    dsn::mark_reported(&mut msg, &[]);
    record_now(ctx.spool.as_ref(), &msg);
    None
}

/// Queues the DSNs due, then records the message.
async fn tell_and_record(ctx: &Context, mut msg: QueuedMessage, content: &[u8], now: u64) {
    notify::send_reports(&ctx.notifier, &mut msg, content, now).await;
    record(Arc::clone(&ctx.spool), msg).await
}

/// Routes each due recipient and groups them by destination, in first-seen order.
async fn route_all(
    ctx: &Context,
    msg: &QueuedMessage,
    due: &[usize],
) -> Vec<(Destination, Vec<usize>)> {
    let mut groups: Vec<(Destination, Vec<usize>)> = Vec::new();
    let policy = ctx.policy.as_ref().filter(|p| p.observes(Stage::Route));
    for &i in due {
        let addr = &msg.recipients[i].recipient.address;
        let hooked = match policy {
            Some(p) => {
                let req = RouteRequest {
                    queue_id: msg.id.0.clone(),
                    sender: msg.envelope.sender.clone(),
                    recipient: addr.clone(),
                };
                route::from_policy(p.route(&req).await)
            }
            None => None,
        };
        let dest = match hooked {
            // A plugin's route carries no TLS policy: the recipient domain's applies.
            Some(d) => Destination {
                tls: ctx.router.domain_tls(&addr.domain_lower()),
                policy_domain: matches!(d.hop, NextHop::Mx(_)).then(|| addr.domain_lower()),
                ..d
            },
            None => ctx.router.route(addr),
        };
        match groups.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((dest, vec![i])),
        }
    }
    groups
}

/// Delivers every group; local ones on blocking threads, remote ones concurrently.
async fn deliver_groups(
    ctx: &Arc<Context>,
    msg: &QueuedMessage,
    groups: Vec<(Destination, Vec<usize>)>,
    content: &Arc<LazyContent>,
) -> Vec<(usize, RcptReport)> {
    let shared = Arc::new(msg.clone());
    let mut tasks = JoinSet::new();
    let mut by_task = HashMap::new();
    for (dest, idx) in groups {
        let group = idx.clone();
        let ctx = Arc::clone(ctx);
        let msg = Arc::clone(&shared);
        let content = Arc::clone(content);
        let handle = tasks.spawn(tracing::Instrument::in_current_span(async move {
            if dest.hop == NextHop::Discard {
                tracing::info!(queue_id = %msg.id, recipients = idx.len(), "dropped by a route decision");
                // Dropped by policy: no success notice claims a delivery that never was.
                let mut reports = uniform(&idx, Outcome::Delivered);
                for (_, r) in reports.iter_mut() {
                    r.success = SuccessReport::None;
                }
                return reports;
            }
            if dest.hop == NextHop::Local {
                // Local delivery's own permits (never closed).
                let Ok(_permit) = Arc::clone(&ctx.local_permits).acquire_owned().await else {
                    return Vec::new();
                };
                let content = match content.for_delivery().await {
                    Ok(c) => c,
                    Err(outcome) => return uniform(&idx, outcome),
                };
                let fallback = idx.clone();
                let c = Arc::clone(&ctx);
                let done = blocking(move || {
                    local::deliver(&c.directory, &c.maildir_root, &msg, &idx, &content)
                })
                .await;
                return done.unwrap_or_else(|| {
                    uniform(
                        &fallback,
                        Outcome::Transient("4.3.0 local delivery failed".into()),
                    )
                });
            }
            let rcpts: Vec<_> = idx
                .iter()
                .filter_map(|&i| msg.recipients.get(i).map(|r| (i, &r.recipient)))
                .collect();
            ctx.remote
                .deliver(&dest, &msg.envelope, &rcpts, &content)
                .await
        }));
        by_task.insert(handle.id(), group);
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, reports)) => out.extend(reports),
            Err(e) => {
                tracing::error!(queue_id = %msg.id, error = %e, "delivery task failed");
                // Its recipients are retried on the schedule, not at once.
                if let Some(group) = by_task.get(&e.id()) {
                    out.extend(uniform(
                        group,
                        Outcome::Transient("4.3.0 delivery task failed".into()),
                    ));
                }
            }
        }
    }
    out
}

fn uniform(due: &[usize], outcome: Outcome) -> Vec<(usize, RcptReport)> {
    due.iter()
        .map(|&i| (i, RcptReport::from(outcome.clone())))
        .collect()
}

/// Writes the reports into the recipients' states.
fn apply(
    msg: &mut QueuedMessage,
    reports: &[(usize, RcptReport)],
    schedule: &RetrySchedule,
    now: u64,
) {
    let expired = schedule.expired(msg.arrived_at, now);
    let id = msg.id.clone();
    for (i, report) in reports {
        let Some(r) = msg.recipients.get_mut(*i) else {
            continue;
        };
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
        let outcome = match &report.outcome {
            Outcome::Transient(_) if expired => "expired",
            o => o.label(),
        };
        corvid_types::metrics::observer().delivery(outcome, route);
        match &report.outcome {
            Outcome::Delivered => {
                r.status = RecipientStatus::Delivered;
                r.success_report = report.success;
                r.last_reply = Some(
                    report
                        .detail
                        .clone()
                        .unwrap_or_else(|| "2.0.0 delivered".into()),
                );
                tracing::info!(queue_id = %id, rcpt = %rcpt, route, outcome = "delivered",
                    reply = r.last_reply.as_deref().unwrap_or(""), tls, "recipient done");
            }
            Outcome::Transient(reason) if expired => {
                // RFC 3463 X.4.7: delivery time expired.
                r.status = RecipientStatus::Failed;
                r.last_reply = Some(format!("4.4.7 expired in queue, last error: {reason}"));
                tracing::warn!(queue_id = %id, rcpt = %rcpt, route, outcome = "expired",
                    reason = %reason, "giving up on recipient");
            }
            Outcome::Transient(reason) => {
                r.next_attempt = schedule.next_attempt_at(r.attempts, now);
                r.last_reply = Some(reason.clone());
                tracing::info!(queue_id = %id, rcpt = %rcpt, route, outcome = "deferred",
                    reason = %reason, tls, attempts = r.attempts, next_attempt = r.next_attempt,
                    "recipient deferred");
            }
            Outcome::Permanent(reason) => {
                r.status = RecipientStatus::Failed;
                r.last_reply = Some(reason.clone());
                tracing::warn!(queue_id = %id, rcpt = %rcpt, route, outcome = "failed",
                    reason = %reason, tls, "recipient failed");
            }
        }
    }
}
