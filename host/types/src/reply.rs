//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034, RFC 3463).

use serde::{Deserialize, Serialize};
use std::fmt;

/// `class.subject.detail`, e.g. `5.1.1` (RFC 3463 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl EnhancedCode {
    /// Parses `"5.1.1"`; `None` when it is not of that form or the class is not 2, 4 or 5.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let class = it.next()?.parse().ok()?;
        let subject = it.next()?.parse().ok()?;
        let detail = it.next()?.parse().ok()?;
        if it.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(EnhancedCode(class, subject, detail))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A reply as the host will send it. Build with [`Reply::new`]; the text is sanitised there so
/// that no reply can carry CR, LF or other control characters onto the wire (reply injection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub lines: Vec<String>,
}

/// Longest text we put on one reply line; RFC 5321 4.5.3.1.5 caps a reply line at 512 octets.
const MAX_TEXT: usize = 480;

impl Reply {
    /// `code` with enhanced status `enhanced` (e.g. `"2.1.0"`) and text (may hold several lines
    /// separated by `\n`). An enhanced code that does not parse, or whose class differs from the
    /// reply code's first digit, is dropped rather than sent wrong.
    pub fn new(code: u16, enhanced: &str, text: impl AsRef<str>) -> Self {
        let enhanced = EnhancedCode::parse(enhanced).filter(|e| u16::from(e.0) == code / 100);
        let lines = text.as_ref().split('\n').map(sanitize_line).collect();
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// Positive completion (2xx).
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Transient negative (4xx).
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Permanent negative (5xx).
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply in wire form: every line but the last as `code-`, the last as `code `, each
    /// carrying the enhanced code when there is one, each ending in CRLF (RFC 5321 4.2.1).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = match self.enhanced {
                Some(e) if line.is_empty() => e.to_string(),
                Some(e) => format!("{e} {line}"),
                None => line.clone(),
            };
            out.extend_from_slice(format!("{}{}{}\r\n", self.code, sep, text).as_bytes());
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// The text lines joined with a space, for logs.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text()),
            None => write!(f, "{} {}", self.code, self.text()),
        }
    }
}

/// Keeps printable characters (UTF-8 allowed, RFC 6531 3.7.4.2), replaces controls with `?`, and
/// bounds the length on a character boundary.
fn sanitize_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(MAX_TEXT));
    for c in line.chars() {
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let r = Reply::new(250, "2.1.0", "Sender OK");
        assert_eq!(r.to_wire(), b"250 2.1.0 Sender OK\r\n");
    }

    #[test]
    fn multi_line_uses_dashes_until_the_last() {
        let r = Reply::new(250, "", "mx.test\nPIPELINING\nSIZE 100");
        assert_eq!(
            r.to_wire(),
            b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n".to_vec()
        );
    }

    #[test]
    fn crlf_injection_is_neutralised() {
        let r = Reply::new(550, "5.7.1", "no\r250 ok");
        assert_eq!(r.to_wire(), b"550 5.7.1 no?250 ok\r\n");
    }

    #[test]
    fn mismatched_enhanced_class_is_dropped() {
        let r = Reply::new(550, "2.0.0", "x");
        assert_eq!(r.enhanced, None);
    }

    #[test]
    fn long_text_is_bounded() {
        let r = Reply::new(250, "2.0.0", "é".repeat(1000));
        assert!(r.to_wire().len() <= 512);
    }
}
