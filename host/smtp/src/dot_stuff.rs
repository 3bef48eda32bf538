//! Client side: message content as it goes on the wire after DATA (RFC 5321 4.5.2 and 2.3.8).
//!
//! Every line ends in CRLF: a bare LF or a bare CR in the content becomes CRLF, so no bare
//! line ending ever leaves Corvid (the receiving side of SMTP smuggling, CVE-2023-51764/5/6,
//! depends on senders not emitting them). A line that starts with `.` gets one more `.`
//! (transparency). The content always ends with CRLF, and `.` CRLF terminates it.

/// The DATA payload for `content`, including the terminating `.` CRLF.
pub fn encode_data(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    let mut line_start = true;
    let mut i = 0;
    while i < content.len() {
        let b = content[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                // CRLF counts once; a lone CR or LF is a line ending of its own.
                if b == b'\r' && content.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                line_start = true;
            }
            _ => {
                if line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                line_start = false;
            }
        }
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// True when the content has an octet above 127, so it needs `BODY=8BITMIME` (RFC 6152).
pub fn is_8bit(content: &[u8]) -> bool {
    !content.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb", b"a\r\nb\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"x\r\n.\r\n..y\n.", b"x\r\n..\r\n...y\r\n..\r\n.\r\n"),
            (b"a.b\r\n", b"a.b\r\n.\r\n"),
            (b"\n.\n", b"\r\n..\r\n.\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(encode_data(input), *want, "{input:?}");
        }
    }

    #[test]
    fn output_has_no_bare_line_endings() {
        let out = encode_data(b"a\rb\nc\r\n\n\r.\r\r\n");
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r');
            }
            if b == b'\r' {
                assert_eq!(out[i + 1], b'\n');
            }
        }
    }

    #[test]
    fn eight_bit() {
        assert!(is_8bit("é".as_bytes()));
        assert!(!is_8bit(b"plain"));
    }
}
