//! What keeps a DSN from being a reflector: a client can forge `MAIL FROM`, so whatever a
//! report carries goes to an address nobody checked. Corvid returns little, reports successes
//! only to the clients it trusts, and never reports about a report.

use serde::Deserialize;

/// Most of the original's header section any report carries (RFC 3462 `text/rfc822-headers`);
/// cut after the last whole line that fits.
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// Who may ask for success reports (RFC 3461 4.1 `NOTIFY=SUCCESS`): `dsn.notify_success_from`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifySuccessFrom {
    /// Clients that authenticated (SMTP AUTH) or connected from a relay network.
    #[default]
    Trusted,
    Anyone,
    Nobody,
}

/// The `[dsn]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DsnPolicy {
    pub notify_success_from: NotifySuccessFrom,
    /// Largest original (octets) a failure report returns whole; a bigger one, and every other
    /// report, returns the header section only (Postfix's `bounce_size_limit`, 50 000).
    pub max_return_size: usize,
}

impl Default for DsnPolicy {
    fn default() -> Self {
        DsnPolicy {
            notify_success_from: NotifySuccessFrom::Trusted,
            max_return_size: 50_000,
        }
    }
}

impl DsnPolicy {
    /// Whether a message from a client of that standing may get success reports.
    pub fn success_allowed(&self, trusted_client: bool) -> bool {
        match self.notify_success_from {
            NotifySuccessFrom::Anyone => true,
            NotifySuccessFrom::Trusted => trusted_client,
            NotifySuccessFrom::Nobody => false,
        }
    }
}

/// `headers` (a header section) cut to [`MAX_RETURNED_HEADERS`] after the last CRLF that fits;
/// nothing when not even one line fits.
pub(crate) fn capped(headers: &[u8]) -> &[u8] {
    if headers.len() <= MAX_RETURNED_HEADERS {
        return headers;
    }
    let window = &headers[..MAX_RETURNED_HEADERS];
    match window.windows(2).rposition(|w| w == b"\r\n") {
        Some(i) => &headers[..i + 2],
        None => &[],
    }
}

/// Whether `content` is itself a delivery report: its top-level `Content-Type` is
/// `multipart/report` with `report-type=delivery-status` (RFC 3464 2, RFC 6522) or
/// `global-delivery-status` (RFC 6533 6). Such a message gets no report (RFC 3461 6.2 asks
/// this of the null sender; a report from a forged non-null sender gets the same treatment).
pub fn is_delivery_report(content: &[u8]) -> bool {
    let headers = corvid_types::MessageView { content }.header_section();
    let headers = capped(headers);
    let text = String::from_utf8_lossy(headers);
    let mut value: Option<String> = None;
    for line in text.split("\r\n") {
        match (&mut value, line.starts_with([' ', '\t'])) {
            (Some(v), true) => v.push_str(line),
            (Some(_), false) => break,
            (None, _) => {
                if let Some((name, rest)) = line.split_once(':') {
                    if name.trim().eq_ignore_ascii_case("content-type") {
                        value = Some(rest.to_string());
                    }
                }
            }
        }
    }
    let Some(value) = value else { return false };
    let value: String = value
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .collect();
    value.starts_with("multipart/report;")
        && value.split(';').any(|p| {
            p == "report-type=delivery-status" || p == "report-type=global-delivery-status"
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_cut_on_a_line_boundary() {
        let line = b"X-Pad: 0123456789012345678901234567890123456789\r\n";
        let big: Vec<u8> = line.repeat(2000);
        let cut = capped(&big);
        assert!(cut.len() <= MAX_RETURNED_HEADERS && cut.len() > MAX_RETURNED_HEADERS - 100);
        assert!(cut.ends_with(b"\r\n"));
        assert_eq!(cut.len() % line.len(), 0, "a whole number of lines");
        assert_eq!(capped(&vec![b'a'; 70_000]), b"", "no line fits");
        assert_eq!(capped(b"A: b\r\n\r\n"), b"A: b\r\n\r\n");
    }

    #[test]
    fn reports_are_recognised() {
        let dsn = b"From: x\r\nContent-Type: multipart/report;\r\n\treport-type=\"delivery-status\";\r\n boundary=x\r\n\r\nbody";
        assert!(is_delivery_report(dsn));
        let global = b"content-type: Multipart/Report; report-type=global-delivery-status\r\n\r\n";
        assert!(is_delivery_report(global));
        let mdn = b"Content-Type: multipart/report; report-type=disposition-notification\r\n\r\n";
        assert!(!is_delivery_report(mdn));
        assert!(!is_delivery_report(
            b"Subject: multipart/report\r\n\r\nreport-type=delivery-status"
        ));
        assert!(!is_delivery_report(b"Content-Type: text/plain\r\n\r\n"));
    }

    #[test]
    fn success_policy() {
        let mut p = DsnPolicy::default();
        assert!(p.success_allowed(true) && !p.success_allowed(false));
        p.notify_success_from = NotifySuccessFrom::Anyone;
        assert!(p.success_allowed(false));
        p.notify_success_from = NotifySuccessFrom::Nobody;
        assert!(!p.success_allowed(true));
    }
}
