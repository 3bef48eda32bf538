//! `xtext` (RFC 3461 4): the encoding of DSN parameter values (`ENVID`, `ORCPT`) and of the
//! `AUTH=` parameter of MAIL (RFC 4954 5).
//!
//! ```text
//! xtext   = *( xchar / hexchar )
//! xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive, except "+" and "="
//! hexchar = "+" 2(%x30-39 / %x41-46)   ; upper-case hex digits only
//! ```

/// Decodes `s`; `None` when it is not valid xtext or does not decode to UTF-8 text.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hi = hex_digit(*bytes.get(i + 1)?)?;
                let lo = hex_digit(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b if is_xchar(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// True when `s` is valid xtext.
pub fn is_valid(s: &str) -> bool {
    decode(s).is_some()
}

/// Encodes `s` as xtext: `+`, `=`, controls, space and non-ASCII octets become `+XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_xchar(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

fn is_xchar(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'+' && b != b'='
}

/// RFC 3461 4: only `0-9` and upper-case `A-F`.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("abc", Some("abc")),
            ("a+2Bb", Some("a+b")),
            ("a+3Db", Some("a=b")),
            ("+20", Some(" ")),
            ("rfc822;a+40b", Some("rfc822;a@b")),
            ("+C3+A9", Some("é")),
            ("a+2b", None),   // lower-case hex is not xtext
            ("a+2", None),    // truncated hexchar
            ("a+", None),     // truncated hexchar
            ("a=b", None),    // "=" must be encoded
            ("a b", None),    // space must be encoded
            ("a\u{1}", None), // control
            ("é", None),      // non-ASCII must be encoded
            ("+FF", None),    // not UTF-8 once decoded
            ("+GG", None),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn encode_round_trips() {
        for s in ["", "plain", "a+b=c d", "jörg@x", "\r\n", "~!"] {
            let e = encode(s);
            assert!(is_valid(&e), "{e}");
            assert_eq!(decode(&e).as_deref(), Some(s));
        }
        assert_eq!(encode("a+b"), "a+2Bb");
    }
}
