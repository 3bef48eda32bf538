//! A mailbox address as it travels in the envelope (RFC 5321 4.1.2 `Mailbox`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// `local-part@domain`. The local part is kept exactly as the client sent it, minus the quoting
/// (RFC 5321 4.1.2: only the receiving host interprets it); the domain is kept as sent too, and
/// compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    pub fn new(local: impl Into<String>, domain: impl Into<String>) -> Self {
        Address {
            local: local.into(),
            domain: domain.into(),
        }
    }

    /// The domain folded to lower case, for lookups (domains are case-insensitive, RFC 5321 2.4).
    pub fn domain_lower(&self) -> String {
        self.domain.to_ascii_lowercase()
    }

    /// True when either part has a non-ASCII character, which needs SMTPUTF8 (RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The local part in the form it must take on the wire: a dot-string when it is one, a
    /// quoted string otherwise (RFC 5321 4.1.2).
    pub fn local_for_wire(&self) -> String {
        if is_dot_string(&self.local) {
            return self.local.clone();
        }
        let mut quoted = String::with_capacity(self.local.len() + 2);
        quoted.push('"');
        for c in self.local.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    }
}

/// RFC 5321 4.1.2 `Dot-string`: atoms of atext (plus UTF-8 per RFC 6531) joined by single dots.
fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// RFC 5322 3.2.3 `atext`, widened to non-ASCII characters by RFC 6532 3.2.
pub fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_for_wire(), self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_local_parts_stay_unquoted() {
        assert_eq!(Address::new("a.b+c", "x.test").to_string(), "a.b+c@x.test");
    }

    #[test]
    fn odd_local_parts_are_quoted_and_escaped() {
        assert_eq!(
            Address::new("john doe", "x.test").to_string(),
            "\"john doe\"@x.test"
        );
        assert_eq!(
            Address::new("a\"b", "x.test").to_string(),
            "\"a\\\"b\"@x.test"
        );
        assert_eq!(Address::new("a..b", "x").to_string(), "\"a..b\"@x");
    }

    #[test]
    fn utf8_is_detected() {
        assert!(Address::new("jörg", "x.test").is_utf8());
        assert!(!Address::new("jorg", "x.test").is_utf8());
    }
}
