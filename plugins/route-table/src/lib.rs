//! Delivery routing by recipient domain: a `routes` table from domain (or `*.domain`) to a
//! destination (README.md documents the configuration). Domains not in the table get
//! `continue`, i.e. the server's own routing ([[delivery.route]], local domains, MX).
//!
//! There is deliberately no catch-all `*`: this hook runs before the server knows whether a
//! domain is local, so a catch-all would send local mail away. The server's own
//! `[[delivery.route]] domain = "*"` is the safe way to get a smart host for everything else.

use corvid_plugin_sdk::*;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
enum Dest {
    /// Explicitly the server's default routing (carves a domain out of a wildcard).
    Continue,
    Local,
    /// MX lookup of this domain; `None`: of the recipient's own domain.
    Mx(Option<String>),
    Relay(String, u16),
    Drop,
}

pub struct RouteTable {
    exact: HashMap<String, Dest>,
    /// `*.corp.example` is stored under `corp.example`.
    wildcard: HashMap<String, Dest>,
}

impl Plugin for RouteTable {
    const NAME: &'static str = "route-table";
    const STAGES: &'static [Stage] = &[Stage::Route];

    /// Holds only its configuration, so the value is kept between transactions (no re-read).
    fn reset(&mut self) -> bool {
        true
    }

    fn new(config: &Config) -> Result<Self, String> {
        config.check_keys(&["routes"])?;
        let mut t = RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (domain, to) in config.get_map::<String>("routes")? {
            let bad = |why: String| format!("config key `routes`: {domain:?} = {to:?}: {why}");
            let dest = parse_dest(to.trim()).map_err(bad)?;
            let d = normalize(&domain);
            let (map, name) = match d.strip_prefix("*.") {
                Some(parent) => (&mut t.wildcard, parent.to_string()),
                None => (&mut t.exact, d.clone()),
            };
            if !is_domain(&name) {
                return Err(bad(
                    "the key must be a domain or *.domain (there is no catch-all)".to_string(),
                ));
            }
            map.insert(name, dest);
        }
        if t.exact.is_empty() && t.wildcard.is_empty() {
            return Err("config key `routes`: the table is empty".to_string());
        }
        Ok(t)
    }

    fn on_route(&mut self, req: &RouteRequest) -> RouteDecision {
        let domain = normalize(&req.recipient.domain);
        match self.lookup(&domain) {
            None | Some(Dest::Continue) => RouteDecision::Continue,
            Some(Dest::Local) => RouteDecision::Local,
            Some(Dest::Mx(None)) => RouteDecision::Mx(domain),
            Some(Dest::Mx(Some(d))) => RouteDecision::Mx(d.clone()),
            Some(Dest::Relay(host, port)) => RouteDecision::Relay(RelayHost {
                host: host.clone(),
                port: *port,
            }),
            Some(Dest::Drop) => RouteDecision::Drop,
        }
    }
}

impl RouteTable {
    /// The exact entry, else the wildcard of the nearest parent (`*.a.corp` before `*.corp`).
    fn lookup(&self, domain: &str) -> Option<&Dest> {
        if let Some(d) = self.exact.get(domain) {
            return Some(d);
        }
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(d) = self.wildcard.get(parent) {
                return Some(d);
            }
            rest = parent;
        }
        None
    }
}

fn parse_dest(to: &str) -> Result<Dest, String> {
    if to.starts_with("lmtp:") {
        return Err("LMTP is not expressible by a plugin (the corvid:plugin@0.1.0 route decision has no LMTP variant); use the server's [[delivery.route]] for LMTP".to_string());
    }
    if let Some(rest) = to.strip_prefix("smtp://") {
        let (host, port) = host_port(rest.trim_end_matches('/'))?;
        return Ok(Dest::Relay(host, port));
    }
    if let Some(d) = to.strip_prefix("mx:") {
        let d = normalize(d);
        return match is_domain(&d) {
            true => Ok(Dest::Mx(Some(d))),
            false => Err(format!("{d:?} is not a domain")),
        };
    }
    match to {
        "local" => Ok(Dest::Local),
        "mx" => Ok(Dest::Mx(None)),
        "drop" => Ok(Dest::Drop),
        "continue" => Ok(Dest::Continue),
        _ => Err("expected local, mx, mx:domain, smtp://host[:port], drop or continue".to_string()),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; port 25 by default. The host is returned without
/// brackets, which is how the server expects an IP literal.
fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (h, after) = rest.split_once(']').ok_or("unclosed [")?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{h:?} is not an IPv6 address"));
            }
            (h, after.strip_prefix(':'))
        }
        None => match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let port = match port {
        None => 25,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{p:?} is not a port")),
        },
    };
    if !(s.starts_with('[') || is_domain(&host.to_ascii_lowercase())) {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn normalize(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// LDH labels (plus `_`, seen in real names), which also covers IPv4 literals.
fn is_domain(d: &str) -> bool {
    d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

export_plugin!(RouteTable);

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_sdk::testing::*;

    const ROUTES: &str = r#"{ "example.org" = "local", "Partner.Example" = "smtp://mx.partner.example:2525", "*.corp.example" = "smtp://relay.corp.example", "*.eu.corp.example" = "smtp://[2001:db8::25]:587", "public.eu.corp.example" = "continue", "alias.example" = "mx:real.example", "direct.example" = "mx", "void.example" = "drop" }"#;

    fn plugin(pairs: &[(&str, &str)]) -> RouteTable {
        configured(pairs)
    }

    fn refused(routes: &str) -> String {
        RouteTable::new(&Config::from_pairs([("routes", routes)]))
            .err()
            .unwrap_or_else(|| panic!("accepted: {routes}"))
    }

    fn route(p: &mut RouteTable, to: &str) -> RouteDecision {
        p.on_route(&RouteRequest {
            queue_id: "q1".into(),
            sender: None,
            recipient: addr(to),
        })
    }

    fn relay(host: &str, port: u16) -> RouteDecision {
        RouteDecision::Relay(RelayHost {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn each_destination_kind() {
        let mut p = plugin(&[("routes", ROUTES)]);
        assert_eq!(route(&mut p, "a@Example.ORG."), RouteDecision::Local);
        assert_eq!(
            route(&mut p, "a@partner.example"),
            relay("mx.partner.example", 2525)
        );
        assert_eq!(
            route(&mut p, "a@alias.example"),
            RouteDecision::Mx("real.example".into())
        );
        assert_eq!(
            route(&mut p, "a@Direct.Example"),
            RouteDecision::Mx("direct.example".into())
        );
        assert_eq!(route(&mut p, "a@void.example"), RouteDecision::Drop);
        assert_eq!(
            route(&mut p, "a@elsewhere.example"),
            RouteDecision::Continue
        );
    }

    #[test]
    fn wildcards_match_subdomains_and_the_most_specific_wins() {
        let mut p = plugin(&[("routes", ROUTES)]);
        assert_eq!(
            route(&mut p, "a@hq.corp.example"),
            relay("relay.corp.example", 25)
        );
        assert_eq!(
            route(&mut p, "a@x.y.corp.example"),
            relay("relay.corp.example", 25)
        );
        assert_eq!(
            route(&mut p, "a@corp.example"),
            RouteDecision::Continue,
            "*.corp.example is only the subdomains"
        );
        assert_eq!(
            route(&mut p, "a@paris.eu.corp.example"),
            relay("2001:db8::25", 587)
        );
        assert_eq!(
            route(&mut p, "a@eu.corp.example"),
            relay("relay.corp.example", 25)
        );
        assert_eq!(
            route(&mut p, "a@public.eu.corp.example"),
            RouteDecision::Continue,
            "an exact continue carves a domain out of a wildcard"
        );
    }

    #[test]
    fn relay_hosts_parse_like_the_servers_routes() {
        assert_eq!(host_port("relay.example"), Ok(("relay.example".into(), 25)));
        assert_eq!(
            host_port("Relay.Example:587"),
            Ok(("relay.example".into(), 587))
        );
        assert_eq!(host_port("192.0.2.25:26"), Ok(("192.0.2.25".into(), 26)));
        assert_eq!(host_port("[2001:db8::1]"), Ok(("2001:db8::1".into(), 25)));
        for bad in [
            "",
            "relay.example:0",
            "relay.example:x",
            "[2001:db8::1",
            "[nope]:25",
            "a b:25",
            "2001:db8::1",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        assert!(
            refused(r#"{ "a.example" = "lmtp://127.0.0.1:24" }"#).contains("[[delivery.route]]")
        );
        assert!(refused(r#"{ "a.example" = "lmtp:unix:/run/lmtp" }"#).contains("LMTP"));
        assert!(refused(r#"{ "a.example" = "smtp://relay:99999" }"#).contains("not a port"));
        assert!(refused(r#"{ "a.example" = "relay.example" }"#).contains("expected local"));
        assert!(refused(r#"{ "a.example" = "mx:bad domain" }"#).contains("not a domain"));
        assert!(refused(r#"{ "*" = "smtp://relay.example" }"#).contains("no catch-all"));
        assert!(refused(r#"{ "a.*.example" = "local" }"#).contains("domain or *.domain"));
        assert!(refused("{}").contains("empty"));
        assert!(refused("local").contains("expected a table"));
        assert!(RouteTable::new(&Config::from_pairs([("route", "{}")]))
            .err()
            .is_some_and(|e| e.contains("unknown key")));
    }
}
