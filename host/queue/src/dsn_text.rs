//! The text pieces of a DSN: dates, the human-readable part, ORCPT decoding.

use crate::dsn::DsnAction;
use crate::RecipientState;
use std::fmt::Write as _;

/// RFC 5322 3.3 `date-time` in UTC, e.g. `Tue, 1 Jul 2003 10:52:37 +0000`.
pub(crate) fn rfc5322_date(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
        .unwrap_or_default()
        .to_rfc2822()
}

/// The header section of a message, up to and including the empty line (or all of it).
pub(crate) fn header_section(content: &[u8]) -> &[u8] {
    corvid_types::MessageView { content }.header_section()
}

/// `Original-Recipient:` from the `ORCPT=` parameter (RFC 3461 4.2, RFC 3464 2.3.1):
/// `addr-type; address`, with the xtext of an `rfc822` address decoded. `None` when the value
/// cannot be shown safely (undecodable, or control characters).
pub(crate) fn orcpt_field(orcpt: &str) -> Option<String> {
    let (addr_type, addr) = orcpt.split_once(';')?;
    let addr = if addr_type.eq_ignore_ascii_case("utf-8") {
        addr.to_string()
    } else {
        decode_xtext(addr)?
    };
    if addr.chars().any(char::is_control) {
        return None;
    }
    Some(format!("{addr_type}; {addr}"))
}

/// RFC 3461 4 xtext: `+XX` (upper-case hex) stands for one octet.
fn decode_xtext(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            if !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
            {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `text/plain` part for people: what happened, recipient by recipient.
pub(crate) fn human_text(host: &str, action: DsnAction, rcpts: &[&RecipientState]) -> String {
    let mut out = format!("This is the mail system at host {host}.\r\n\r\n");
    out.push_str(match action {
        DsnAction::Failed => {
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients. It's attached below.\r\n"
        }
        DsnAction::Delayed => {
            "Your message could not be delivered yet to one or more recipients.\r\n\
             It will be retried until it is too old. You do not need to resend it.\r\n"
        }
        DsnAction::Delivered => {
            "Your message was successfully delivered to the destinations listed\r\n\
             below, as you asked.\r\n"
        }
        DsnAction::Relayed => {
            "Your message was relayed to the destinations listed below. The next\r\n\
             system does not offer delivery notifications, so you may hear no more.\r\n"
        }
    });
    out.push_str("\r\n");
    for r in rcpts {
        let reason = r
            .diagnostic
            .as_deref()
            .map(|d| d.trim_start_matches("smtp;").trim())
            .or(r.last_reply.as_deref())
            .unwrap_or("no reason recorded");
        let _ = write!(out, "<{}>: {reason}", r.recipient.address);
        if let Some(mta) = &r.remote_mta {
            let _ = write!(out, " (reported by {mta})");
        }
        out.push_str("\r\n");
        if let Some(note) = &r.note {
            let _ = write!(out, "    {note}\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_orcpt() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            orcpt_field("rfc822;a+2Bb+40x.test").as_deref(),
            Some("rfc822; a+b@x.test")
        );
        assert_eq!(orcpt_field("rfc822;a+0Db").as_deref(), None);
        assert_eq!(orcpt_field("rfc822;a+2b").as_deref(), None);
        assert_eq!(orcpt_field("nosemicolon"), None);
        assert_eq!(
            orcpt_field("utf-8;j\\x{F6}rg@x").as_deref(),
            Some("utf-8; j\\x{F6}rg@x")
        );
    }
}
