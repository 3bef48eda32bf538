//! Per-client rate limits on the kv store: connections per window at `connect`, messages (MAIL
//! commands) per window at `mail` (README.md documents the configuration).
//!
//! Each client has a counter per stage, incremented atomically by the host; the counter is
//! created with TTL = window, so it is a fixed window that starts at the client's first hit.
//! IPv6 clients are counted per prefix (/64 by default), because one host usually owns a whole
//! /64 and could otherwise step around the limit by changing addresses.
//!
//! The store failing is not the client's fault: kv errors are logged and the client passes
//! (fail open), so an outage of the limiter never becomes an outage of mail.

use corvid_plugin_sdk::*;
use std::net::IpAddr;

pub struct RateLimit {
    messages: Option<i64>,
    connections: Option<i64>,
    window_secs: u32,
    ipv6_prefix: u8,
    exempt: Vec<Net>,
}

impl Plugin for RateLimit {
    const NAME: &'static str = "rate-limit";
    const STAGES: &'static [Stage] = &[Stage::Connect, Stage::Mail];

    /// Holds only its configuration, so the value is kept between transactions (no re-read).
    fn reset(&mut self) -> bool {
        true
    }

    /// Both hooks count by the client's address, never by the envelope.
    fn reads(&self, _stage: Stage) -> Reads {
        Reads {
            connection: true,
            envelope: false,
        }
    }

    /// Only the stages whose limit is set: `connect` counts connections, `mail` messages.
    fn stages_for(config: &Config) -> Vec<Stage> {
        let set = |key: &str| config.get(key).is_some();
        let mut stages = Vec::new();
        if set("connections_per_window") {
            stages.push(Stage::Connect);
        }
        if set("messages_per_window") {
            stages.push(Stage::Mail);
        }
        stages
    }

    fn new(config: &Config) -> Result<Self, String> {
        config.check_keys(&[
            "messages_per_window",
            "connections_per_window",
            "window_secs",
            "exempt",
            "ipv6_prefix",
        ])?;
        let positive = |key: &str| -> Result<Option<i64>, String> {
            match config.get_as::<u32>(key)? {
                Some(0) => Err(format!("config key `{key}`: must be at least 1")),
                n => Ok(n.map(i64::from)),
            }
        };
        let messages = positive("messages_per_window")?;
        let connections = positive("connections_per_window")?;
        if messages.is_none() && connections.is_none() {
            return Err(
                "nothing to do: set `messages_per_window` and/or `connections_per_window`"
                    .to_string(),
            );
        }
        let window_secs = config.get_or::<u32>("window_secs", 3600)?;
        if !(1..=7 * 86400).contains(&window_secs) {
            return Err("config key `window_secs`: must be 1 to 604800 (7 days)".to_string());
        }
        let ipv6_prefix = config.get_or::<u8>("ipv6_prefix", 64)?;
        if !(1..=128).contains(&ipv6_prefix) {
            return Err("config key `ipv6_prefix`: must be 1 to 128".to_string());
        }
        let exempt = config
            .get_list::<String>("exempt")?
            .iter()
            .map(|s| {
                Net::parse(s).ok_or_else(|| {
                    format!("config key `exempt`: {s:?} is not an address or CIDR network")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RateLimit {
            messages,
            connections,
            window_secs,
            ipv6_prefix,
            exempt,
        })
    }

    fn on_connect(&mut self, conn: &ConnectionInfo) -> Decision {
        match self.connections {
            Some(limit) if self.over("conn", limit, conn) => disconnect(
                421,
                "4.7.0",
                "Too many connections from your address, try again later",
            ),
            _ => proceed(),
        }
    }

    fn on_mail(&mut self, conn: &ConnectionInfo, _env: &Envelope) -> Decision {
        match self.messages {
            Some(limit) if self.over("msg", limit, conn) => tempfail(
                450,
                "4.7.1",
                "Too many messages from your address, try again later",
            ),
            _ => proceed(),
        }
    }
}

impl RateLimit {
    /// Counts this hit and says whether the client is now over `limit`.
    fn over(&self, what: &str, limit: i64, conn: &ConnectionInfo) -> bool {
        let Ok(ip) = conn.client_ip.parse::<IpAddr>() else {
            host::log(
                LogLevel::Warn,
                &format!("unparsable client address {:?}", conn.client_ip),
            );
            return false;
        };
        // `::ffff:192.0.2.1` is an IPv4 client on a dual-stack socket.
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|n| n.contains(ip)) {
            return false;
        }
        let client = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let prefix = Net::V6(u128::from(v6), self.ipv6_prefix).network();
                format!("{prefix}/{}", self.ipv6_prefix)
            }
        };
        match host::kv_increment(&format!("{what}:{client}"), 1, Some(self.window_secs)) {
            Ok(n) if n > limit => {
                let labels = [("stage".to_string(), what.to_string())];
                host::counter_add("rate_limited", 1, &labels);
                host::log(
                    LogLevel::Info,
                    &format!(
                        "{client}: {n} {what} in {}s, limit {limit}",
                        self.window_secs
                    ),
                );
                true
            }
            Ok(_) => false,
            Err(e) => {
                host::log(
                    LogLevel::Warn,
                    &format!("kv failed, not limiting {client}: {e:?}"),
                );
                false
            }
        }
    }
}

/// An IPv4 or IPv6 network as address bits and prefix length.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Net {
    V4(u32, u8),
    V6(u128, u8),
}

impl Net {
    /// `192.0.2.0/24`, `2001:db8::/32`, or a single address.
    fn parse(s: &str) -> Option<Net> {
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if len.unwrap_or(32) <= 32 => Some(Net::V4(a.into(), len.unwrap_or(32))),
            IpAddr::V6(a) if len.unwrap_or(128) <= 128 => {
                Some(Net::V6(a.into(), len.unwrap_or(128)))
            }
            _ => None,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Net::V4(net, len), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                net & mask == u32::from(a) & mask
            }
            (Net::V6(net, len), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                net & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// The network address of a V6 net (host bits cleared), in text form.
    fn network(&self) -> String {
        match *self {
            Net::V4(a, len) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                std::net::Ipv4Addr::from(a & mask).to_string()
            }
            Net::V6(a, len) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                std::net::Ipv6Addr::from(a & mask).to_string()
            }
        }
    }
}

export_plugin!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_sdk::testing::*;

    #[test]
    fn only_the_stages_whose_limit_is_set_are_asked_for() {
        let stages = |pairs: &[(&str, &str)]| {
            RateLimit::stages_for(&Config::from_pairs(pairs.iter().copied()))
        };
        assert_eq!(stages(&[("messages_per_window", "5")]), vec![Stage::Mail]);
        assert_eq!(
            stages(&[("connections_per_window", "5")]),
            vec![Stage::Connect]
        );
        let both = [
            ("messages_per_window", "5"),
            ("connections_per_window", "5"),
        ];
        assert_eq!(stages(&both), RateLimit::STAGES);
    }

    fn plugin(pairs: &[(&str, &str)]) -> RateLimit {
        configured(pairs)
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        corvid_plugin_sdk::testing::refused::<RateLimit>(pairs)
    }

    fn mail(p: &mut RateLimit, ip: &str) -> Decision {
        p.on_mail(&conn(ip), &envelope("a@b.example", &[]))
    }

    #[test]
    fn messages_over_the_limit_are_tempfailed_per_client() {
        let mut p = plugin(&[("messages_per_window", "3"), ("window_secs", "600")]);
        for _ in 0..3 {
            assert!(mail(&mut p, "192.0.2.1").is_continue());
        }
        let d = mail(&mut p, "192.0.2.1");
        match &d.verdict {
            Verdict::Tempfail(r) => assert_eq!((r.code, r.enhanced.as_str()), (450, "4.7.1")),
            other => panic!("{other:?}"),
        }
        assert!(mail(&mut p, "192.0.2.2").is_continue(), "another client");
        assert_eq!(kv_text("msg:192.0.2.1").as_deref(), Some("4"));
        with_host(|h| assert_eq!(h.counters.get("rate_limited"), Some(&1)));
        // Connections are not limited in this configuration, and not even counted.
        assert!(p.on_connect(&conn("192.0.2.1")).is_continue());
        assert_eq!(kv_text("conn:192.0.2.1"), None);
    }

    #[test]
    fn connections_over_the_limit_are_closed_with_421() {
        let mut p = plugin(&[("connections_per_window", "2")]);
        assert!(p.on_connect(&conn("192.0.2.9")).is_continue());
        assert!(p.on_connect(&conn("192.0.2.9")).is_continue());
        let d = p.on_connect(&conn("192.0.2.9"));
        assert!(matches!(&d.verdict, Verdict::Disconnect(r) if r.code == 421));
        assert!(
            mail(&mut p, "192.0.2.9").is_continue(),
            "messages unlimited"
        );
    }

    #[test]
    fn ipv6_clients_share_a_counter_per_prefix() {
        let mut p = plugin(&[("messages_per_window", "2")]);
        assert!(mail(&mut p, "2001:db8:1:2::1").is_continue());
        assert!(mail(&mut p, "2001:db8:1:2:aaaa::9").is_continue());
        assert_eq!(code_of(&mail(&mut p, "2001:db8:1:2::ffff")), Some(450));
        assert!(mail(&mut p, "2001:db8:1:3::1").is_continue(), "next /64");
        assert_eq!(kv_text("msg:2001:db8:1:2::/64").as_deref(), Some("3"));
        let mut p = plugin(&[("messages_per_window", "1"), ("ipv6_prefix", "128")]);
        assert!(mail(&mut p, "2001:db8::1").is_continue());
        assert!(mail(&mut p, "2001:db8::2").is_continue());
    }

    #[test]
    fn exempt_networks_are_never_counted() {
        let mut p = plugin(&[
            ("messages_per_window", "1"),
            (
                "exempt",
                r#"["127.0.0.1", "10.0.0.0/8", "2001:db8:ff::/48"]"#,
            ),
        ]);
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "::ffff:10.9.9.9",
            "2001:db8:ff:1::5",
        ] {
            assert!(mail(&mut p, ip).is_continue(), "{ip}");
            assert!(mail(&mut p, ip).is_continue(), "{ip}");
        }
        with_host(|h| assert!(h.kv.is_empty(), "{:?}", h.kv));
        assert!(mail(&mut p, "11.0.0.1").is_continue());
        assert_eq!(code_of(&mail(&mut p, "11.0.0.1")), Some(450));
    }

    #[test]
    fn a_failing_store_lets_mail_through() {
        let mut p = plugin(&[("messages_per_window", "1")]);
        with_host(|h| h.kv.insert("msg:192.0.2.5".into(), b"garbage".to_vec()));
        assert!(mail(&mut p, "192.0.2.5").is_continue());
        assert!(mail(&mut p, "not an ip").is_continue());
        with_host(|h| assert_eq!(h.logs.len(), 2, "{:?}", h.logs));
    }

    #[test]
    fn networks_match_by_prefix() {
        let net = |s: &str| Net::parse(s).unwrap_or_else(|| panic!("{s}"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(net("192.0.2.0/24").contains(ip("192.0.2.255")));
        assert!(!net("192.0.2.0/24").contains(ip("192.0.3.0")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert!(net("fe80::/10").contains(ip("febf::1")));
        assert!(!net("fe80::/10").contains(ip("fec0::1")));
        assert_eq!(net("2001:db8:1:2:3::1/64").network(), "2001:db8:1:2::");
        for bad in ["192.0.2.0/33", "::/129", "host.example", "10.0.0.0/x", ""] {
            assert_eq!(Net::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        assert!(refused(&[]).contains("nothing to do"));
        assert!(refused(&[("messages_per_window", "0")]).contains("at least 1"));
        assert!(refused(&[("messages_per_window", "many")]).contains("messages_per_window"));
        assert!(
            refused(&[("messages_per_window", "5"), ("window_secs", "0")]).contains("window_secs")
        );
        assert!(
            refused(&[("messages_per_window", "5"), ("ipv6_prefix", "0")]).contains("ipv6_prefix")
        );
        assert!(refused(&[
            ("messages_per_window", "5"),
            ("exempt", r#"["10.0.0.0/40"]"#)
        ])
        .contains("10.0.0.0/40"));
        assert!(refused(&[("messages_per_window", "5"), ("window", "60")]).contains("unknown"));
    }
}
