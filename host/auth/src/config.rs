//! Configuration structs (serde), for the binary to embed in its config file:
//! `[auth_checks]` for the inbound checks and `[dkim]` with `[[dkim.key]]` for signing.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[auth_checks]`: inbound SPF, DKIM, DMARC and ARC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthChecksConfig {
    /// Whether the server runs the checks at all (read by the caller; this crate checks
    /// whatever it is asked).
    pub enabled: bool,
    /// The authserv-id of `Authentication-Results:` (RFC 8601 section 2.5); usually the
    /// server's hostname. Empty: the caller substitutes `server.hostname`.
    pub authserv_id: String,
    /// What the default policy does with a DMARC failure: `enforce` honours `p=reject`
    /// (550 5.7.1) and `p=quarantine`; `off` only reports.
    pub dmarc_policy: DmarcEnforcement,
    /// DNS servers to ask (`IP:PORT`); empty: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Time for one DNS query (per attempt).
    #[serde(with = "humantime_secs")]
    pub dns_timeout: Duration,
    /// Overall time for one SPF evaluation. RFC 7208 section 4.6.4 asks for at least 20 s.
    #[serde(with = "humantime_secs")]
    pub spf_timeout: Duration,
    /// Overall time for the DKIM, ARC and DMARC checks of one message.
    #[serde(with = "humantime_secs")]
    pub message_timeout: Duration,
    /// DKIM signatures verified per message; further ones are reported `not_checked` and
    /// logged (RFC 6376 section 6.1 lets a verifier limit the signatures it checks).
    pub max_dkim_signatures: usize,
    /// Parsed DNS records kept in the cache (TXT, A, AAAA, MX, PTR each), for their TTL.
    pub cache_entries: usize,
}

impl Default for AuthChecksConfig {
    fn default() -> Self {
        AuthChecksConfig {
            enabled: true,
            authserv_id: String::new(),
            dmarc_policy: DmarcEnforcement::Enforce,
            nameservers: Vec::new(),
            dns_timeout: Duration::from_secs(5),
            spf_timeout: Duration::from_secs(20),
            message_timeout: Duration::from_secs(30),
            max_dkim_signatures: 10,
            cache_entries: 10_000,
        }
    }
}

/// `auth_checks.dmarc_policy`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DmarcEnforcement {
    Enforce,
    Off,
}

/// `[dkim]`: outbound signing and ARC sealing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Signing keys; several for one domain sign together (a rotation).
    pub key: Vec<DkimKeyConfig>,
    /// Header fields to sign when present. Empty: [`crate::sign::DEFAULT_SIGNED_HEADERS`].
    pub headers: Vec<String>,
    /// Domains whose keys ARC-seal mail that Corvid forwards (RFC 8617 section 5.1).
    pub arc_seal_domains: Vec<String>,
}

/// One `[[dkim.key]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the TXT record is at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// `ed25519` or `rsa` (rsa-sha256; 2048 bits or more).
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
    /// PEM private key (PKCS#8, or PKCS#1 for RSA), read by the binary. Empty: the binary's
    /// default (`<data_dir>/dkim/DOMAIN.SELECTOR.pem` for `corvid serve`).
    #[serde(default)]
    pub key_file: PathBuf,
    /// Generate the key (mode 0600) when the file does not exist yet, at start, and log the
    /// DNS TXT record to publish; for development setups. Otherwise a missing file is an error.
    #[serde(default)]
    pub generate: bool,
    /// First day (UTC, `YYYY-MM-DD` or RFC 3339) this key signs; absent: already.
    #[serde(default)]
    pub start: Option<String>,
    /// Day (UTC) from which it no longer signs; absent: never stops.
    #[serde(default)]
    pub stop: Option<String>,
}

/// `dkim.key.algorithm`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    Ed25519,
    #[serde(alias = "rsa-sha256")]
    Rsa,
}

impl KeyAlgorithm {
    /// The `k=` tag of the DNS record (RFC 6376 section 3.6.1, RFC 8463).
    pub fn dns_k(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa => "rsa",
        }
    }
}

/// Durations as "5s", "2m" or a number of seconds.
mod humantime_secs {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", d.as_secs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => {
                parse(&t).ok_or_else(|| D::Error::custom(format!("bad duration `{t}`")))
            }
        }
    }

    fn parse(t: &str) -> Option<Duration> {
        let t = t.trim();
        let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
        let n: u64 = num.parse().ok()?;
        match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => Some(Duration::from_secs(n * 60)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tables_with_defaults_and_rejects_unknown_keys() {
        let c: AuthChecksConfig = toml::from_str(
            "dmarc_policy = \"off\"\nnameservers = [\"127.0.0.1:5353\"]\ndns_timeout = \"2s\"",
        )
        .expect("parse");
        assert_eq!(c.dmarc_policy, DmarcEnforcement::Off);
        assert_eq!(c.dns_timeout, Duration::from_secs(2));
        assert_eq!(c.max_dkim_signatures, 10);
        assert!(toml::from_str::<AuthChecksConfig>("bogus = 1").is_err());

        let d: DkimConfig = toml::from_str(
            "[[key]]\ndomain = \"a.test\"\nselector = \"s1\"\nalgorithm = \"rsa\"\nkey_file = \"k.pem\"\nstop = \"2027-01-01\"\n",
        )
        .expect("parse");
        assert_eq!(d.key[0].algorithm, KeyAlgorithm::Rsa);
        assert_eq!(d.key[0].stop.as_deref(), Some("2027-01-01"));
    }
}
