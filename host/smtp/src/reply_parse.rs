//! Client side: reading the server's replies (RFC 5321 4.2).
//!
//! ```text
//! Reply-line     = *( Reply-code "-" [ textstring ] CRLF )
//!                  Reply-code [ SP textstring ] CRLF
//! Reply-code     = %x32-35 %x30-35 %x30-39
//! ```
//!
//! The enhanced status code (RFC 2034 4, RFC 3463 2), when the first line starts with one whose
//! class matches the reply code, is taken out of every line's text and kept in
//! [`Reply::enhanced`]. Nothing here panics on peer data.

use corvid_types::{EnhancedCode, Reply};

/// RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. Real servers exceed
/// it now and then, so the client accepts twice that before calling the reply malformed.
pub const MAX_REPLY_LINE: usize = 1024;

/// A multi-line reply longer than this many lines is refused (a peer flooding the client).
pub const MAX_REPLY_LINES: usize = 256;

/// One line of a reply, without its CRLF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyLine {
    pub code: u16,
    /// True for `NNN SP text` (or a bare `NNN`), the last line of a reply.
    pub last: bool,
    pub text: String,
}

/// Why a reply could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply code changed inside a multi-line reply ({0} then {1})")]
    CodeChanged(u16, u16),
    #[error("reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
}

/// Parses one reply line (without CRLF). Invalid UTF-8 in the text is replaced, not refused:
/// the text is only shown to people.
pub fn parse_reply_line(line: &[u8]) -> Result<ReplyLine, ReplyError> {
    let bad = || ReplyError::Malformed(String::from_utf8_lossy(&line[..line.len().min(80)]).into());
    let digits = line.get(..3).ok_or_else(bad)?;
    let ok = matches!(digits[0], b'2'..=b'5')
        && matches!(digits[1], b'0'..=b'5')
        && digits[2].is_ascii_digit();
    if !ok {
        return Err(bad());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(bad()),
    };
    Ok(ReplyLine {
        code,
        last,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

/// Collects the lines of one reply.
#[derive(Debug, Default)]
pub struct ReplyBuilder {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a line; returns the complete reply after its last line.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let parsed = parse_reply_line(line)?;
        match self.code {
            Some(c) if c != parsed.code => return Err(ReplyError::CodeChanged(c, parsed.code)),
            _ => self.code = Some(parsed.code),
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.lines.push(parsed.text);
        if !parsed.last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        Ok(Some(finish(parsed.code, lines)))
    }
}

/// Takes the enhanced code out of the lines when the first line carries one of the reply's
/// class (RFC 2034 4: every line carries it; a line without it is left as is).
fn finish(code: u16, mut lines: Vec<String>) -> Reply {
    let enhanced = lines
        .first()
        .and_then(|l| l.split(' ').next())
        .and_then(EnhancedCode::parse)
        .filter(|e| u16::from(e.0) == code / 100);
    if let Some(e) = enhanced {
        let prefix = e.to_string();
        for line in &mut lines {
            if let Some(rest) = line.strip_prefix(&prefix) {
                if rest.is_empty() || rest.starts_with(' ') {
                    *line = rest.trim_start_matches(' ').to_string();
                }
            }
        }
    }
    Reply {
        code,
        enhanced,
        lines,
    }
}

/// The status code for a DSN (RFC 3464 2.3.4) and logs: the enhanced code when the server gave
/// one, else one derived from the reply code's class (RFC 3463 3.1: `X.0.0`).
pub fn status_of(reply: &Reply) -> EnhancedCode {
    reply
        .enhanced
        .unwrap_or(EnhancedCode((reply.code / 100) as u8, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(lines: &[&[u8]]) -> Result<Option<Reply>, ReplyError> {
        let mut b = ReplyBuilder::new();
        let mut out = None;
        for l in lines {
            out = b.push(l)?;
        }
        Ok(out)
    }

    #[test]
    fn line_table() {
        let ok: &[(&[u8], u16, bool, &str)] = &[
            (b"250 OK", 250, true, "OK"),
            (b"250-PIPELINING", 250, false, "PIPELINING"),
            (b"220", 220, true, ""),
            (b"554 ", 554, true, ""),
            (b"421 4.4.2 bye", 421, true, "4.4.2 bye"),
        ];
        for (l, code, last, text) in ok {
            let r = parse_reply_line(l).unwrap();
            assert_eq!((r.code, r.last, r.text.as_str()), (*code, *last, *text));
        }
        for bad in [
            &b""[..],
            b"25",
            b"2500",
            b"600 x",
            b"170 x",
            b"2a0 x",
            b"250x",
            b"\xff",
        ] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn multi_line_reply_with_enhanced_codes() {
        let r = all(&[b"550-5.1.1 no such", b"550 5.1.1 user here"])
            .unwrap()
            .unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, Some(EnhancedCode(5, 1, 1)));
        assert_eq!(r.lines, ["no such", "user here"]);
        assert_eq!(status_of(&r).to_string(), "5.1.1");
    }

    #[test]
    fn enhanced_code_of_another_class_is_text() {
        let r = all(&[b"250 5.1.1 odd"]).unwrap().unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.lines, ["5.1.1 odd"]);
        assert_eq!(status_of(&r).to_string(), "2.0.0");
    }

    #[test]
    fn incomplete_and_inconsistent() {
        assert_eq!(all(&[b"250-a"]).unwrap(), None);
        assert_eq!(
            all(&[b"250-a", b"251 b"]),
            Err(ReplyError::CodeChanged(250, 251))
        );
        let mut b = ReplyBuilder::new();
        for _ in 0..MAX_REPLY_LINES {
            b.push(b"250-x").unwrap();
        }
        assert_eq!(b.push(b"250 x"), Err(ReplyError::TooManyLines));
    }
}
