//! Telling the sender: DSNs composed by the queue ([`corvid_queue::dsn`]) and queued as new
//! messages through [`corvid_types::Intake`], from `<>`.

use crate::content::LazyContent;
use corvid_queue::dsn::{self, DsnContext};
use corvid_queue::{QueuedMessage, Spool};
use corvid_types::Intake;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What sending DSNs needs, and nothing else of an attempt.
pub(crate) struct Notifier {
    /// Where DSNs are queued; without one, failures are only logged.
    pub(crate) intake: Option<Arc<dyn Intake>>,
    /// This MTA's name (`Reporting-MTA:`).
    pub(crate) hostname: String,
    /// The queue's give-up age (`Retry-Until:` of delay warnings).
    pub(crate) max_age: Duration,
    pub(crate) delay_warning: Option<Duration>,
    /// Whose `[dsn]` limits apply ([`Spool::dsn_policy`]).
    pub(crate) spool: Arc<dyn Spool>,
}

/// How long a message waits before queueing a DSN is tried again after the intake refused it
/// (a full or failing queue store).
const DSN_RETRY: Duration = Duration::from_secs(300);

/// Queues the DSNs due for `msg` and marks its recipients as reported (also when nothing is
/// due: what needs no report is never looked at again). The original content is read only
/// when a DSN is due (it may return it). A DSN is durably
/// queued before the marks are written, so a crash in between sends it twice, never not at
/// all. When queueing fails the marks are not set and `msg.dsn_retry_at` keeps the message in
/// the queue, due again after [`DSN_RETRY`] for the reports alone.
pub(crate) async fn send_reports(
    ctx: &Notifier,
    msg: &mut QueuedMessage,
    original: &LazyContent,
    now: u64,
) {
    let policy = ctx.spool.dsn_policy();
    let reports = dsn::due_reports_with(msg, now, ctx.delay_warning, &policy);
    let Some(intake) = &ctx.intake else {
        if !reports.is_empty() {
            tracing::warn!(queue_id = %msg.id, "no intake for DSNs; the sender is not notified");
        }
        dsn::mark_reported(msg, &reports);
        msg.dsn_retry_at = None;
        return;
    };
    if reports.is_empty() {
        msg.dsn_retry_at = None;
        return dsn::mark_reported(msg, &reports);
    }
    // A message whose content cannot be read gets its DSN without the content.
    let original = original.get().await.unwrap_or_default();
    let retry_until = msg.arrived_at.saturating_add(ctx.max_age.as_secs());
    for report in &reports {
        let dsn_id = intake.next_id();
        let dctx = DsnContext {
            reporting_mta: &ctx.hostname,
            dsn_id: &dsn_id.0,
            now: SystemTime::now(),
            retry_until: Some(retry_until),
            policy,
        };
        let Some((envelope, content)) = dsn::compose(msg, &original, report, &dctx) else {
            continue;
        };
        match intake.submit(&dsn_id, &envelope, &content).await {
            Ok(()) => tracing::info!(queue_id = %msg.id, dsn_id = %dsn_id,
                action = ?report.action, recipients = report.recipients.len(),
                to = %envelope.recipients[0].address, "DSN queued"),
            Err(e) => {
                msg.dsn_retry_at = Some(now.saturating_add(DSN_RETRY.as_secs()));
                return tracing::error!(queue_id = %msg.id, error = %e,
                    retry_in_s = DSN_RETRY.as_secs(), "cannot queue the DSN; the message stays queued to try again");
            }
        }
    }
    dsn::mark_reported(msg, &reports);
    msg.dsn_retry_at = None;
}
