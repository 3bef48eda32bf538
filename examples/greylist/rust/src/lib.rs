//! The example policy in Rust (the behaviour is specified in `examples/README.md`):
//! greylisting of unauthenticated clients on the kv store, a subject filter at DATA, and a
//! header stamp on what passes.

use corvid_plugin_sdk::*;

/// How long a first-seen triplet is remembered (one day), whether or not it comes back.
const TRIPLET_TTL: u32 = 86_400;
const KEYS: &[&str] = &["delay_seconds", "reject_subject", "header"];

pub struct Greylist {
    delay_ms: u64,
    /// Lower-cased; empty disables the filter.
    reject_subject: String,
    header: String,
}

impl Plugin for Greylist {
    const NAME: &'static str = "greylist";
    const VERSION: &'static str = "1.0.0";
    const STAGES: &'static [Stage] = &[Stage::Rcpt, Stage::Data];

    fn new(config: &Config) -> Result<Self, String> {
        if let Some((key, _)) = config
            .entries()
            .iter()
            .find(|(k, _)| !KEYS.contains(&k.as_str()))
        {
            return Err(format!("unknown config key {key}"));
        }
        let delay: u64 = match config.get("delay_seconds") {
            None => 300,
            Some(v) => v
                .parse()
                .map_err(|_| "delay_seconds must be a non-negative integer".to_string())?,
        };
        let header = config.get("header").unwrap_or("X-Greylist").to_string();
        if !valid_field_name(&header) {
            return Err("header must be a valid header field name".to_string());
        }
        Ok(Greylist {
            delay_ms: delay.saturating_mul(1000),
            reject_subject: config
                .get("reject_subject")
                .unwrap_or("BUY NOW")
                .to_ascii_lowercase(),
            header,
        })
    }

    fn on_rcpt(&mut self, conn: &ConnectionInfo, env: &Envelope, rcpt: &Recipient) -> Decision {
        // Authenticated users are our own: they are never greylisted.
        if conn.auth_user.is_some() {
            return proceed();
        }
        let sender = env.sender.as_ref().map_or("<>".to_string(), addr);
        let recipient = addr(&rcpt.address);
        let key = format!("grey/{}/{sender}/{recipient}", conn.client_ip);
        let now = host::now_ms();
        let first_seen: Option<u64> = match host::kv_get(&key) {
            Ok(Some(v)) => match std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()) {
                Some(t) => Some(t),
                None => {
                    // Only this plugin writes its keys; a useless entry lets the mail through,
                    // the safe side (as for a kv error).
                    host::log(LogLevel::Warn, &format!("unreadable kv value at {key}, not greylisting"));
                    return proceed();
                }
            },
            Ok(None) => None,
            Err(e) => {
                // The store failing is not the client's fault: fail open.
                host::log(LogLevel::Warn, &format!("kv unavailable, not greylisting: {e:?}"));
                return proceed();
            }
        };
        let held = match first_seen {
            Some(t) => now.saturating_sub(t) < self.delay_ms,
            None => {
                if let Err(e) = host::kv_set(&key, now.to_string().as_bytes(), Some(TRIPLET_TTL)) {
                    host::log(LogLevel::Warn, &format!("kv unavailable, not greylisting: {e:?}"));
                    return proceed();
                }
                true
            }
        };
        if !held {
            return proceed();
        }
        host::log(
            LogLevel::Info,
            &format!("greylisted {} {sender} -> {recipient}", conn.client_ip),
        );
        tempfail(451, "4.7.1", "Greylisted, please try again later")
    }

    fn on_data(&mut self, _conn: &ConnectionInfo, _env: &Envelope, msg: &dyn MailMessage) -> Decision {
        let refused = !self.reject_subject.is_empty()
            && msg
                .header("subject")
                .iter()
                .any(|s| s.to_ascii_lowercase().contains(&self.reject_subject));
        if refused {
            host::log(LogLevel::Info, "subject refused");
            return reject(550, "5.7.1", "Message refused by content policy");
        }
        proceed().add_header(&self.header, "pass")
    }
}

/// `local@domain` with the domain lower-cased (domains are case-insensitive, local parts not).
fn addr(a: &Address) -> String {
    format!("{}@{}", a.local, a.domain.to_ascii_lowercase())
}

/// RFC 5322 2.2 field name, kept short: printable ASCII without `:` or space.
fn valid_field_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

export_plugin!(Greylist);

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_sdk::testing::*;

    #[test]
    fn config_is_checked() {
        assert!(Greylist::new(&Config::from_pairs([("delay_seconds", "x")])).is_err());
        assert!(Greylist::new(&Config::from_pairs([("header", "Bad Name")])).is_err());
        assert!(Greylist::new(&Config::from_pairs([("other", "1")])).is_err());
        let g = Greylist::new(&Config::from_pairs([("delay_seconds", "0")])).expect("valid");
        assert_eq!((g.delay_ms, g.header.as_str()), (0, "X-Greylist"));
    }

    #[test]
    fn greylists_until_the_delay_passed() {
        reset();
        let mut g = Greylist::new(&Config::from_pairs([("delay_seconds", "60")])).expect("valid");
        let env = envelope("a@Sender.example", &[]);
        let r = rcpt("b@corvid.test");
        with_host(|h| h.now_ms = 1_000_000);
        assert_eq!(code_of(&g.on_rcpt(&conn("192.0.2.1"), &env, &r)), Some(451));
        with_host(|h| h.now_ms = 1_030_000);
        assert_eq!(code_of(&g.on_rcpt(&conn("192.0.2.1"), &env, &r)), Some(451));
        // Another client is a new triplet.
        assert_eq!(code_of(&g.on_rcpt(&conn("192.0.2.2"), &env, &r)), Some(451));
        with_host(|h| h.now_ms = 1_060_000);
        let passed = g.on_rcpt(&conn("192.0.2.1"), &env, &r);
        assert_eq!(passed.verdict, Verdict::Continue);
        let key = "grey/192.0.2.1/a@sender.example/b@corvid.test";
        assert!(with_host(|h| h.kv.contains_key(key)));
    }

    #[test]
    fn subject_filter_and_stamp() {
        reset();
        let mut g = Greylist::new(&Config::default()).expect("valid");
        let env = envelope("a@x.example", &["b@corvid.test"]);
        let spam = TestMessage::new("Subject: Please buy now!\n\nhi\n");
        assert_eq!(code_of(&g.on_data(&conn("192.0.2.1"), &env, &spam)), Some(550));
        let ham = TestMessage::new("Subject: hello\n\nhi\n");
        let d = g.on_data(&conn("192.0.2.1"), &env, &ham);
        assert_eq!(d.verdict, Verdict::Continue);
        assert_eq!(d.modifications.len(), 1);
    }
}
