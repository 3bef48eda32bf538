//! TLSA lookups through a validating hickory resolver (RFC 4035 validation in hickory's
//! `DnssecDnsHandle`), with the root trust anchors or those of `delivery.dane.trust_anchor`.

use super::{negative_ttl, Tlsa, TlsaAnswer, TlsaDns, TlsaError};
use async_trait::async_trait;
use base64::Engine;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::dnssec::{Algorithm, Proof, PublicKeyBuf, TrustAnchors};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveErrorKind, TokioResolver};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The validating resolver for TLSA records.
pub struct HickoryTlsa {
    resolver: TokioResolver,
    /// The zones of the configured trust anchor (lower case, no trailing dot).
    anchored: Vec<String>,
}

impl HickoryTlsa {
    /// On `nameservers` (else `/etc/resolv.conf`), validating from the trust anchors in
    /// `trust_anchor` (DNSKEY records in zone file syntax) or else the IANA root keys.
    pub fn new(nameservers: &[SocketAddr], trust_anchor: Option<&Path>) -> Result<Self, String> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| e.to_string())?
        } else {
            let mut config = ResolverConfig::new();
            for &addr in nameservers {
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let mut anchored = Vec::new();
        if let Some(path) = trust_anchor {
            let (anchors, zones) = load_trust_anchor(path)?;
            builder = builder.with_trust_anchor(Arc::new(anchors));
            anchored = zones;
        }
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        opts.ndots = 0;
        opts.validate = true;
        Ok(HickoryTlsa {
            resolver: builder.build(),
            anchored,
        })
    }
}

/// The DNSKEY records of a trust anchor file: `<name> [ttl] [IN] DNSKEY <flags> <protocol>
/// <algorithm> <base64...>` per line, `;` starts a comment (the `.key` files of
/// `ldns-keygen` and `dnssec-keygen` have this form). At least one key. Also returns the
/// zones the keys belong to.
pub fn load_trust_anchor(path: &Path) -> Result<(TrustAnchors, Vec<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut anchors = TrustAnchors::empty();
    let mut zones = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| w.eq_ignore_ascii_case("DNSKEY")) else {
            continue;
        };
        let bad = || format!("{}:{}: not a DNSKEY record", path.display(), n + 1);
        let fields = words
            .get(at + 1..)
            .filter(|f| f.len() >= 4)
            .ok_or_else(bad)?;
        let algorithm: u8 = fields[2].parse().map_err(|_| bad())?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(fields[3..].concat())
            .map_err(|_| bad())?;
        anchors.insert(&PublicKeyBuf::new(key, Algorithm::from_u8(algorithm)));
        let zone = words[0].trim_end_matches('.').to_ascii_lowercase();
        if at > 0 && !zones.contains(&zone) {
            zones.push(zone);
        }
    }
    if anchors.is_empty() {
        return Err(format!("{}: no DNSKEY record in it", path.display()));
    }
    Ok((anchors, zones))
}

/// Whether `name` is at or below one of `zones`.
fn under(name: &str, zones: &[String]) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    zones
        .iter()
        .find(|z| z.is_empty() || name == **z || name.ends_with(&format!(".{z}")))
        .cloned()
}

fn absolute(name: &str) -> String {
    match name.ends_with('.') {
        true => name.to_string(),
        false => format!("{name}."),
    }
}

#[async_trait]
impl TlsaDns for HickoryTlsa {
    async fn tlsa(&self, name: &str) -> Result<TlsaAnswer, TlsaError> {
        let lookup = match self.resolver.lookup(absolute(name), RecordType::TLSA).await {
            Ok(l) => l,
            Err(e) => {
                if let ResolveErrorKind::Proto(p) = e.kind() {
                    match p.kind() {
                        ProtoErrorKind::NoRecordsFound {
                            negative_ttl: t, ..
                        } => {
                            return Ok(TlsaAnswer::NoRecords {
                                ttl: negative_ttl(*t),
                            })
                        }
                        // A denial of existence that did not validate (RFC 4035 5.4).
                        ProtoErrorKind::Nsec { proof, .. } => {
                            return Err(TlsaError(format!("DNSSEC denial of existence is {proof}")))
                        }
                        _ => {}
                    }
                }
                return Err(TlsaError(e.to_string()));
            }
        };
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        let mut records = Vec::new();
        let mut secure = true;
        for record in lookup.records() {
            let RData::TLSA(tlsa) = record.data() else {
                continue;
            };
            match record.proof() {
                Proof::Secure => {}
                // Data of a zone with a configured trust anchor cannot be insecure (RFC 4035
                // 4.3): hickory proves "no DS" from the zone's own NSEC when it asks the zone's
                // authoritative server, so a key that does not match the anchor would pass as
                // insecure. An unsigned zone below the anchor is refused with it.
                Proof::Insecure => match under(name, &self.anchored) {
                    Some(zone) => {
                        return Err(TlsaError(format!(
                            "DNSSEC validation of {name} TLSA: insecure below the trust anchor of {zone}"
                        )))
                    }
                    None => secure = false,
                },
                // RFC 7672 2.2: a bogus (or indeterminate) RRset is a lookup failure.
                other => {
                    return Err(TlsaError(format!(
                        "DNSSEC validation of {name} TLSA: {other}"
                    )))
                }
            }
            records.push(Tlsa {
                usage: u8::from(tlsa.cert_usage()),
                selector: u8::from(tlsa.selector()),
                matching: u8::from(tlsa.matching()),
                data: tlsa.cert_data().to_vec(),
            });
        }
        if records.is_empty() {
            return Ok(TlsaAnswer::NoRecords {
                ttl: negative_ttl(None),
            });
        }
        Ok(TlsaAnswer::Records {
            records,
            secure,
            ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn names_below_an_anchored_zone() {
        let zones = vec!["dane.test".to_string()];
        assert_eq!(
            under("_25._tcp.MX.dane.test.", &zones).as_deref(),
            Some("dane.test")
        );
        assert_eq!(under("dane.test", &zones).as_deref(), Some("dane.test"));
        assert_eq!(under("mx.notdane.test", &zones), None);
        assert_eq!(
            under("mx.other.test", &[String::new()]).as_deref(),
            Some("")
        );
    }
}
