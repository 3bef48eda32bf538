//! DNS blocklist check (RFC 5782) through the host's resolver (README.md documents the
//! configuration).
//!
//! The client address is reversed under each zone (`2.0.0.127.zen.example`, IPv6 by nibbles)
//! and looked up as an A record: an answer in 127.0.0.0/24 means listed, NXDOMAIN means not
//! listed. Answers outside 127.0.0.0/24 are how some lists say "query refused" (Spamhaus
//! answers 127.255.255.x to open resolvers), so they never list anyone. DNS failures let the
//! client through: a resolver outage must not become a mail outage.
//!
//! Runs at `connect` by default. With the manifest's `stages = ["rcpt"]` it refuses at RCPT
//! instead, which lets authenticated users on listed (e.g. dial-up) addresses send, and mail to
//! the postmaster through (the server accepts that before asking plugins).

use corvid_plugin_sdk::*;
use std::net::IpAddr;

const DEFAULT_TEXT: &str = "Client host [{client_ip}] blocked: listed at {zone}";

pub struct Dnsbl {
    zones: Vec<String>,
    tempfail: bool,
    check_private: bool,
    text: String,
    /// The client looked up in this transaction and the zone listing it (`rcpt` runs per
    /// recipient; one lookup per transaction is enough).
    cached: Option<(String, Option<String>)>,
}

impl Plugin for Dnsbl {
    const NAME: &'static str = "dnsbl";
    const STAGES: &'static [Stage] = &[Stage::Connect];

    /// Keeps the configured value between transactions; the lookup result is per transaction.
    fn reset(&mut self) -> bool {
        self.cached = None;
        true
    }

    /// Both hooks look up the client's address; the envelope is never read.
    fn reads(&self, _stage: Stage) -> Reads {
        Reads {
            connection: true,
            envelope: false,
        }
    }

    /// `on_rcpt` runs when the manifest says `stages = ["rcpt"]` (see the module doc).
    const OPTIONAL_STAGES: &'static [Stage] = &[Stage::Rcpt];

    fn new(config: &Config) -> Result<Self, String> {
        config.check_keys(&["zones", "action", "check_private", "text"])?;
        let zones = config
            .get_list::<String>("zones")?
            .into_iter()
            .map(|z| {
                let z = z.trim().trim_end_matches('.').to_ascii_lowercase();
                let label_ok = |l: &str| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                };
                match z.split('.').all(label_ok) && z.len() <= 180 {
                    true => Ok(z),
                    false => Err(format!("config key `zones`: {z:?} is not a DNS zone")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if zones.is_empty() {
            return Err("config key `zones`: list at least one DNSBL zone".to_string());
        }
        let tempfail = match config.get("action").unwrap_or("reject") {
            "reject" => false,
            "tempfail" => true,
            other => {
                return Err(format!(
                    "config key `action`: {other:?} is not reject or tempfail"
                ))
            }
        };
        let text = config.get("text").unwrap_or(DEFAULT_TEXT);
        if text.trim().is_empty() {
            return Err("config key `text`: must not be empty".to_string());
        }
        Ok(Dnsbl {
            zones,
            tempfail,
            check_private: config.get_or("check_private", false)?,
            text: text.to_string(),
            cached: None,
        })
    }

    fn on_connect(&mut self, conn: &ConnectionInfo) -> Decision {
        self.judge(conn, 421, "4.7.1")
    }

    fn on_rcpt(&mut self, conn: &ConnectionInfo, _env: &Envelope, _rcpt: &Recipient) -> Decision {
        if conn.auth_user.is_some() {
            return proceed();
        }
        self.judge(conn, 450, "4.7.1")
    }
}

impl Dnsbl {
    /// Refuses a listed client; `code`/`enhanced` are the temporary reply for this stage.
    fn judge(&mut self, conn: &ConnectionInfo, code: u16, enhanced: &str) -> Decision {
        let listed = match &self.cached {
            Some((ip, zone)) if *ip == conn.client_ip => zone.clone(),
            _ => {
                let zone = self.lookup(&conn.client_ip);
                self.cached = Some((conn.client_ip.clone(), zone.clone()));
                zone
            }
        };
        let Some(zone) = listed else {
            return proceed();
        };
        let text = self
            .text
            .replace("{client_ip}", &conn.client_ip)
            .replace("{zone}", &zone);
        if self.tempfail {
            tempfail(code, enhanced, &text)
        } else {
            reject(554, "5.7.1", &text)
        }
    }

    /// The first zone that lists `ip`, if any.
    fn lookup(&self, ip: &str) -> Option<String> {
        let Ok(ip) = ip.parse::<IpAddr>() else {
            host::log(LogLevel::Warn, &format!("unparsable client address {ip:?}"));
            return None;
        };
        let ip = ip.to_canonical();
        if !self.check_private && !is_public(ip) {
            return None;
        }
        let reversed = reverse(ip);
        for zone in &self.zones {
            let name = format!("{reversed}.{zone}");
            match host::dns_a(&name) {
                Ok(answers) => {
                    if let Some(a) = answers.iter().find(|a| a.starts_with("127.0.0.")) {
                        host::log(LogLevel::Info, &format!("{ip} listed at {zone} ({a})"));
                        host::counter_add("listed", 1, &[("zone".to_string(), zone.clone())]);
                        return Some(zone.clone());
                    }
                    if !answers.is_empty() {
                        host::log(
                            LogLevel::Warn,
                            &format!("{zone} answered {answers:?} for {ip}: an error code, not a listing"),
                        );
                    }
                }
                Err(DnsError::NotFound) => {}
                Err(DnsError::Denied) => {
                    host::log(
                        LogLevel::Error,
                        "the manifest does not grant the `dns` capability",
                    );
                    return None;
                }
                Err(e) => host::log(
                    LogLevel::Warn,
                    &format!("{name}: lookup failed, not listed: {e:?}"),
                ),
            }
        }
        None
    }
}

/// `192.0.2.1` -> `1.2.0.192`; IPv6 as 32 reversed nibbles (RFC 5782 2.4).
fn reverse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let hex = format!("{:032x}", u128::from(v6));
            let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
            nibbles.join(".")
        }
    }
}

/// Loopback, private, link-local, shared (CGNAT), unique-local and unspecified addresses are
/// never on public lists; looking them up only leaks internal addresses to the list operator.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

export_plugin!(Dnsbl);

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_sdk::testing::*;

    fn plugin(pairs: &[(&str, &str)]) -> Dnsbl {
        configured(pairs)
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        corvid_plugin_sdk::testing::refused::<Dnsbl>(pairs)
    }

    #[test]
    fn a_listed_client_is_refused_with_554_and_the_zone() {
        let mut p = plugin(&[("zones", r#"["bl.example", "Second.Example."]"#)]);
        add_dns("A", "9.2.0.192.second.example", &["127.0.0.4"]);
        assert_eq!(
            reply_of(&p.on_connect(&conn("192.0.2.9"))),
            (
                554,
                "5.7.1".into(),
                "Client host [192.0.2.9] blocked: listed at second.example".into()
            )
        );
        with_host(|h| assert_eq!(h.counters.get("listed"), Some(&1)));
        let mut p = plugin(&[("zones", r#"["bl.example", "second.example"]"#)]);
        assert!(p.on_connect(&conn("192.0.2.10")).is_continue(), "NXDOMAIN");
    }

    #[test]
    fn ipv6_clients_are_looked_up_by_nibbles() {
        let mut p = plugin(&[("zones", "bl.example")]);
        add_dns(
            "A",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example",
            &["127.0.0.2"],
        );
        assert_eq!(reply_of(&p.on_connect(&conn("2001:db8::1"))).0, 554);
        assert!(p.on_connect(&conn("2001:db8::2")).is_continue());
    }

    #[test]
    fn private_addresses_are_skipped_unless_asked() {
        let private = [
            "127.0.0.2",
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ];
        let ip = |s: &str| s.parse::<IpAddr>().expect("test address");
        for addr in private {
            let listed = format!("{}.bl.example", reverse(ip(addr)));
            let p = plugin(&[("zones", "bl.example")]);
            add_dns("A", &listed, &["127.0.0.2"]);
            assert_eq!(p.lookup(addr), None, "{addr}");
            let p = plugin(&[("zones", "bl.example"), ("check_private", "true")]);
            add_dns("A", &listed, &["127.0.0.2"]);
            assert_eq!(p.lookup(addr).as_deref(), Some("bl.example"), "{addr}");
        }
        assert!(is_public(ip("100.128.0.1")) && is_public(ip("2001:db8::1")));
    }

    #[test]
    fn error_answers_are_not_listings() {
        let mut p = plugin(&[("zones", "zen.example"), ("check_private", "true")]);
        add_dns("A", "2.0.0.127.zen.example", &["127.255.255.254"]);
        assert!(p.on_connect(&conn("127.0.0.2")).is_continue());
        with_host(|h| {
            assert!(h
                .logs
                .iter()
                .any(|(l, m)| *l == LogLevel::Warn && m.contains("error code")))
        });
    }

    #[test]
    fn tempfail_action_and_the_rcpt_stage() {
        let mut p = plugin(&[
            ("zones", "bl.example"),
            ("action", "tempfail"),
            ("text", "{client_ip} is on {zone}"),
        ]);
        add_dns("A", "7.113.0.203.bl.example", &["127.0.0.2"]);
        let d = p.on_connect(&conn("203.0.113.7"));
        assert_eq!(
            reply_of(&d),
            (421, "4.7.1".into(), "203.0.113.7 is on bl.example".into())
        );
        let env = envelope("a@b.example", &[]);
        assert_eq!(
            reply_of(&p.on_rcpt(&conn("203.0.113.7"), &env, &rcpt("x@y.example"))).0,
            450
        );
        // Authenticated users pass at RCPT even from listed addresses.
        let mut c = conn("203.0.113.7");
        c.auth_user = Some("jane".into());
        assert!(p.on_rcpt(&c, &env, &rcpt("x@y.example")).is_continue());
    }

    #[test]
    fn one_lookup_per_transaction() {
        let mut p = plugin(&[("zones", "bl.example")]);
        add_dns("A", "7.113.0.203.bl.example", &["127.0.0.2"]);
        let env = envelope("a@b.example", &[]);
        assert!(!p
            .on_rcpt(&conn("203.0.113.7"), &env, &rcpt("x@y.example"))
            .is_continue());
        with_host(|h| h.dns.clear());
        assert!(!p
            .on_rcpt(&conn("203.0.113.7"), &env, &rcpt("z@y.example"))
            .is_continue());
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        assert!(refused(&[]).contains("at least one"));
        assert!(refused(&[("zones", "bl example")]).contains("not a DNS zone"));
        assert!(refused(&[("zones", "bl..example")]).contains("not a DNS zone"));
        assert!(refused(&[("zones", "bl.example"), ("action", "drop")]).contains("action"));
        assert!(
            refused(&[("zones", "bl.example"), ("check_private", "yes")]).contains("check_private")
        );
        assert!(refused(&[("zones", "bl.example"), ("text", "")]).contains("text"));
        assert!(refused(&[("zone", "bl.example")]).contains("unknown key"));
    }
}
