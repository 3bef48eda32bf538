//! Reverse- and forward-paths of MAIL and RCPT (RFC 5321 4.1.2, widened to UTF-8 by RFC 6531 3.3).
//!
//! ```text
//! Path    = "<" [ A-d-l ":" ] Mailbox ">"
//! Mailbox = Local-part "@" ( Domain / address-literal )
//! ```

use corvid_types::address::is_atext;
use corvid_types::Address;
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1.1: longest local part.
const MAX_LOCAL: usize = 64;
/// RFC 5321 4.5.3.1.2: longest domain.
const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3: longest path, with its punctuation (`<`, `>`, route).
const MAX_PATH: usize = 256;
/// RFC 1035 2.3.4: longest DNS label.
const MAX_LABEL: usize = 63;

/// What was between the angle brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// `<>`, the null reverse-path (RFC 5321 4.5.5).
    Null,
    /// `<postmaster>` without a domain (RFC 5321 4.5.1).
    Postmaster,
    Mailbox(Address),
}

/// Why a path was refused; the caller turns it into 501 5.1.7 or 5.1.3.
pub(crate) type PathError = &'static str;

/// Parses the path at the start of `s` (leading spaces tolerated, as Postfix does) and returns
/// it with the text after `>` (the parameters, leading spaces removed).
pub(crate) fn parse_path(s: &str) -> Result<(Path, &str), PathError> {
    let s = s.trim_start_matches(' ');
    let body = s.strip_prefix('<').ok_or("angle brackets required")?;
    let close = closing_bracket(body)?;
    // "<" + body + ">" must fit in MAX_PATH octets.
    if close + 2 > MAX_PATH {
        return Err("path too long");
    }
    let inner = &body[..close];
    let rest = &body[close + 1..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err("garbage after path");
    }
    Ok((parse_inner(inner)?, rest.trim_start_matches(' ')))
}

/// Index in `body` of the `>` that closes the path; `<` and `>` inside a quoted local part do not
/// count.
fn closing_bracket(body: &str) -> Result<usize, PathError> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => quoted = false,
            (true, false, _) => {}
            (false, _, '"') => quoted = true,
            (false, _, '<') => return Err("nested angle bracket"),
            (false, _, '>') => return Ok(i),
            (false, _, _) => {}
        }
    }
    Err("unbalanced angle bracket")
}

fn parse_inner(inner: &str) -> Result<Path, PathError> {
    if inner.is_empty() {
        return Ok(Path::Null);
    }
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok(Path::Postmaster);
    }
    let mailbox = strip_source_route(inner)?;
    parse_mailbox(mailbox).map(Path::Mailbox)
}

/// RFC 5321 4.1.2 `A-d-l`: `@one,@two:` before the mailbox is syntax to accept and ignore
/// (RFC 5321 C and 3.3).
fn strip_source_route(inner: &str) -> Result<&str, PathError> {
    let mut rest = inner;
    if !rest.starts_with('@') {
        return Ok(rest);
    }
    loop {
        let after_at = rest.strip_prefix('@').ok_or("bad source route")?;
        let end = route_domain_end(after_at).ok_or("bad source route")?;
        check_domain(&after_at[..end])?;
        let (sep, tail) = (after_at.as_bytes()[end], &after_at[end + 1..]);
        if sep == b':' {
            return Ok(tail);
        }
        rest = tail;
    }
}

/// End of one route domain: the first `,` or `:` outside an address literal.
fn route_domain_end(s: &str) -> Option<usize> {
    let start = if s.starts_with('[') { s.find(']')? } else { 0 };
    s[start..].find([',', ':']).map(|i| i + start)
}

/// `Local-part "@" Domain`.
fn parse_mailbox(s: &str) -> Result<Address, PathError> {
    let (local, raw_len, rest) = if s.starts_with('"') {
        parse_quoted(s)?
    } else {
        let end = s.find('@').ok_or("missing @")?;
        (parse_dot_string(&s[..end])?, end, &s[end..])
    };
    if local.is_empty() {
        return Err("empty local part");
    }
    if raw_len > MAX_LOCAL {
        return Err("local part too long");
    }
    let domain = rest.strip_prefix('@').ok_or("missing @")?;
    check_domain(domain)?;
    Ok(Address::new(local, domain))
}

/// An unquoted local part: atext (RFC 5322 3.2.3, UTF-8 allowed by RFC 6531 3.3) and dots.
/// Empty atoms (`a..b`, `.a`) are tolerated, as Postfix does: only the receiving host interprets
/// the local part, and such addresses exist in the wild.
fn parse_dot_string(s: &str) -> Result<String, PathError> {
    if s.chars()
        .all(|c| c == '.' || (c.is_ascii() && is_atext(c)) || is_utf8_text(c))
    {
        Ok(s.to_string())
    } else {
        Err("invalid character in local part")
    }
}

/// RFC 5321 4.1.2 `Quoted-string`; returns the unquoted text, the quoted length in octets and
/// the text after the closing quote.
fn parse_quoted(s: &str) -> Result<(String, usize, &str), PathError> {
    let mut local = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((local, i + 1, &s[i + 1..])),
            // quoted-pairSMTP = "\" %d32-126
            '\\' => match chars.next() {
                Some((_, e)) if (' '..='~').contains(&e) => local.push(e),
                _ => return Err("bad quoted pair"),
            },
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 (RFC 6531 3.3)
            c if c == ' ' || c.is_ascii_graphic() || is_utf8_text(c) => local.push(c),
            _ => return Err("invalid character in quoted local part"),
        }
    }
    Err("unterminated quoted string")
}

/// RFC 5321 4.1.2 `Domain` or `address-literal` (4.1.3); UTF-8 labels (U-labels) are allowed
/// (RFC 6531 3.3), their octets counted against the limits.
pub(crate) fn check_domain(d: &str) -> Result<(), PathError> {
    if d.is_empty() {
        return Err("empty domain");
    }
    if d.len() > MAX_DOMAIN {
        return Err("domain too long");
    }
    if let Some(literal) = d.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or("bad address literal")?;
        return check_address_literal(literal);
    }
    d.split('.').try_for_each(check_label)
}

/// `Let-dig [Ldh-str]`: letters, digits and inner hyphens, 1 to 63 octets.
fn check_label(label: &str) -> Result<(), PathError> {
    if label.is_empty() {
        return Err("empty domain label");
    }
    if label.len() > MAX_LABEL {
        return Err("domain label too long");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("hyphen at label edge");
    }
    if label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_utf8_text(c))
    {
        Ok(())
    } else {
        Err("invalid character in domain")
    }
}

/// A non-ASCII character allowed in UTF-8 addresses (RFC 6531 3.3): not a control (C1 or
/// otherwise) and not white space.
fn is_utf8_text(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

/// RFC 5321 4.1.3: `IPv4-address-literal` or `"IPv6:" IPv6-addr`. General literals are not
/// supported.
fn check_address_literal(s: &str) -> Result<(), PathError> {
    let parsed = match s.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => s[5..].parse::<Ipv6Addr>().is_ok(),
        _ => s.parse::<Ipv4Addr>().is_ok(),
    };
    if parsed {
        Ok(())
    } else {
        Err("bad address literal")
    }
}

#[cfg(test)]
mod tests;
