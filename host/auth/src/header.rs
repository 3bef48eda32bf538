//! `Authentication-Results:` (RFC 8601): writing ours, and removing forged ones that claim
//! our authserv-id (section 5: "MUST ... remove or rename" such fields before delivery).

use crate::results::AuthResults;

/// The complete header field, `Authentication-Results: ...\r\n`, folded one method per line.
/// Peer-supplied text (domains, addresses, reasons) is sanitised so that it can neither
/// break the field nor start a new one. Written into one buffer: it is built for every
/// checked message.
pub fn authentication_results(authserv_id: &str, r: &AuthResults) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("Authentication-Results: ");
    push_value(&mut out, authserv_id);
    if let Some(spf) = &r.spf {
        method(&mut out, "spf", spf.result.as_str());
        match spf.identity {
            crate::SpfIdentity::Mailfrom => property(&mut out, "smtp.mailfrom", &spf.mail_from),
            crate::SpfIdentity::Helo => property(&mut out, "smtp.helo", &spf.helo),
        }
    }
    for d in &r.dkim {
        method(&mut out, "dkim", d.result.as_str());
        if let Some(reason) = &d.reason {
            out.push(' ');
            push_comment(&mut out, reason);
        }
        if !d.domain.is_empty() {
            property(&mut out, "header.d", &d.domain);
            property(&mut out, "header.s", &d.selector);
            if !d.algorithm.is_empty() {
                property(&mut out, "header.a", &d.algorithm);
            }
            if !d.header_b.is_empty() {
                property(&mut out, "header.b", &d.header_b);
            }
        }
    }
    if r.dkim.is_empty() {
        method(&mut out, "dkim", "none");
    }
    let dm = &r.dmarc;
    method(&mut out, "dmarc", dm.result.as_str());
    if !dm.from_domain.is_empty() {
        out.push_str(" (p=");
        out.push_str(dm.policy.as_str());
        out.push_str(" pct=");
        out.push_str(&dm.pct.to_string());
        out.push(')');
        property(&mut out, "header.from", &dm.from_domain);
    }
    method(&mut out, "arc", r.arc.result.as_str());
    out.push_str("\r\n");
    out
}

/// `;` and a fold before each method (one per line), then `method=result`.
fn method(out: &mut String, name: &str, result: &str) {
    out.push_str(";\r\n\t");
    out.push_str(name);
    out.push('=');
    out.push_str(result);
}

/// ` ptype.property=value`.
fn property(out: &mut String, name: &str, v: &str) {
    out.push(' ');
    out.push_str(name);
    out.push('=');
    push_value(out, v);
}

/// A `value` (RFC 8601 section 2.2: token, or a quoted-string; addresses as addr-spec):
/// plain text stays, anything else is quoted; control characters are dropped.
fn push_value(out: &mut String, s: &str) {
    let plain_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-./=?^_`{|}~@".contains(c);
    let clean = s.chars().filter(|c| !c.is_control());
    let plain = clean.clone().next().is_some() && clean.clone().all(plain_char);
    if plain {
        out.extend(clean);
        return;
    }
    out.push('"');
    for c in clean {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A comment (RFC 5322 section 3.2.2) of printable text without parentheses or backslashes.
fn push_comment(out: &mut String, s: &str) {
    out.push('(');
    out.extend(
        s.chars()
            .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\'))
            .take(200),
    );
    out.push(')');
}

/// Removes every `Authentication-Results:` field whose authserv-id is `authserv_id`
/// (compared case-insensitively) from `header_section` (the header fields, CRLF or LF line
/// ends, with or without the empty line after them). Other fields, and other authserv-ids,
/// are kept byte for byte.
pub fn strip_authentication_results(header_section: &[u8], authserv_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_section.len());
    strip_authentication_results_into(header_section, authserv_id, &mut out);
    out
}

/// [`strip_authentication_results`] appending to `out`, without a copy of its own.
pub fn strip_authentication_results_into(
    header_section: &[u8],
    authserv_id: &str,
    out: &mut Vec<u8>,
) {
    for f in fields(header_section) {
        if !is_ours(f, authserv_id) {
            out.extend_from_slice(f);
        }
    }
}

/// Whether `header_section` has an `Authentication-Results:` field with `authserv_id`.
pub fn has_authentication_results(header_section: &[u8], authserv_id: &str) -> bool {
    fields(header_section).any(|f| is_ours(f, authserv_id))
}

/// The header fields, each a line plus its continuation lines (RFC 5322 section 2.2.3,
/// folding), line ends included.
fn fields(header_section: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let rest = header_section.get(start..).filter(|r| !r.is_empty())?;
        let mut i = 0;
        let end = loop {
            match rest[i..].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    i += nl + 1;
                    if !matches!(rest.get(i), Some(b' ' | b'\t')) {
                        break i;
                    }
                }
                None => break rest.len(),
            }
        };
        start += end;
        Some(&rest[..end])
    })
}

fn is_ours(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &field[..colon];
    if !name
        .trim_ascii()
        .eq_ignore_ascii_case(b"Authentication-Results")
    {
        return false;
    }
    let v = &field[colon + 1..];
    // Skip CFWS: whitespace and (nested) comments before the authserv-id.
    let mut i = 0;
    let mut depth = 0usize;
    while i < v.len() {
        match v[i] {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let rest = &v[i.min(v.len())..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
        .unwrap_or(rest.len());
    let id = &rest[..end];
    let id = id.strip_prefix(b"\"").unwrap_or(id);
    let id = id.strip_suffix(b"\"").unwrap_or(id);
    !id.is_empty() && id.eq_ignore_ascii_case(authserv_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::*;

    #[test]
    fn strips_only_our_authserv_id_including_folded_and_commented_fields() {
        let h = b"Received: by x\r\nAuthentication-Results: mx.corvid.test;\r\n\tspf=pass smtp.mailfrom=a@b\r\nauthentication-results: (forged) MX.Corvid.Test; dkim=pass\r\nAuthentication-Results: mx.other.test; spf=fail\r\nSubject: hi\r\n\r\n";
        let out = strip_authentication_results(h, "mx.corvid.test");
        let s = String::from_utf8(out).expect("utf8");
        assert_eq!(
            s,
            "Received: by x\r\nAuthentication-Results: mx.other.test; spf=fail\r\nSubject: hi\r\n\r\n"
        );
        // A prefix of our id is somebody else's.
        let h2 = b"Authentication-Results: mx.corvid.test.evil; none\n";
        assert_eq!(
            strip_authentication_results(h2, "mx.corvid.test"),
            h2.to_vec()
        );
        assert!(has_authentication_results(h, "mx.corvid.test"));
        assert!(!has_authentication_results(h2, "mx.corvid.test"));
        // The last field without a line end, folded fields kept whole.
        let h3 = b"Subject: a\r\n b\r\nAuthentication-Results: mx.corvid.test; x";
        assert!(has_authentication_results(h3, "MX.corvid.test"));
        assert_eq!(
            strip_authentication_results(h3, "mx.corvid.test"),
            b"Subject: a\r\n b\r\n".to_vec()
        );
        let mut out = b"X: 1\r\n".to_vec();
        strip_authentication_results_into(h, "mx.corvid.test", &mut out);
        assert_eq!(
            out,
            b"X: 1\r\nReceived: by x\r\nAuthentication-Results: mx.other.test; spf=fail\r\nSubject: hi\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn header_quotes_hostile_values_and_cannot_be_split() {
        let r = AuthResults {
            spf: Some(SpfCheck {
                result: SpfVerdict::Pass,
                identity: SpfIdentity::Mailfrom,
                domain: "b.test".into(),
                mail_from: "\"x;\r\nBcc: y\"@b.test".into(),
                helo: "h".into(),
                client_ip: "192.0.2.1".parse().expect("ip"),
                explanation: None,
            }),
            dkim: vec![],
            dmarc: DmarcCheck {
                result: DmarcVerdict::None,
                from_domain: String::new(),
                policy: DmarcPolicy::None,
                pct: 100,
                spf_aligned: false,
                dkim_aligned: false,
                reason: None,
            },
            arc: ArcCheck {
                result: ArcVerdict::None,
                sets: 0,
                reason: None,
            },
        };
        let h = authentication_results("mx.corvid.test", &r);
        assert!(h.starts_with("Authentication-Results: mx.corvid.test;\r\n\tspf=pass smtp.mailfrom=\"\\\"x;Bcc: y\\\"@b.test\""), "{h}");
        assert!(
            h.contains("\tdkim=none;\r\n\tdmarc=none;\r\n\tarc=none\r\n"),
            "{h}"
        );
        // Every line break is a fold (CRLF + tab), except the last.
        assert_eq!(h.matches("\r\n").count(), h.matches("\r\n\t").count() + 1);
    }
}
