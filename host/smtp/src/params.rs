//! ESMTP parameters of MAIL and RCPT (RFC 5321 4.1.2 `Mail-parameters`, `Rcpt-parameters`).
//!
//! Every parameter that is unknown, malformed, has a bad value or is repeated is refused with
//! `555 5.5.4` (RFC 5321 4.1.1.11 and 3.3, RFC 3463 3.6). Keywords are case-insensitive.

use crate::xtext;
use corvid_types::{BodyType, MailParams, Notify, RcptParams, Reply, Ret};

/// RFC 1870 `size-value ::= 1*20DIGIT`.
const MAX_SIZE_DIGITS: usize = 20;
/// RFC 3461 4.4: an ENVID may not be longer than 100 characters.
const MAX_ENVID: usize = 100;
/// Longest keyword echoed back in a reply.
const MAX_ECHO: usize = 32;

/// RFC 5321 4.1.1.11: "MAIL FROM/RCPT TO parameters not recognized or not implemented".
fn refuse(text: String) -> Reply {
    Reply::new(555, "5.5.4", text)
}

fn unsupported(kw: &str) -> Reply {
    refuse(format!("Unsupported parameter {kw}"))
}

fn bad_value(kw: &str) -> Reply {
    refuse(format!("Invalid value for parameter {kw}"))
}

/// One `keyword[=value]`, keyword upper-cased.
struct Param<'a> {
    keyword: String,
    value: Option<&'a str>,
}

/// Splits `s` on spaces into checked parameters, refusing malformed and repeated keywords.
fn split(s: &str) -> Result<Vec<Param<'_>>, Reply> {
    let mut out: Vec<Param<'_>> = Vec::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let (kw, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if !is_keyword(kw) {
            return Err(refuse("Malformed parameter".into()));
        }
        let keyword = kw.to_ascii_uppercase();
        if value.is_some_and(|v| !is_value(v)) {
            return Err(bad_value(&keyword));
        }
        if out.iter().any(|p| p.keyword == keyword) {
            return Err(refuse(format!("Duplicate parameter {keyword}")));
        }
        out.push(Param { keyword, value });
    }
    Ok(out)
}

/// RFC 5321 4.1.2 `esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`, bounded so it can be
/// echoed in a reply.
fn is_keyword(kw: &str) -> bool {
    kw.len() <= MAX_ECHO
        && kw.starts_with(|c: char| c.is_ascii_alphanumeric())
        && kw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// RFC 5321 4.1.2 `esmtp-value = 1*(%d33-60 / %d62-126)`, plus UTF-8 (RFC 6531 3.3).
fn is_value(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| (c.is_ascii_graphic() && c != '=') || (!c.is_ascii() && !c.is_control()))
}

/// Parses the parameters after `MAIL FROM:<path>`.
pub(crate) fn parse_mail(s: &str) -> Result<MailParams, Reply> {
    let mut params = MailParams::default();
    for Param { keyword, value } in split(s)? {
        match (keyword.as_str(), value) {
            ("SIZE", Some(v)) => {
                params.size = Some(parse_size(v).ok_or_else(|| bad_value("SIZE"))?)
            }
            ("BODY", Some(v)) => params.body = parse_body(v).ok_or_else(|| bad_value("BODY"))?,
            // RFC 6531 3.4: SMTPUTF8 takes no value.
            ("SMTPUTF8", None) => params.smtputf8 = true,
            // RFC 8689 2: REQUIRETLS takes no value. Whether the session may use it (only
            // over TLS, RFC 8689 4) is the server's call, not the parser's.
            ("REQUIRETLS", None) => params.requiretls = true,
            ("RET", Some(v)) => params.ret = Some(parse_ret(v).ok_or_else(|| bad_value("RET"))?),
            ("ENVID", Some(v)) if is_envid(v) => params.envid = Some(v.to_string()),
            ("AUTH", Some(v)) if is_auth(v) => params.auth = Some(v.to_string()),
            ("SIZE" | "BODY" | "SMTPUTF8" | "REQUIRETLS" | "RET" | "ENVID" | "AUTH", _) => {
                return Err(bad_value(&keyword))
            }
            _ => return Err(unsupported(&keyword)),
        }
    }
    Ok(params)
}

/// Parses the parameters after `RCPT TO:<path>`.
pub(crate) fn parse_rcpt(s: &str) -> Result<RcptParams, Reply> {
    let mut params = RcptParams::default();
    for Param { keyword, value } in split(s)? {
        match (keyword.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                params.notify = Some(parse_notify(v).ok_or_else(|| bad_value("NOTIFY"))?)
            }
            ("ORCPT", Some(v)) if is_orcpt(v) => params.orcpt = Some(v.to_string()),
            ("NOTIFY" | "ORCPT", _) => return Err(bad_value(&keyword)),
            _ => return Err(unsupported(&keyword)),
        }
    }
    Ok(params)
}

/// RFC 1870 `SIZE=1*20DIGIT`; a value past `u64` is refused rather than clamped.
fn parse_size(v: &str) -> Option<u64> {
    if v.len() > MAX_SIZE_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// RFC 6152 `BODY=7BIT / 8BITMIME`. `BINARYMIME` (RFC 3030) is refused: it is not offered.
fn parse_body(v: &str) -> Option<BodyType> {
    match v.to_ascii_uppercase().as_str() {
        "7BIT" => Some(BodyType::SevenBit),
        "8BITMIME" => Some(BodyType::EightBitMime),
        _ => None,
    }
}

/// RFC 3461 4.3 `RET=FULL / HDRS`.
fn parse_ret(v: &str) -> Option<Ret> {
    match v.to_ascii_uppercase().as_str() {
        "FULL" => Some(Ret::Full),
        "HDRS" => Some(Ret::Headers),
        _ => None,
    }
}

/// RFC 3461 4.4: xtext of at most 100 characters, printable US-ASCII once decoded.
fn is_envid(v: &str) -> bool {
    v.len() <= MAX_ENVID
        && xtext::decode(v).is_some_and(|d| d.chars().all(|c| c == ' ' || c.is_ascii_graphic()))
}

/// RFC 4954 5: `AUTH=` an xtext-encoded identity, or `<>` when it is unknown.
fn is_auth(v: &str) -> bool {
    v == "<>" || xtext::is_valid(v)
}

/// RFC 3461 4.1: `NEVER`, or a comma list of `SUCCESS`, `FAILURE`, `DELAY`; NEVER stands alone.
fn parse_notify(v: &str) -> Option<Notify> {
    let mut notify = Notify::default();
    for item in v.split(',') {
        match item.to_ascii_uppercase().as_str() {
            "NEVER" => notify.never = true,
            "SUCCESS" => notify.success = true,
            "FAILURE" => notify.failure = true,
            "DELAY" => notify.delay = true,
            _ => return None,
        }
    }
    let conditions = notify.success || notify.failure || notify.delay;
    (!(notify.never && conditions)).then_some(notify)
}

/// RFC 3461 4.2 `ORCPT=addr-type ";" xtext`, addr-type an atom. With addr-type `utf-8`
/// (RFC 6533 3) the address is `utf-8-addr-xtext`, checked only as an esmtp-value.
fn is_orcpt(v: &str) -> bool {
    // One check for a client's ORCPT and a plugin's (corvid-types owns it).
    corvid_types::dsn_params::is_orcpt(v)
}

#[cfg(test)]
mod tests;
