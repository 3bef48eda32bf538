//! The RFC 3461 parameters of `RCPT TO` (`NOTIFY=`, `ORCPT=`) checked as values, for
//! parameters that do not arrive on a command line: those a plugin gives a recipient it adds
//! (`wit/envelope.wit`). The rules are the ones the SMTP codec applies to a client's RCPT
//! (`corvid-smtp`'s `params`), so a plugin can store nothing a client could not send.

use crate::address::is_atext;
use crate::{Notify, RcptParams};

/// The longest `ORCPT=` value: what fits in a RCPT command line with a short forward-path
/// (RFC 5321 4.5.3.1.4: 512 octets with CRLF, of which `RCPT TO:<> ORCPT=` and CRLF take 19;
/// a client's ORCPT can be no longer).
pub const MAX_ORCPT: usize = 493;

/// Why DSN parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnParamError {
    /// RFC 3461 4.1: `NOTIFY=` needs `NEVER` or at least one condition.
    #[error("NOTIFY without NEVER, SUCCESS, FAILURE or DELAY")]
    EmptyNotify,
    /// RFC 3461 4.1: `NEVER` stands alone.
    #[error("NOTIFY=NEVER combined with SUCCESS, FAILURE or DELAY")]
    NeverWithConditions,
    /// RFC 3461 4.2: `addr-type ";" xtext`, an esmtp-value (RFC 5321 4.1.2).
    #[error("ORCPT is not addr-type;xtext: {0:?}")]
    BadOrcpt(String),
    /// Longer than a client's RCPT command could carry.
    #[error("ORCPT longer than {MAX_ORCPT} octets")]
    OrcptTooLong,
}

/// Checks `p` as a client's `RCPT TO` parameters would be checked.
pub fn check(p: &RcptParams) -> Result<(), DsnParamError> {
    if let Some(n) = p.notify {
        check_notify(n)?;
    }
    if let Some(o) = &p.orcpt {
        if o.len() > MAX_ORCPT {
            return Err(DsnParamError::OrcptTooLong);
        }
        if !is_esmtp_value(o) || !is_orcpt(o) {
            let shown: String = o.chars().take(64).collect();
            return Err(DsnParamError::BadOrcpt(shown));
        }
    }
    Ok(())
}

/// RFC 3461 4.1: `NEVER`, or one or more of `SUCCESS`, `FAILURE`, `DELAY`.
pub fn check_notify(n: Notify) -> Result<(), DsnParamError> {
    let conditions = n.success || n.failure || n.delay;
    match (n.never, conditions) {
        (true, true) => Err(DsnParamError::NeverWithConditions),
        (false, false) => Err(DsnParamError::EmptyNotify),
        _ => Ok(()),
    }
}

/// RFC 5321 4.1.2 `esmtp-value = 1*(%d33-60 / %d62-126)`, plus UTF-8 (RFC 6531 3.3): no
/// space, `=` or control, so the value can be passed on in a RCPT command as it is.
fn is_esmtp_value(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| (c.is_ascii_graphic() && c != '=') || (!c.is_ascii() && !c.is_control()))
}

/// RFC 3461 4.2 `addr-type ";" xtext` with addr-type an atom; with addr-type `utf-8`
/// (RFC 6533 3) the address is `utf-8-addr-xtext`, checked only as an esmtp-value.
pub fn is_orcpt(v: &str) -> bool {
    let Some((addr_type, addr)) = v.split_once(';') else {
        return false;
    };
    let atom = !addr_type.is_empty() && addr_type.chars().all(|c| c.is_ascii() && is_atext(c));
    let addr_ok = if addr_type.eq_ignore_ascii_case("utf-8") {
        !addr.is_empty()
    } else {
        xtext_text(addr).is_some_and(|d| !d.is_empty())
    };
    atom && addr_ok
}

/// RFC 3461 4 `xtext`: decodes `s` (`+XX` with upper-case hex stands for one octet, other
/// characters are `!`..`~` but `+` and `=`); `None` when it is not xtext or not UTF-8.
fn xtext_text(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'+' {
            out.push(hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?);
            i += 3;
        } else if (b'!'..=b'~').contains(&c) && c != b'=' {
            out.push(c);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(never: bool, success: bool, failure: bool, delay: bool) -> Option<Notify> {
        Some(Notify {
            never,
            success,
            failure,
            delay,
        })
    }

    fn p(notify: Option<Notify>, orcpt: Option<&str>) -> RcptParams {
        RcptParams {
            notify,
            orcpt: orcpt.map(str::to_string),
        }
    }

    /// The values `corvid-smtp`'s RCPT parameter tests accept and refuse, as values.
    #[test]
    fn the_client_rules_apply() {
        for ok in [
            p(None, None),
            p(n(true, false, false, false), None),
            p(n(false, true, true, true), None),
            p(None, Some("rfc822;a+40b")),
            p(None, Some("rfc822;a@b")),
            p(None, Some("utf-8;j\\x{F6}rg@x")),
            p(n(false, false, true, false), Some("rfc822;x@y")),
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok:?}");
        }
        assert_eq!(
            check(&p(n(true, true, false, false), None)),
            Err(DsnParamError::NeverWithConditions)
        );
        assert_eq!(
            check(&p(n(false, false, false, false), None)),
            Err(DsnParamError::EmptyNotify)
        );
        for bad in [
            "a@b",
            ";a@b",
            "rfc822;",
            "rfc 822;a",
            "rfc822;a+4",
            "utf-8;",
            "rfc822;a b",
            "rfc822;a=b",
            "rfc822;a\r\nRCPT",
        ] {
            assert!(
                matches!(check(&p(None, Some(bad))), Err(DsnParamError::BadOrcpt(_))),
                "{bad:?}"
            );
        }
        let long = format!("rfc822;{}@x", "a".repeat(MAX_ORCPT));
        assert_eq!(
            check(&p(None, Some(&long))),
            Err(DsnParamError::OrcptTooLong)
        );
    }
}
