//! SASL PLAIN (RFC 4616) and LOGIN decoding for SMTP AUTH (RFC 4954).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// RFC 4954 4: the client sent `*`.
    #[error("authentication cancelled")]
    Cancelled,
    #[error("invalid base64")]
    BadBase64,
    #[error("malformed credentials")]
    Malformed,
}

fn decode(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_end();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    // RFC 4954 4: "=" is an empty initial response.
    if line == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| SaslError::BadBase64)
}

/// `[authzid] NUL authcid NUL passwd` (RFC 4616 2), each part UTF-8 without NUL.
pub fn decode_plain(line: &str) -> Result<(Option<String>, String, String), SaslError> {
    let raw = decode(line)?;
    let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let [authzid, authcid, passwd] = parts.as_slice() else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let (authzid, authcid, passwd) = (text(authzid)?, text(authcid)?, text(passwd)?);
    // RFC 4616 2: authcid and passwd are at most 255 octets and not empty.
    if authcid.is_empty() || authcid.len() > 255 || passwd.len() > 255 {
        return Err(SaslError::Malformed);
    }
    Ok(((!authzid.is_empty()).then_some(authzid), authcid, passwd))
}

/// One LOGIN field (user name or password): base64 of UTF-8 text.
pub fn decode_login_field(line: &str) -> Result<String, SaslError> {
    let raw = decode(line)?;
    if raw.is_empty() || raw.len() > 255 || raw.contains(&0) {
        return Err(SaslError::Malformed);
    }
    String::from_utf8(raw).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_with_and_without_authzid() {
        let b = STANDARD.encode(b"\0alice\0secret");
        assert_eq!(
            decode_plain(&b),
            Ok((None, "alice".into(), "secret".into()))
        );
        let b = STANDARD.encode(b"admin\0alice\0secret");
        assert_eq!(
            decode_plain(&b),
            Ok((Some("admin".into()), "alice".into(), "secret".into()))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_plain("!!!"), Err(SaslError::BadBase64));
        assert_eq!(
            decode_plain(&STANDARD.encode(b"alice\0secret")),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(&STANDARD.encode(b"\0\0secret")),
            Err(SaslError::Malformed)
        );
        assert_eq!(decode_login_field("="), Err(SaslError::Malformed));
        assert_eq!(
            decode_login_field(&STANDARD.encode("bob")),
            Ok("bob".into())
        );
    }
}
