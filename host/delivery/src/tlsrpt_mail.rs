//! Mailing the TLS-RPT aggregate reports (RFC 8460 5.3): once per period (a day by default),
//! for each policy domain counted that publishes `_smtp._tls` with a `mailto:` `rua` (3), a
//! `multipart/report; report-type="tlsrpt"` message with the gzip-compressed JSON report is
//! queued through the intake, from `<>` like other reports, so it is delivered and retried as
//! any mail. `https:` reporting addresses are not used (not implemented).

use crate::remote::Remote;
use crate::tlsrpt::{gzip, now_secs, report, DomainCounts, ReportMeta};
use base64::Engine as _;
use corvid_types::{Address, Envelope, Intake, Recipient};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`: every `period`, reports what was counted during it.
/// `submitter` is this MTA's name (the reports' `organization-name` and `From:` domain).
pub(crate) async fn run(
    remote: Arc<Remote>,
    submitter: String,
    intake: Arc<dyn Intake>,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut start = now_secs();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let end = now_secs();
        let counts = remote.tls_counters.take();
        for (domain, c) in counts {
            // Counts kept across a restart predate this process's first period.
            let from = match c.since {
                0 => start,
                since => start.min(since),
            };
            send(&remote, &submitter, intake.as_ref(), &domain, &c, from, end).await;
        }
        start = end;
    }
}

/// The `mailto:` addresses of a `_smtp._tls` record (RFC 8460 3: `v=TLSRPTv1; rua=...`,
/// several URIs separated by commas).
pub fn mailto_rua(records: &[String]) -> Vec<Address> {
    let rpt: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("v=TLSRPTv1"))
        .collect();
    // RFC 8460 3: more than one record (or none) is no record.
    let [record] = rpt.as_slice() else {
        return Vec::new();
    };
    record
        .split(';')
        .filter_map(|f| f.trim().strip_prefix("rua="))
        .flat_map(|v| v.split(','))
        .filter_map(|uri| uri.trim().strip_prefix("mailto:"))
        .filter_map(|addr| {
            let (local, domain) = addr.rsplit_once('@')?;
            let ok = !local.is_empty()
                && !domain.is_empty()
                && addr
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
            ok.then(|| Address::new(local, domain))
        })
        .collect()
}

async fn send(
    remote: &Remote,
    submitter: &str,
    intake: &dyn Intake,
    domain: &str,
    c: &DomainCounts,
    start: u64,
    end: u64,
) {
    let Ok(dns) = remote.dns() else { return };
    let records = match dns.txt(&format!("_smtp._tls.{domain}")).await {
        Ok(r) => r,
        Err(_) => return,
    };
    let rua = mailto_rua(&records);
    if rua.is_empty() {
        return;
    }
    let stamp = |t: u64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let report_id = format!("{}_{domain}@{submitter}", stamp(start));
    let contact = format!("postmaster@{submitter}");
    let meta = ReportMeta {
        organization: submitter,
        contact: &contact,
        report_id: &report_id,
        start: &stamp(start),
        end: &stamp(end),
    };
    let json = report(&meta, domain, c);
    let Ok(zipped) = gzip(&json) else { return };
    for to in rua {
        let id = intake.next_id();
        let content = compose(submitter, domain, &report_id, &to, &zipped, start, end);
        let envelope = Envelope {
            sender: None,
            recipients: vec![Recipient {
                address: to.clone(),
                params: Default::default(),
            }],
            ..Envelope::default()
        };
        match intake.submit(&id, &envelope, &content).await {
            Ok(()) => tracing::info!(queue_id = %id, domain, to = %to, successes = c.success,
                failures = c.failure, "TLS-RPT report queued"),
            Err(e) => tracing::warn!(domain, error = %e, "cannot queue the TLS-RPT report"),
        }
    }
}

/// The report message (RFC 8460 5.3): the subject and `TLS-Report-*` fields, a short text
/// part, and the report as `application/tlsrpt+gzip` named as 5.1 says.
fn compose(
    submitter: &str,
    domain: &str,
    report_id: &str,
    to: &Address,
    zipped: &[u8],
    start: u64,
    end: u64,
) -> Vec<u8> {
    let boundary = format!("tlsrpt-{start}-{end}");
    let date = chrono::Utc::now().to_rfc2822();
    let b64 = base64::engine::general_purpose::STANDARD.encode(zipped);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let filename = format!("{submitter}!{domain}!{start}!{end}.json.gz");
    format!(
        "From: <postmaster@{submitter}>\r\nTo: <{to}>\r\nDate: {date}\r\n\
         Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>\r\n\
         TLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {submitter}\r\n\
         Message-ID: <{report_id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         This is an aggregate TLS report from {submitter} for {domain}.\r\n\r\n\
         --{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n{}\r\n--{boundary}--\r\n",
        body.join("\r\n")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rua_addresses() {
        let r = |s: &[&str]| {
            mailto_rua(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            r(&["v=TLSRPTv1; rua=mailto:a@x.test,https://r.test/x, mailto:b@y.test"]),
            vec!["a@x.test", "b@y.test"]
        );
        assert!(r(&[
            "v=TLSRPTv1; rua=mailto:a@x.test",
            "v=TLSRPTv1; rua=mailto:b@x.test"
        ])
        .is_empty());
        assert!(r(&["v=spf1 -all"]).is_empty());
        assert!(r(&["v=TLSRPTv1; rua=mailto:<evil>@x.test"]).is_empty());
    }
}
