//! Delivery status notifications (RFC 3464, RFC 3461): which recipients need one, and the
//! `multipart/report` message itself.
//!
//! Rules (RFC 3461 5 and RFC 5321 6.1 / 4.5.5):
//! - never to the null reverse-path `<>` (a DSN is itself sent from `<>`, so two MTAs cannot
//!   bounce a message back and forth);
//! - `NOTIFY=NEVER` gets nothing; a `NOTIFY=` list gets only the conditions it names; without
//!   `NOTIFY`, failures are reported and delays and successes are not (as Postfix);
//! - a success is reported as `delivered` after final delivery here, as `relayed` after a
//!   hand-off to a next hop without DSN, and not at all when the next hop took the DSN
//!   parameters (it reports from then on, RFC 3461 5.2.2);
//! - one report lists every recipient that needs one at that moment, so a message whose
//!   recipients all fail in one attempt produces exactly one DSN;
//! - never about a report (a `multipart/report` delivery status), whatever its sender;
//! - success reports only for the origins [`DsnPolicy`] trusts, and never more of the
//!   original than its header section (at most 64 KiB), except the whole message in a failure
//!   report when it is small enough (`dsn.max_return_size`): see [`policy`].

use crate::dsn_text::{header_section, human_text, orcpt_field, rfc5322_date};
use crate::{unix_secs, QueuedMessage, RecipientState, RecipientStatus, SuccessReport};
use corvid_types::{Address, BodyType, Envelope, MailParams, RcptParams, Recipient, Ret};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

pub mod policy;
pub use policy::{is_delivery_report, DsnPolicy, NotifySuccessFrom, MAX_RETURNED_HEADERS};

/// RFC 3464 2.3.3 `Action` values Corvid reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    Delayed,
    Delivered,
    Relayed,
}

impl DsnAction {
    fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
        }
    }

    /// The class digit of the `Status:` when the recipient's reply gives none (RFC 3463 3.1).
    fn class(self) -> char {
        match self {
            DsnAction::Failed => '5',
            DsnAction::Delayed => '4',
            DsnAction::Delivered | DsnAction::Relayed => '2',
        }
    }
}

/// One notification to compose: the recipients (indexes into `QueuedMessage::recipients`)
/// and what happened to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnReport {
    pub action: DsnAction,
    pub recipients: Vec<usize>,
}

/// Whether `rcpt` asked to be told about `action` (RFC 3461 4.1).
pub fn notify_wants(rcpt: &RecipientState, action: DsnAction) -> bool {
    match (&rcpt.recipient.params.notify, action) {
        (Some(n), _) if n.never => false,
        (Some(n), DsnAction::Failed) => n.failure,
        (Some(n), DsnAction::Delayed) => n.delay,
        (Some(n), DsnAction::Delivered | DsnAction::Relayed) => n.success,
        (None, DsnAction::Failed) => true,
        (None, _) => false,
    }
}

/// Every report the sender asked for, before the origin policy: a superset of
/// [`due_reports_with`] under any [`DsnPolicy`], for a quick "is anything to report?" check.
pub fn due_reports(
    msg: &QueuedMessage,
    now: u64,
    delay_warning: Option<Duration>,
) -> Vec<DsnReport> {
    let anyone = DsnPolicy {
        notify_success_from: NotifySuccessFrom::Anyone,
        ..DsnPolicy::default()
    };
    due_reports_with(msg, now, delay_warning, &anyone)
}

/// The reports due for `msg` at `now`: failures and successes not yet reported, and delay
/// warnings for recipients still pending after `delay_warning` (when set). Nothing for the
/// null sender or a message that is itself a report; successes only when `policy` allows
/// them for the message's origin.
pub fn due_reports_with(
    msg: &QueuedMessage,
    now: u64,
    delay_warning: Option<Duration>,
    policy: &DsnPolicy,
) -> Vec<DsnReport> {
    if msg.envelope.sender.is_none() || msg.is_report {
        return Vec::new();
    }
    let successes = policy.success_allowed(msg.trusted_client);
    let pick = |f: &dyn Fn(&RecipientState) -> bool, action| DsnReport {
        action,
        recipients: (0..msg.recipients.len())
            .filter(|&i| f(&msg.recipients[i]) && notify_wants(&msg.recipients[i], action))
            .collect(),
    };
    let failed = pick(
        &|r| r.status == RecipientStatus::Failed && !r.reported && !r.dsn_suppressed,
        DsnAction::Failed,
    );
    let late = delay_warning.is_some_and(|d| now.saturating_sub(msg.arrived_at) >= d.as_secs());
    let delayed = pick(
        &|r| late && r.is_pending() && r.attempts > 0 && !r.delay_notified,
        DsnAction::Delayed,
    );
    let success = |kind: SuccessReport| {
        move |r: &RecipientState| {
            successes
                && r.status == RecipientStatus::Delivered
                && !r.reported
                && !r.dsn_suppressed
                && r.success_report == kind
        }
    };
    let delivered = pick(&success(SuccessReport::Delivered), DsnAction::Delivered);
    let relayed = pick(&success(SuccessReport::Relayed), DsnAction::Relayed);
    [failed, delayed, delivered, relayed]
        .into_iter()
        .filter(|r| !r.recipients.is_empty())
        .collect()
}

/// Marks what `due_reports` would report again as done: every failed or delivered recipient
/// (reported or not wanted) and the recipients of the delay reports. Call after the DSNs were
/// queued.
pub fn mark_reported(msg: &mut QueuedMessage, reports: &[DsnReport]) {
    for r in msg.recipients.iter_mut().filter(|r| !r.dsn_suppressed) {
        if matches!(
            r.status,
            RecipientStatus::Failed | RecipientStatus::Delivered
        ) {
            r.reported = true;
        }
    }
    for report in reports.iter().filter(|r| r.action == DsnAction::Delayed) {
        for &i in &report.recipients {
            if let Some(r) = msg.recipients.get_mut(i) {
                r.delay_notified = true;
            }
        }
    }
}

/// Who sends the report and when the queue gives up (for `Will-Retry-Until:`).
#[derive(Clone, Debug)]
pub struct DsnContext<'a> {
    /// The host name of this MTA (`Reporting-MTA: dns; <name>`, the `From:` domain).
    pub reporting_mta: &'a str,
    /// A unique id for the new message (its queue id), used in `Message-ID:`.
    pub dsn_id: &'a str,
    pub now: SystemTime,
    /// Unix seconds at which pending recipients will fail.
    pub retry_until: Option<u64>,
    /// How much goes back, and who gets success reports.
    pub policy: DsnPolicy,
}

/// The envelope and content of the DSN for `report`, or `None` when no report may be sent:
/// the message's sender is `<>`, the message is itself a report, or it is a success report
/// the policy refuses for the message's origin. The envelope's sender is `<>` (RFC 3461 6.2,
/// RFC 5321 4.5.5).
pub fn compose(
    msg: &QueuedMessage,
    original: &[u8],
    report: &DsnReport,
    ctx: &DsnContext<'_>,
) -> Option<(Envelope, Vec<u8>)> {
    let to = msg.envelope.sender.clone()?;
    let success = matches!(report.action, DsnAction::Delivered | DsnAction::Relayed);
    if success && !ctx.policy.success_allowed(msg.trusted_client) {
        tracing::info!(queue_id = %msg.id, "no success report: the client is not trusted (dsn.notify_success_from)");
        return None;
    }
    if msg.is_report || is_delivery_report(original) {
        tracing::info!(queue_id = %msg.id, "no report about a delivery report");
        return None;
    }
    let rcpts: Vec<&RecipientState> = report
        .recipients
        .iter()
        .filter_map(|&i| msg.recipients.get(i))
        .collect();
    let returned = returned_part(msg, original, report.action, &ctx.policy);
    let boundary = boundary(ctx.dsn_id);
    let utf8 = to.is_utf8() || rcpts.iter().any(|r| r.recipient.address.is_utf8());
    let mut out = String::new();
    top_headers(&mut out, &to, report.action, ctx, &boundary);
    let _ = write!(
        out,
        "This is a MIME-encapsulated message.\r\n\r\n--{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n--{boundary}\r\n",
        human_text(ctx.reporting_mta, report.action, &rcpts),
    );
    status_part(&mut out, msg, &rcpts, report.action, ctx, utf8);
    let mut content = out.into_bytes();
    let (kind, desc, body) = returned;
    content.extend_from_slice(
        format!("--{boundary}\r\nContent-Description: {desc}\r\nContent-Type: {kind}\r\n\r\n")
            .as_bytes(),
    );
    content.extend_from_slice(body);
    if !body.ends_with(b"\r\n") {
        content.extend_from_slice(b"\r\n");
    }
    content.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let envelope = Envelope {
        sender: None,
        params: MailParams {
            body: if content.is_ascii() {
                BodyType::SevenBit
            } else {
                BodyType::EightBitMime
            },
            smtputf8: utf8,
            ..MailParams::default()
        },
        recipients: vec![Recipient {
            address: to,
            params: RcptParams::default(),
        }],
    };
    Some((envelope, content))
}

fn top_headers(
    out: &mut String,
    to: &Address,
    action: DsnAction,
    ctx: &DsnContext<'_>,
    boundary: &str,
) {
    let subject = match action {
        DsnAction::Failed => "Undelivered Mail Returned to Sender",
        DsnAction::Delayed => "Delayed Mail (still being retried)",
        DsnAction::Delivered | DsnAction::Relayed => "Successful Mail Delivery Report",
    };
    let host = ctx.reporting_mta;
    let _ = write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {}\r\n\
         Message-ID: <{}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\r\n",
        rfc5322_date(unix_secs(ctx.now)),
        ctx.dsn_id,
    );
}

/// The `message/delivery-status` part (RFC 3464 2.2 and 2.3), or `message/global-delivery-status`
/// when an address is UTF-8 (RFC 6533 6).
fn status_part(
    out: &mut String,
    msg: &QueuedMessage,
    rcpts: &[&RecipientState],
    action: DsnAction,
    ctx: &DsnContext<'_>,
    utf8: bool,
) {
    let kind = if utf8 {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    let _ = write!(
        out,
        "Content-Description: Delivery report\r\nContent-Type: {kind}\r\n\r\n\
         Reporting-MTA: dns; {}\r\nX-Corvid-Queue-ID: {}\r\n",
        ctx.reporting_mta, msg.id
    );
    if let Some(envid) = &msg.envelope.params.envid {
        let _ = write!(out, "Original-Envelope-Id: {envid}\r\n");
    }
    let _ = write!(out, "Arrival-Date: {}\r\n", rfc5322_date(msg.arrived_at));
    for r in rcpts {
        let addr = &r.recipient.address;
        let addr_type = if addr.is_utf8() { "utf-8" } else { "rfc822" };
        let _ = write!(out, "\r\nFinal-Recipient: {addr_type}; {addr}\r\n");
        if let Some(orcpt) = r.recipient.params.orcpt.as_deref().and_then(orcpt_field) {
            let _ = write!(out, "Original-Recipient: {orcpt}\r\n");
        }
        let _ = write!(
            out,
            "Action: {}\r\nStatus: {}\r\n",
            action.as_str(),
            status_code(r, action)
        );
        if let Some(mta) = &r.remote_mta {
            let _ = write!(out, "Remote-MTA: dns; {mta}\r\n");
        }
        match (&r.diagnostic, &r.last_reply) {
            (Some(d), _) => {
                let _ = write!(out, "Diagnostic-Code: {d}\r\n");
            }
            (None, Some(text)) => {
                let _ = write!(out, "Diagnostic-Code: x-corvid; {text}\r\n");
            }
            (None, None) => {}
        }
        if r.attempts > 0 {
            let _ = write!(
                out,
                "Last-Attempt-Date: {}\r\n",
                rfc5322_date(unix_secs(ctx.now))
            );
        }
        if let (DsnAction::Delayed, Some(until)) = (action, ctx.retry_until) {
            let _ = write!(out, "Will-Retry-Until: {}\r\n", rfc5322_date(until));
        }
    }
    out.push_str("\r\n");
}

/// RFC 3464 2.3.4: the recipient's enhanced status code, taken from the front of its last
/// reply; failing that, the generic `5.0.0` or `4.0.0` (RFC 3463 3.1).
fn status_code(r: &RecipientState, action: DsnAction) -> String {
    let class = action.class();
    let parsed = r
        .last_reply
        .as_deref()
        .and_then(|t| t.split(' ').next())
        .and_then(corvid_types::EnhancedCode::parse);
    match parsed {
        // A give-up after 4xx replies keeps the 4.x.x of the last reply, as Postfix does.
        Some(code) if (code.0 == 2) == (class == '2') => code.to_string(),
        _ => format!("{class}.0.0"),
    }
}

/// What goes back of the original (RFC 3461 4.3 `RET`, RFC 3462 `text/rfc822-headers`): the
/// whole message for a failure when `RET=FULL` or unspecified and it is at most
/// `max_return_size`; otherwise (and always for delays and successes, as Postfix) the header
/// section, at most [`MAX_RETURNED_HEADERS`] cut on a line boundary.
fn returned_part<'a>(
    msg: &QueuedMessage,
    original: &'a [u8],
    action: DsnAction,
    policy: &DsnPolicy,
) -> (&'static str, &'static str, &'a [u8]) {
    let full = action == DsnAction::Failed
        && msg.envelope.params.ret != Some(Ret::Headers)
        && original.len() <= policy.max_return_size;
    let headers = || policy::capped(header_section(original));
    let global = !original.is_ascii() && msg.envelope.params.smtputf8;
    match (full, global) {
        (true, false) => ("message/rfc822", "Undelivered Message", original),
        (true, true) => ("message/global", "Undelivered Message", original),
        (false, false) => ("text/rfc822-headers", "Message Headers", headers()),
        (false, true) => ("message/global-headers", "Message Headers", headers()),
    }
}

/// A MIME boundary that cannot occur in the parts: it contains the new message's unique id and
/// random digits (RFC 2046 5.1.1).
fn boundary(dsn_id: &str) -> String {
    format!("=_corvid_{}_{:016x}", dsn_id, rand::random::<u64>())
}

#[cfg(test)]
mod reflection_tests;
#[cfg(test)]
mod tests;
