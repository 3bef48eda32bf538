//! Client side: the service extensions a server announces in its EHLO (or LHLO) reply
//! (RFC 5321 4.1.1.1: `ehlo-line = ehlo-keyword *( SP ehlo-param )`, keywords case-insensitive).

use corvid_types::Reply;

/// What the next hop supports, as far as Corvid's client cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The name the server gave on the first line.
    pub greeting_name: String,
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870 `SIZE [limit]`: `Some(0)` means "no fixed limit".
    pub size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3461.
    pub dsn: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
    /// RFC 3030 (announced; the client uses DATA).
    pub chunking: bool,
    /// RFC 4954: the SASL mechanisms offered, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the capabilities from a positive EHLO/LHLO reply. Unknown keywords and malformed
    /// parameters are ignored: the client just does not use what it cannot read.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities {
            greeting_name: reply
                .lines
                .first()
                .and_then(|l| l.split(' ').next())
                .unwrap_or("")
                .to_string(),
            ..Capabilities::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split(' ').filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|v| v.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "CHUNKING" => caps.chunking = true,
                "AUTH" => caps.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        caps
    }

    /// True when a message of `size` octets is over the announced limit (RFC 1870 4).
    pub fn too_big(&self, size: u64) -> bool {
        matches!(self.size, Some(limit) if limit > 0 && size > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_keywords() {
        let r = Reply::new(
            250,
            "",
            "mx.test greets you\npipelining\nSIZE 1000\n8BITMIME\nSMTPUTF8\nDSN\nSTARTTLS\n\
             ENHANCEDSTATUSCODES\nAUTH PLAIN login\nCHUNKING\nX-UNKNOWN a b\n",
        );
        let c = Capabilities::from_ehlo(&r);
        assert_eq!(c.greeting_name, "mx.test");
        assert!(c.pipelining && c.eight_bit_mime && c.smtputf8 && c.dsn && c.starttls);
        assert!(c.enhanced_status_codes && c.chunking);
        assert_eq!(c.size, Some(1000));
        assert_eq!(c.auth, ["PLAIN", "LOGIN"]);
        assert!(c.too_big(1001) && !c.too_big(1000));
    }

    #[test]
    fn size_without_limit_and_single_line() {
        let c = Capabilities::from_ehlo(&Reply::new(250, "", "mx\nSIZE"));
        assert_eq!(c.size, Some(0));
        assert!(!c.too_big(u64::MAX));
        let c = Capabilities::from_ehlo(&Reply::new(250, "", "mx"));
        assert_eq!(
            c,
            Capabilities {
                greeting_name: "mx".into(),
                ..Default::default()
            }
        );
    }
}
