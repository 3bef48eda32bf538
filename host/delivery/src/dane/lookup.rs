//! TLSA, MX and address lookups through a validating hickory resolver (RFC 4035 validation
//! in hickory's `DnssecDnsHandle`), with the root trust anchors or those of
//! `delivery.dane.trust_anchor`.

use super::{negative_ttl, DnssecError, MxAnswer, SecureDns, Tlsa, TlsaAnswer};
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

/// The validating resolver for DANE's lookups.
pub struct HickoryDnssec {
    resolver: TokioResolver,
    /// The zones of the configured trust anchor (lower case, no trailing dot).
    anchored: Vec<String>,
    /// AAAA records count (`delivery.ipv6`): without IPv6 only the A records are used, so
    /// only they are looked up and need to be secure.
    ipv6: bool,
}

impl HickoryDnssec {
    /// On `nameservers` (else `/etc/resolv.conf`), validating from the trust anchors in
    /// `trust_anchor` (DNSKEY records in zone file syntax) or else the IANA root keys.
    pub fn new(
        nameservers: &[SocketAddr],
        trust_anchor: Option<&Path>,
        ipv6: bool,
    ) -> Result<Self, String> {
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
        Ok(HickoryDnssec {
            resolver: builder.build(),
            anchored,
            ipv6,
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

/// One RRset after validation: its data (empty: no records) and whether it is secure.
struct Validated {
    data: Vec<RData>,
    /// The owner name of the records (the final target of a CNAME chain; lower case, no
    /// trailing dot), when there are any.
    owner: Option<String>,
    secure: bool,
    ttl: Duration,
}

impl HickoryDnssec {
    /// The RRset of `rtype` at `name` (and any CNAME leading to it), validated: a bogus or
    /// indeterminate record, or a denial of existence that did not validate, is an error
    /// (RFC 4035 5.5, RFC 7672 2.1.1).
    async fn validated(&self, name: &str, rtype: RecordType) -> Result<Validated, DnssecError> {
        let what = format!("{name} {rtype}");
        let lookup = match self.resolver.lookup(absolute(name), rtype).await {
            Ok(l) => l,
            Err(e) => {
                if let ResolveErrorKind::Proto(p) = e.kind() {
                    match p.kind() {
                        ProtoErrorKind::NoRecordsFound {
                            negative_ttl: t,
                            soa,
                            ..
                        } => {
                            // The denial is as secure as the SOA that came with it; hickory
                            // has checked the NSEC records already when it is.
                            let secure = soa.as_ref().is_some_and(|s| s.proof().is_secure());
                            if !secure {
                                self.insecure_allowed(name, &what).await?;
                            }
                            return Ok(Validated {
                                data: Vec::new(),
                                owner: None,
                                secure,
                                ttl: negative_ttl(*t),
                            });
                        }
                        // A denial of existence that did not validate (RFC 4035 5.4).
                        ProtoErrorKind::Nsec { proof, .. } => {
                            return Err(DnssecError(format!(
                                "DNSSEC denial of existence of {what} is {proof}"
                            )))
                        }
                        _ => {}
                    }
                }
                return Err(DnssecError(format!("{what}: {e}")));
            }
        };
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        let mut secure = true;
        let mut data = Vec::new();
        let mut owner = None;
        // The records include the CNAMEs on the way (hickory's `preserve_intermediates`, on
        // by default), so the chain is as secure as its least secure link.
        for record in lookup.records() {
            match record.proof() {
                Proof::Secure => {}
                Proof::Insecure => secure = false,
                other => return Err(DnssecError(format!("DNSSEC validation of {what}: {other}"))),
            }
            if record.record_type() == rtype {
                data.push(record.data().clone());
                owner.get_or_insert_with(|| {
                    let n = record.name().to_ascii();
                    n.trim_end_matches('.').to_ascii_lowercase()
                });
            }
        }
        if !secure {
            self.insecure_allowed(name, &what).await?;
        }
        Ok(Validated {
            data,
            owner,
            secure,
            ttl,
        })
    }

    /// An insecure answer below a zone of the configured trust anchor counts only when that
    /// zone's own DNSKEY RRset validates: then the answer is insecure because a delegation on
    /// the way has no DS, which the anchored zone's NSEC proved. When the anchor's keys are not
    /// the zone's, hickory (0.25) still calls the zone insecure: it asks for the zone's DS,
    /// the zone's own server denies it, and that denial passes. Such an answer is bogus
    /// (RFC 4035 4.3: below a trust anchor, data is secure or provably insecure).
    async fn insecure_allowed(&self, name: &str, what: &str) -> Result<(), DnssecError> {
        let Some(zone) = under(name, &self.anchored) else {
            return Ok(());
        };
        let keys = self
            .resolver
            .lookup(absolute(&zone), RecordType::DNSKEY)
            .await;
        let secure = keys.as_ref().is_ok_and(|k| {
            k.records()
                .iter()
                .any(|r| r.record_type() == RecordType::DNSKEY)
                && k.records().iter().all(|r| r.proof().is_secure())
        });
        match secure {
            true => Ok(()),
            false => Err(DnssecError(format!(
                "DNSSEC validation of {what}: insecure below the trust anchor of {zone}, whose keys do not validate"
            ))),
        }
    }
}

#[async_trait]
impl SecureDns for HickoryDnssec {
    async fn tlsa(&self, name: &str) -> Result<TlsaAnswer, DnssecError> {
        let v = self.validated(name, RecordType::TLSA).await?;
        let records: Vec<Tlsa> = v
            .data
            .iter()
            .filter_map(|d| match d {
                RData::TLSA(tlsa) => Some(Tlsa {
                    usage: u8::from(tlsa.cert_usage()),
                    selector: u8::from(tlsa.selector()),
                    matching: u8::from(tlsa.matching()),
                    data: tlsa.cert_data().to_vec(),
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(TlsaAnswer::NoRecords { ttl: v.ttl });
        }
        Ok(TlsaAnswer::Records {
            records,
            secure: v.secure,
            ttl: v.ttl,
        })
    }

    async fn mx(&self, domain: &str) -> Result<MxAnswer, DnssecError> {
        let v = self.validated(domain, RecordType::MX).await?;
        let hosts = v
            .data
            .iter()
            .filter_map(|d| match d {
                RData::MX(mx) => Some(
                    mx.exchange()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                ),
                _ => None,
            })
            .collect();
        Ok(MxAnswer {
            hosts,
            secure: v.secure,
        })
    }

    async fn address_name(&self, host: &str) -> Result<Option<String>, DnssecError> {
        let v4 = self.validated(host, RecordType::A).await?;
        let v6 = match self.ipv6 {
            true => self.validated(host, RecordType::AAAA).await?,
            false => Validated {
                data: Vec::new(),
                owner: None,
                secure: true,
                ttl: Duration::ZERO,
            },
        };
        // A family without records says nothing about the addresses used (a denial that
        // did not validate was an error above).
        let found: Vec<&Validated> = [&v4, &v6]
            .into_iter()
            .filter(|v| !v.data.is_empty())
            .collect();
        if found.is_empty() || !found.iter().all(|v| v.secure) {
            return Ok(None);
        }
        // Both families follow the same CNAME chain; should their targets differ (the
        // chain changed between the lookups), there is no one base domain to trust.
        let mut owners = found.iter().filter_map(|v| v.owner.clone());
        let first = owners.next();
        match first {
            Some(o) if owners.all(|n| n == o) => Ok(Some(o)),
            Some(_) => Err(DnssecError(format!(
                "{host}: the A and AAAA lookups end at different CNAME targets"
            ))),
            None => Ok(Some(host.trim_end_matches('.').to_ascii_lowercase())),
        }
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
