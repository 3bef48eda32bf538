//! The `[delivery]` section of the config: routes, DNS, the SMTP client's timeouts and limits.

pub use crate::client::Timeouts;
use crate::route::{RouteEntry, TlsMode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How outbound mail is routed and sent. Every key has a default, so the section may be left
/// out entirely.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// DNS servers for MX, A and AAAA lookups (`"ip:port"`, UDP then TCP). Empty: the system's
    /// `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// The port of MX hosts (RFC 5321: 25). Tests point it at a loopback port.
    pub smtp_port: u16,
    /// The name given in EHLO/HELO/LHLO; by default the server's `hostname`.
    pub helo_name: Option<String>,
    /// Try STARTTLS (RFC 3207) whenever the next hop offers it. The certificate is not
    /// verified in this opportunistic mode (MX certificates rarely match and there is no
    /// authenticated way to know the right name without DANE/MTA-STS); it only protects
    /// against passive eavesdropping (whether it verified is logged). A route with
    /// `require_tls` insists on TLS; `tls = "verify"` (a route's or `tls.domains`) insists on
    /// a verified certificate.
    pub opportunistic_tls: bool,
    /// Deliver to MX hosts that resolve to loopback addresses (RFC 3463 X.4.6 otherwise: such
    /// mail would most likely loop). For tests with peers on 127.0.0.1; a route naming a host
    /// is never checked.
    pub allow_loopback_mx: bool,
    /// Connect to IPv6 addresses of MX hosts too (tried before IPv4).
    pub ipv6: bool,
    /// At most this many MX host addresses are tried per attempt (Postfix's
    /// `smtp_mx_address_limit`).
    pub max_mx_addresses: usize,
    /// Sessions open at once to one destination (a domain's MX set, a smart host, an LMTP
    /// server).
    pub max_connections_per_destination: usize,
    /// The remote delivery permits (`queue.delivery_concurrency`) one destination may hold at
    /// once; the others stay free for other destinations, and local delivery has permits of
    /// its own (Postfix's `default_destination_concurrency_limit`).
    pub max_per_destination: usize,
    /// A session stays open this long after a message for reuse by the next one to the same
    /// destination; 0 closes it at once.
    #[serde(with = "humantime_serde")]
    pub connection_reuse_time: Duration,
    /// Messages sent over one session before it is closed.
    pub max_messages_per_connection: usize,
    /// Warn the sender after a message waited this long, for recipients that asked with
    /// `NOTIFY=DELAY` (RFC 3461). `"0s"` turns warnings off.
    #[serde(with = "humantime_serde")]
    pub delay_warning: Duration,
    /// Deliver a message whose recipients are all routed to local mailboxes into their
    /// Maildirs before answering the end of DATA, instead of queueing it first: the synced
    /// Maildir files are the durable copy the 250 waits for, and the queue only gets what
    /// that first attempt leaves pending (a failed mailbox, a policy's retry). Quarantined
    /// messages and anything for a next hop are queued as before. Saves the queue's write,
    /// read and removal of every local message; `false` queues everything first.
    pub local_at_intake: bool,
    pub timeouts: Timeouts,
    pub tls: TlsSettings,
    /// `[delivery.mta_sts]`: recipient domains' MTA-STS policies (RFC 8461).
    pub mta_sts: MtaStsSettings,
    /// `[delivery.tls_rpt]`: TLS-RPT aggregate reports (RFC 8460).
    pub tls_rpt: TlsRptSettings,
    /// `[delivery.dane]`: DANE for MX hosts (RFC 7672).
    pub dane: DaneSettings,
    /// Static routes, looked up by recipient domain (exact match first, then `*`).
    #[serde(rename = "route")]
    pub routes: Vec<RouteEntry>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            nameservers: Vec::new(),
            smtp_port: 25,
            helo_name: None,
            opportunistic_tls: true,
            allow_loopback_mx: false,
            ipv6: true,
            max_mx_addresses: 5,
            max_connections_per_destination: 10,
            max_per_destination: 4,
            connection_reuse_time: Duration::from_secs(2),
            max_messages_per_connection: 100,
            delay_warning: Duration::from_secs(4 * 3600),
            local_at_intake: true,
            timeouts: Timeouts::default(),
            tls: TlsSettings::default(),
            mta_sts: MtaStsSettings::default(),
            tls_rpt: TlsRptSettings::default(),
            dane: DaneSettings::default(),
            routes: Vec::new(),
        }
    }
}

impl DeliveryConfig {
    /// What deserializing cannot check: route combinations (`auth` needs `tls = "verify"`)
    /// and a readable `tls.ca_file`. Run at config load and by `check-config`.
    pub fn check(&self) -> Result<(), String> {
        for route in &self.routes {
            route.check()?;
        }
        if let Some(path) = &self.tls.ca_file {
            crate::client::tls::load_ca_file(path)?;
        }
        if let Some(path) = &self.dane.trust_anchor {
            crate::dane::load_trust_anchor(path)?;
        }
        Ok(())
    }
}

/// `[delivery.dane]`: DANE (RFC 7672) for MX delivery.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaneSettings {
    /// Look up the TLSA records of every MX host (with DNSSEC validation) for MX delivery
    /// that the config gives no TLS policy, as `tls = "dane"` does for one domain. Off by
    /// default: the resolver must pass DNSSEC records through.
    pub enabled: bool,
    /// DNSKEY records (zone file syntax, as in `ldns-keygen`'s `.key` files) to validate
    /// from instead of the IANA root keys: a private or test zone's keys. Every DNSKEY of
    /// that zone must be listed (no DS lookup is made for a listed zone). An insecure answer
    /// below that zone counts only when the zone's DNSKEY RRset validates from these keys.
    pub trust_anchor: Option<PathBuf>,
}

/// `[delivery.tls]`: trust anchors and TLS policies by recipient domain.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificates trusted as roots besides the Mozilla set (`webpki-roots`): a
    /// private CA, or a test CA.
    pub ca_file: Option<PathBuf>,
    /// TLS policy (`none`, `opportunistic`, `verify`) by recipient domain, for mail to that
    /// domain on any route that does not set `tls` itself.
    pub domains: BTreeMap<String, TlsMode>,
}

/// `[delivery.mta_sts]`. A policy applies to MX delivery of a recipient domain without a TLS
/// policy of its own in the config (a route's `tls` or `tls.domains` wins, RFC 8461 does not
/// override the administrator).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MtaStsSettings {
    /// Look up recipient domains' policies (`_mta-sts` TXT record, then the HTTPS policy
    /// file) and apply them.
    pub enabled: bool,
    /// The longest a policy fetch may take: resolving `mta-sts.<domain>`, connecting, TLS
    /// and the HTTP exchange together. On timeout the domain has no policy (or its cached
    /// one) for this attempt.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// The port policy hosts are fetched from: 443 (HTTPS, RFC 8461 3.3). Only tests change
    /// it, to reach a policy server on an unprivileged loopback port.
    pub port: u16,
}

impl Default for MtaStsSettings {
    fn default() -> Self {
        MtaStsSettings {
            enabled: true,
            fetch_timeout: Duration::from_secs(10),
            port: 443,
        }
    }
}

/// `[delivery.tls_rpt]`: TLS-RPT (RFC 8460) reports, to the policy domains that ask for them
/// with a `_smtp._tls` TXT record (`mailto:` addresses only).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsRptSettings {
    /// Send the aggregate reports.
    pub enabled: bool,
    /// The report period: every `interval` the counts since the last report are mailed
    /// (RFC 8460 4.1: a day). Tests shorten it.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for TlsRptSettings {
    fn default() -> Self {
        TlsRptSettings {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Target;

    #[test]
    fn empty_section_is_the_default() {
        let c: DeliveryConfig = toml::from_str("").unwrap();
        assert_eq!(c, DeliveryConfig::default());
    }

    #[test]
    fn reads_routes_and_timeouts() {
        let c: DeliveryConfig = toml::from_str(
            r#"
            nameservers = ["127.0.0.1:5353"]
            smtp_port = 2526
            delay_warning = "1h"
            timeouts = { connect = "2s" }
            [[route]]
            domain = "example.org"
            to = "smtp://relay.test:587"
            require_tls = true
            auth = { user = "u", password = "p" }
            [[route]]
            domain = "*"
            to = "lmtp:unix:/run/dovecot/lmtp"
            "#,
        )
        .unwrap();
        assert_eq!(c.smtp_port, 2526);
        assert_eq!(c.timeouts.connect, Duration::from_secs(2));
        assert_eq!(c.timeouts.data_end, Duration::from_secs(600));
        assert_eq!(c.routes.len(), 2);
        assert!(c.routes[0].require_tls);
        assert!(matches!(c.routes[1].to, Target::LmtpUnix(_)));
    }

    #[test]
    fn bad_targets_are_refused() {
        for bad in ["smtp://", "smtp://h:x", "ftp://h", "lmtp:unix:", "mx2"] {
            let text = format!("[[route]]\ndomain = \"*\"\nto = \"{bad}\"\n");
            assert!(toml::from_str::<DeliveryConfig>(&text).is_err(), "{bad}");
        }
    }
}
