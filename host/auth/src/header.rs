//! `Authentication-Results:` (RFC 8601): writing ours, and removing forged ones that claim
//! our authserv-id (section 5: "MUST ... remove or rename" such fields before delivery).

use crate::results::AuthResults;

/// The complete header field, `Authentication-Results: ...\r\n`, folded one method per line.
/// Peer-supplied text (domains, addresses, reasons) is sanitised so that it can neither
/// break the field nor start a new one.
pub fn authentication_results(authserv_id: &str, r: &AuthResults) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(spf) = &r.spf {
        let mut p = format!("spf={}", spf.result.as_str());
        match spf.identity {
            crate::SpfIdentity::Mailfrom => {
                p.push_str(&format!(" smtp.mailfrom={}", value(&spf.mail_from)));
            }
            crate::SpfIdentity::Helo => p.push_str(&format!(" smtp.helo={}", value(&spf.helo))),
        }
        parts.push(p);
    }
    for d in &r.dkim {
        let mut p = format!("dkim={}", d.result.as_str());
        if let Some(reason) = &d.reason {
            p.push_str(&format!(" {}", comment(reason)));
        }
        if !d.domain.is_empty() {
            p.push_str(&format!(" header.d={}", value(&d.domain)));
            p.push_str(&format!(" header.s={}", value(&d.selector)));
            if !d.algorithm.is_empty() {
                p.push_str(&format!(" header.a={}", value(&d.algorithm)));
            }
            if !d.header_b.is_empty() {
                p.push_str(&format!(" header.b={}", value(&d.header_b)));
            }
        }
        parts.push(p);
    }
    if r.dkim.is_empty() {
        parts.push("dkim=none".to_string());
    }
    let dm = &r.dmarc;
    let mut p = format!("dmarc={}", dm.result.as_str());
    if !dm.from_domain.is_empty() {
        p.push_str(&format!(
            " (p={} pct={}) header.from={}",
            dm.policy.as_str(),
            dm.pct,
            value(&dm.from_domain)
        ));
    }
    parts.push(p);
    parts.push(format!("arc={}", r.arc.result.as_str()));
    let mut out = format!("Authentication-Results: {}", value(authserv_id));
    for p in parts {
        out.push_str(";\r\n\t");
        out.push_str(&p);
    }
    out.push_str("\r\n");
    out
}

/// A `value` (RFC 8601 section 2.2: token, or a quoted-string; addresses as addr-spec):
/// plain text stays, anything else is quoted; control characters are dropped.
fn value(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    let plain = !clean.is_empty()
        && clean
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-./=?^_`{|}~@".contains(c));
    if plain {
        clean
    } else {
        let escaped: String = clean
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                _ => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// A comment (RFC 5322 section 3.2.2) of printable text without parentheses or backslashes.
fn comment(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\'))
        .take(200)
        .collect();
    format!("({clean})")
}

/// Removes every `Authentication-Results:` field whose authserv-id is `authserv_id`
/// (compared case-insensitively) from `header_section` (the header fields, CRLF or LF line
/// ends, with or without the empty line after them). Other fields, and other authserv-ids,
/// are kept byte for byte.
pub fn strip_authentication_results(header_section: &[u8], authserv_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_section.len());
    let mut fields = Vec::new();
    // Split into fields: a field is a line plus its continuation lines (RFC 5322 section
    // 2.2.3, folding).
    let mut start = 0;
    let mut i = 0;
    while let Some(nl) = header_section[i..].iter().position(|&b| b == b'\n') {
        let next = i + nl + 1;
        let continues = matches!(header_section.get(next), Some(b' ' | b'\t'));
        if !continues {
            fields.push(&header_section[start..next]);
            start = next;
        }
        i = next;
    }
    if start < header_section.len() {
        fields.push(&header_section[start..]);
    }
    for f in fields {
        if !is_ours(f, authserv_id) {
            out.extend_from_slice(f);
        }
    }
    out
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
