//! Reply text from a next hop, made safe to show: it goes into DSNs (RFC 3464
//! `Diagnostic-Code`), logs and `corvid queue show`, where a terminal would obey escape
//! sequences and a bare CR or LF could forge a log line or a header.
//!
//! Done once, where a reply is read ([`super::conn`]): nothing downstream sees raw peer text.

/// Drops C0 and C1 control characters (a tab becomes a space), whole ANSI escape sequences
/// (CSI `ESC [ ... final`, OSC `ESC ] ... BEL` or `ESC \`, and two-character escapes), and
/// the Unicode bidirectional overrides that make text display in another order than it reads.
pub(crate) fn peer_text(text: &str) -> String {
    if !text.chars().any(needs_care) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => out.push(' '),
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, up to a final byte 0x40..=0x7E.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (`ESC \`).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Any other escape is two characters long.
                _ => {}
            },
            // C1 CSI: the same as `ESC [`.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            c if needs_care(c) => {}
            c => out.push(c),
        }
    }
    out
}

fn needs_care(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::peer_text;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(
            peer_text("2.0.0 Ok: queued as 4XyZ"),
            "2.0.0 Ok: queued as 4XyZ"
        );
        assert_eq!(peer_text("grüße"), "grüße");
    }

    #[test]
    fn escapes_controls_and_line_breaks_are_removed() {
        assert_eq!(peer_text("ok \u{1b}[31mred\u{1b}[0m done"), "ok red done");
        assert_eq!(peer_text("a\u{1b}]0;title\u{7}b"), "ab");
        assert_eq!(peer_text("a\u{1b}]8;;http://x\u{1b}\\b"), "ab");
        assert_eq!(peer_text("a\rInjected: yes\nb"), "aInjected: yesb");
        assert_eq!(peer_text("a\u{0}b\u{7f}c\u{85}d\u{9b}2Je"), "abcde");
        assert_eq!(peer_text("a\tb"), "a b");
        assert_eq!(peer_text("x\u{202e}gpj.exe"), "xgpj.exe");
        assert_eq!(peer_text("trailing \u{1b}["), "trailing ");
    }
}
