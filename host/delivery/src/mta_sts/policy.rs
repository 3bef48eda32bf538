//! The two texts of MTA-STS (RFC 8461), parsed strictly: the `_mta-sts` TXT record (3.1) and
//! the policy file (3.2), and the MX host matching of 4.1.
//!
//! No crate was used: the one that exists (`mailrs-mta-sts`) skips malformed lines, accepts
//! comments and any `max_age`, where RFC 8461 3.2 defines an exact grammar; a policy that
//! does not follow it is no policy (5.1), which is the safe reading for a sender.

use serde::{Deserialize, Serialize};

/// RFC 8461 3.2: `max_age` is at most 31557600 seconds (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// A policy's `mode` (RFC 8461 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to a matching MX over verified TLS; otherwise defer.
    Enforce,
    /// Check as for `enforce`, report failures, deliver anyway.
    Testing,
    /// The domain withdrew its policy: as if there were none.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// `mx` patterns in lower case: a host name, or `*.` and a domain (one label, 4.1).
    pub mx: Vec<String>,
    /// Seconds the policy may be cached (3.2).
    pub max_age: u64,
}

/// The `id` of a valid `_mta-sts` TXT record (RFC 8461 3.1): `v=STSv1; id=...`, the `id`
/// being 1 to 32 letters and digits. Of several TXT records only those starting with
/// `v=STSv1` count, and exactly one must remain (3.1).
pub fn record_id(records: &[String]) -> Option<String> {
    let sts: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("v=STSv1"))
        .collect();
    let [record] = sts.as_slice() else {
        return None;
    };
    let mut fields = record.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next() != Some("v=STSv1") {
        return None;
    }
    let mut id = None;
    for field in fields {
        if field.is_empty() {
            // A trailing `;` (sts-field-delim at the end) is allowed.
            continue;
        }
        let (name, value) = field.split_once('=')?;
        if name == "id" {
            let ok =
                (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok || id.is_some() {
                return None;
            }
            id = Some(value.to_string());
        } else if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return None;
        }
    }
    id
}

/// Parses a policy file (RFC 8461 3.2): `key: value` lines ending in CRLF or LF, in any
/// order: `version` (`STSv1`), `mode`, `max_age` and one or more `mx` (required unless the
/// mode is `none`); names and values are case-sensitive (`%s` in the ABNF), unknown keys are
/// ignored, a repeated single key is an error.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    // The final line break is optional; an empty last piece is just its end.
    let lines = match lines.split_last() {
        Some((&"", rest)) => rest,
        _ => &lines[..],
    };
    for (n, line) in lines.iter().enumerate() {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: not `key: value`", n + 1))?;
        let value = value.trim_matches([' ', '\t']);
        let once = |seen: bool| match seen {
            true => Err(format!("line {}: `{key}` given twice", n + 1)),
            false => Ok(()),
        };
        match key {
            "version" => {
                once(version.is_some())?;
                if value != "STSv1" {
                    return Err(format!("unsupported version {value:?}"));
                }
                version = Some(());
            }
            "mode" => {
                once(mode.is_some())?;
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err(format!("unknown mode {value:?}")),
                });
            }
            "max_age" => {
                once(max_age.is_some())?;
                let secs: u64 = match value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit())
                {
                    true => value
                        .parse()
                        .map_err(|_| format!("bad max_age {value:?}"))?,
                    false => return Err(format!("bad max_age {value:?}")),
                };
                if secs > MAX_AGE_LIMIT {
                    return Err(format!("max_age {secs} is over {MAX_AGE_LIMIT}"));
                }
                max_age = Some(secs);
            }
            "mx" => {
                if !valid_pattern(value) {
                    return Err(format!("bad mx pattern {value:?}"));
                }
                mx.push(value.to_ascii_lowercase());
            }
            // sts-policy-ext-name: letters, digits, `_`, `-`, `.` (3.2); unknown ones are ignored.
            k if !k.is_empty()
                && k.len() <= 32
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') => {}
            _ => return Err(format!("line {}: bad field name", n + 1)),
        }
    }
    version.ok_or("no version")?;
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// A host name, optionally with a leading `*.` (RFC 8461 3.2 sts-policy-mx-value).
fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Policy {
    /// Whether MX host `host` is one the policy names (RFC 8461 4.1): an exact match, or
    /// `*.domain` matching exactly one more leading label. Case-insensitive, trailing dot
    /// ignored.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
            None => *p == host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(texts: &[&str]) -> Option<String> {
        record_id(&texts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn txt_records() {
        assert_eq!(
            rec(&["v=STSv1; id=20160831085700Z;"]).as_deref(),
            Some("20160831085700Z")
        );
        assert_eq!(rec(&["v=STSv1;id=abc"]).as_deref(), Some("abc"));
        assert_eq!(
            rec(&["v=spf1 -all", "v=STSv1; id=a1; ext=x"]).as_deref(),
            Some("a1")
        );
        // Two STS records, no id, a bad id, a wrong version: no policy (3.1).
        assert_eq!(rec(&["v=STSv1; id=a", "v=STSv1; id=b"]), None);
        assert_eq!(rec(&["v=STSv1;"]), None);
        assert_eq!(rec(&["v=STSv1; id=has-dash"]), None);
        assert_eq!(
            rec(&["v=STSv1; id=123456789012345678901234567890123"]),
            None
        );
        assert_eq!(rec(&["v=STSv10; id=a"]), None);
        assert_eq!(rec(&[]), None);
    }

    #[test]
    fn policy_files() {
        let p = parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET\r\nmax_age: 604800\r\n").unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, vec!["mail.example.com", "*.example.net"]);
        assert_eq!(p.max_age, 604800);
        // LF, no final line break, an unknown key.
        let p =
            parse_policy("version: STSv1\nmode: testing\nmx: a.test\nfoo_bar: 1\nmax_age: 86400")
                .unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
    }

    #[test]
    fn bad_policy_files() {
        for bad in [
            "",
            "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.test\n",
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n",
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
            "version: STSv1\nmode: enforce\nmode: testing\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\n# comment\nmx: a.test\nmax_age: 1\n",
            "<html>\nversion: STSv1\n",
        ] {
            assert!(parse_policy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mx_matching() {
        let p = Policy {
            mode: Mode::Enforce,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            max_age: 1,
        };
        assert!(p.matches("mail.example.com"));
        assert!(p.matches("MAIL.Example.com."));
        assert!(p.matches("mx1.example.net"));
        // A wildcard covers one label only, and not the parent itself (RFC 8461 4.1).
        assert!(!p.matches("a.b.example.net"));
        assert!(!p.matches("example.net"));
        assert!(!p.matches("other.example.com"));
    }
}
