//! The `TLS-Required: No` header field (RFC 8689 3, 4.2.2).
//!
//! A sender that marks a message `TLS-Required: No` asks that the recipient domain's TLS
//! policy (MTA-STS here; DANE when there is one) not stop its delivery: the message goes out
//! as opportunistic TLS would send it (STARTTLS when offered, any certificate, clear text when
//! the handshake fails). What the administrator configured (a route's `tls`, a smart host
//! with credentials) still holds: the field speaks only about recipient-side policy.
//! A message with the REQUIRETLS MAIL parameter ignores the field (RFC 8689 4.1); it is
//! relayed unchanged, which the RFC allows.

/// Whether the header section of `content` has a `TLS-Required` field whose value is `No`
/// (case-insensitive, RFC 8689 3; folding and surrounding white space allowed). Any other
/// value is not the option the RFC defines and is ignored.
pub(crate) fn tls_optional(content: &[u8]) -> bool {
    let mut field: Option<Vec<u8>> = None;
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            // A folded continuation of the field before (RFC 5322 2.2.3).
            if let Some(f) = field.as_mut() {
                f.extend_from_slice(line);
            }
            continue;
        }
        if field.take().is_some_and(|v| says_no(&v)) {
            return true;
        }
        if line.is_empty() {
            // The end of the header section (RFC 5322 2.1).
            return false;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon]
            .trim_ascii_end()
            .eq_ignore_ascii_case(b"TLS-Required")
        {
            field = Some(line[colon + 1..].to_vec());
        }
    }
    field.is_some_and(|v| says_no(&v))
}

fn says_no(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"No")
}

#[cfg(test)]
mod tests {
    use super::tls_optional;

    #[test]
    fn the_field_is_found_in_the_header_section_only() {
        for yes in [
            &b"TLS-Required: No\r\n\r\nbody"[..],
            b"Subject: a\r\ntls-required:no\r\n\r\n",
            b"Subject: a\r\nTLS-Required:\r\n   NO  \r\nX: y\r\n\r\n",
            b"TLS-Required : No",
        ] {
            assert!(tls_optional(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"Subject: a\r\n\r\nTLS-Required: No\r\n"[..],
            b"TLS-Required: Yes\r\n\r\n",
            b"TLS-Required: No thanks\r\n\r\n",
            b"X-TLS-Required: No\r\n\r\n",
            b"Subject: TLS-Required: No\r\n\r\n",
            b"",
        ] {
            assert!(!tls_optional(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
