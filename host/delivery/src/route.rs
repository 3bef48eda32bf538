//! Routing: where the mail for one recipient goes.
//!
//! Order, first answer wins:
//! 1. the [`DeliveryPolicy`]'s `route` (the plugins' `route` stage, installed with
//!    [`crate::Dispatcher::with_policy`]);
//! 2. a static route whose `domain` is the recipient's domain (case-insensitive);
//! 3. local domains go to the local Maildir;
//! 4. the `*` route, when there is one (a smart host for everything else);
//! 5. the domain's MX hosts.
//!
//! A local domain is only routed away by a route naming it exactly, so `*` to a smart host
//! never sends local mail out.

use corvid_types::delivery_call::TlsPolicy;
#[cfg(doc)]
use corvid_types::DeliveryPolicy;
use corvid_types::{Address, Directory, Route};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Default ports: SMTP's well-known 25, and 24 for LMTP (RFC 2033 assigns none; 24 is IANA's
/// "any private mail system", the customary LMTP port).
const SMTP_PORT: u16 = 25;
const LMTP_PORT: u16 = 24;

/// A `host:port` next hop.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A route's `to`: `local`, `mx`, `smtp://host[:port]`, `lmtp://host[:port]`,
/// `lmtp:unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Target {
    Local,
    Mx,
    Smtp(HostPort),
    Lmtp(HostPort),
    LmtpUnix(PathBuf),
}

impl TryFrom<String> for Target {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = |why: &str| format!("route target `{s}`: {why}");
        if s == "local" {
            return Ok(Target::Local);
        }
        if s == "mx" {
            return Ok(Target::Mx);
        }
        if let Some(path) = s.strip_prefix("lmtp:unix:") {
            if !path.starts_with('/') {
                return Err(bad("the socket path must be absolute"));
            }
            return Ok(Target::LmtpUnix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("smtp://") {
            return host_port(rest, SMTP_PORT).map(Target::Smtp).map_err(&bad);
        }
        if let Some(rest) = s.strip_prefix("lmtp://") {
            return host_port(rest, LMTP_PORT).map(Target::Lmtp).map_err(&bad);
        }
        Err(bad(
            "expected local, mx, smtp://host:port, lmtp://host:port or lmtp:unix:/path",
        ))
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(s: &str, default_port: u16) -> Result<HostPort, &'static str> {
    let s = s.trim_end_matches('/');
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed [")?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains('/') {
        return Err("missing or invalid host");
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| "invalid port")?,
        None => default_port,
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// Credentials for a smart host (RFC 4954 AUTH PLAIN). Sent only over TLS.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AuthConfig {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// How a next hop's TLS is handled (a route's or a domain's `tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// No STARTTLS, even when offered.
    None,
    /// STARTTLS when offered, any certificate accepted and recorded as verified or not; a
    /// failed handshake is retried in clear text (RFC 7435).
    Opportunistic,
    /// STARTTLS required and the certificate verified against the trust anchors for the host
    /// name connected to (the MX host name, RFC 7672 3.2.2); otherwise the mail is deferred
    /// (4.7.5 for a certificate failure, as RFC 8461 4.2 uses it; 4.7.10 without STARTTLS).
    Verify,
    /// DANE (RFC 7672) for MX delivery: an MX host with secure, usable TLSA records must
    /// present a matching certificate (else 4.7.5); one without falls back to the MTA-STS
    /// policy or opportunistic TLS. A smart host is treated as `verify`.
    Dane,
    /// Like `dane`, but an MX host without secure, usable TLSA records is not used (4.7.5).
    #[serde(rename = "dane-only")]
    DaneOnly,
}

/// One `[[delivery.route]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// A recipient domain, or `*` for every domain without a route of its own.
    pub domain: String,
    pub to: Target,
    /// Smart host credentials (only with `smtp://`).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Fail (temporarily, 4.7.10) instead of sending in clear text when the next hop does
    /// not offer STARTTLS or the handshake fails.
    #[serde(default)]
    pub require_tls: bool,
    /// The TLS policy for this route; by default `opportunistic` (or `none` when
    /// `opportunistic_tls` is off). A route with `auth` must say `verify`.
    #[serde(default)]
    pub tls: Option<TlsMode>,
}

impl RouteEntry {
    /// A route that would send a password without a verified certificate, or that asks for
    /// TLS and for none at once, is refused.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.domain;
        if self.auth.is_some() && self.tls != Some(TlsMode::Verify) {
            return Err(format!(
                "route for {name:?}: a route with `auth` needs `tls = \"verify\"` (the password must only go to a verified server)"
            ));
        }
        if self.auth.is_some() && !matches!(self.to, Target::Smtp(_)) {
            return Err(format!("route for {name:?}: `auth` only goes with smtp://"));
        }
        if self.require_tls && self.tls == Some(TlsMode::None) {
            return Err(format!(
                "route for {name:?}: `require_tls` contradicts `tls = \"none\"`"
            ));
        }
        Ok(())
    }
}

/// Where a recipient's mail goes, after routing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    Local,
    /// Dropped without delivery or bounce, by a plugin's `route` decision.
    Discard,
    /// The MX hosts of this (lower-case) domain.
    Mx(String),
    Smtp(HostPort),
    Lmtp(HostPort),
    LmtpUnix(PathBuf),
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Local => f.write_str("local"),
            NextHop::Discard => f.write_str("discard"),
            NextHop::Mx(d) => write!(f, "mx:{d}"),
            NextHop::Smtp(hp) => write!(f, "smtp://{hp}"),
            NextHop::Lmtp(hp) => write!(f, "lmtp://{hp}"),
            NextHop::LmtpUnix(p) => write!(f, "lmtp:unix:{}", p.display()),
        }
    }
}

/// A next hop with the route's options. Recipients of one message with equal destinations
/// are sent in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub hop: NextHop,
    pub require_tls: bool,
    pub auth: Option<AuthConfig>,
    /// The route's or the recipient domain's TLS policy; `None` for the default.
    pub tls: Option<TlsMode>,
    /// For MX delivery: the recipient domain, whose MTA-STS policy applies (RFC 8461: the
    /// policy is the recipient domain's, never the MX host's). It is part of the destination,
    /// so two domains routed to the same MX hosts never share a session or a policy.
    pub policy_domain: Option<String>,
    /// `tls` is what a plugin's `route` stage asked for (`delivery-tls.set-route-tls`),
    /// stricter than the configured one: it is recorded with the source `plugin`, and the
    /// recipient domain's MTA-STS policy still applies under it.
    pub tls_by_plugin: bool,
}

impl Destination {
    pub fn new(hop: NextHop) -> Self {
        Destination {
            hop,
            require_tls: false,
            auth: None,
            tls: None,
            policy_domain: None,
            tls_by_plugin: false,
        }
    }

    /// With the TLS policy a plugin's `route` stage asked for (`wit/delivery-tls.wit`): the
    /// stricter of it and the configured one (without one, the default counts as
    /// `opportunistic`); on a tie the configured one stays. Hops without TLS (local, dropped,
    /// an LMTP socket) keep their destination. What the configuration requires
    /// beyond `tls` (`auth`'s verified TLS, `require_tls`) is kept by the delivery whatever
    /// `tls` says, and DANE, when enabled, still checks MX hosts with TLSA records under a
    /// plugin's `verify` (`remote::dane_policy::dane_wanted`).
    pub fn with_plugin_tls(mut self, asked: Option<TlsPolicy>) -> Destination {
        let local = matches!(
            self.hop,
            NextHop::Local | NextHop::Discard | NextHop::LmtpUnix(_)
        );
        let Some(asked) = asked.map(TlsMode::from).filter(|_| !local) else {
            return self;
        };
        let configured = self.tls.unwrap_or(TlsMode::Opportunistic);
        if asked.strictness() > configured.strictness() {
            self.tls = Some(asked);
            self.tls_by_plugin = true;
        }
        self
    }
}

impl TlsMode {
    /// How strict a mode is, for a plugin's ask: `none` < `opportunistic` < `verify` =
    /// `dane` < `dane-only`. `verify` and `dane` both authenticate the next hop (by WebPKI,
    /// by TLSA records) and neither replaces the other.
    fn strictness(self) -> u8 {
        match self {
            TlsMode::None => 0,
            TlsMode::Opportunistic => 1,
            TlsMode::Verify | TlsMode::Dane => 2,
            TlsMode::DaneOnly => 3,
        }
    }
}

impl From<TlsPolicy> for TlsMode {
    fn from(p: TlsPolicy) -> Self {
        match p {
            TlsPolicy::None => TlsMode::None,
            TlsPolicy::Opportunistic => TlsMode::Opportunistic,
            TlsPolicy::Verify => TlsMode::Verify,
            TlsPolicy::Dane => TlsMode::Dane,
            TlsPolicy::DaneOnly => TlsMode::DaneOnly,
        }
    }
}

/// A policy's route decision as a destination; `None` for "no opinion".
pub fn from_policy(route: Route) -> Option<Destination> {
    let hop = match route {
        Route::Continue => return None,
        Route::Local => NextHop::Local,
        Route::Mx(domain) => NextHop::Mx(domain.to_ascii_lowercase()),
        Route::Relay { host, port } => NextHop::Smtp(HostPort { host, port }),
        Route::Drop => NextHop::Discard,
    };
    Some(Destination::new(hop))
}

/// The static routes (`[[delivery.route]]`), replaced whole by a config reload (SIGHUP in the
/// binary): a lookup resolves on one version, a delivery already routed keeps its hop.
#[derive(Debug, Default)]
pub struct RouteTable(std::sync::RwLock<Arc<Vec<RouteEntry>>>);

impl RouteTable {
    pub fn replace(&self, routes: Vec<RouteEntry>) {
        // The lock only ever holds a whole table, so a poisoned one is still consistent.
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }

    fn load(&self) -> Arc<Vec<RouteEntry>> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The static part of routing: the table from the config and the local domains.
pub struct Router {
    routes: Arc<RouteTable>,
    directory: Arc<Directory>,
    /// `delivery.tls.domains`: TLS policies by recipient domain (lower case).
    domain_tls: BTreeMap<String, TlsMode>,
}

impl Router {
    pub fn new(routes: Vec<RouteEntry>, directory: Arc<Directory>) -> Self {
        let table = RouteTable::default();
        table.replace(routes);
        Router {
            routes: Arc::new(table),
            directory,
            domain_tls: BTreeMap::new(),
        }
    }

    /// Routes through `table`, which a reload may replace.
    pub fn with_table(mut self, table: Arc<RouteTable>) -> Self {
        self.routes = table;
        self
    }

    /// With TLS policies by recipient domain (a route's own `tls` wins).
    pub fn with_domain_tls(mut self, policies: &BTreeMap<String, TlsMode>) -> Self {
        self.domain_tls = policies
            .iter()
            .map(|(d, m)| (d.trim_end_matches('.').to_ascii_lowercase(), *m))
            .collect();
        self
    }

    /// The TLS policy configured for a recipient domain.
    pub fn domain_tls(&self, domain: &str) -> Option<TlsMode> {
        self.domain_tls.get(&domain.to_ascii_lowercase()).copied()
    }

    pub fn route(&self, rcpt: &Address) -> Destination {
        let domain = rcpt.domain_lower();
        let routes = self.routes.load();
        let exact = routes
            .iter()
            .find(|r| r.domain.eq_ignore_ascii_case(&domain));
        if exact.is_none() && self.directory.is_local_domain(&domain) {
            return Destination::new(NextHop::Local);
        }
        let domain_tls = self.domain_tls(&domain);
        match exact.or_else(|| routes.iter().find(|r| r.domain == "*")) {
            Some(entry) => Destination {
                hop: match &entry.to {
                    Target::Local => NextHop::Local,
                    Target::Mx => NextHop::Mx(domain.clone()),
                    Target::Smtp(hp) => NextHop::Smtp(hp.clone()),
                    Target::Lmtp(hp) => NextHop::Lmtp(hp.clone()),
                    Target::LmtpUnix(p) => NextHop::LmtpUnix(p.clone()),
                },
                policy_domain: matches!(entry.to, Target::Mx).then(|| domain.clone()),
                require_tls: entry.require_tls,
                auth: entry.auth.clone(),
                tls: entry.tls.or(domain_tls),
                tls_by_plugin: false,
            },
            None => Destination {
                tls: domain_tls,
                policy_domain: Some(domain.clone()),
                ..Destination::new(NextHop::Mx(domain))
            },
        }
    }
}

#[cfg(test)]
mod tests;
