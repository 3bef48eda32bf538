//! Recipient allow/deny list at RCPT (README.md documents the configuration).
//!
//! `deny` refuses with 550 5.7.1; `allow` answers `accept`, which is the explicit accept that
//! lets a recipient past the server's relay rule, so it must only list addresses the operator
//! is willing to relay for. Deny is checked first: a recipient on both lists is refused.

use corvid_plugin_sdk::*;
use std::collections::HashSet;

const DEFAULT_DENY_TEXT: &str = "<{rcpt}>: Recipient address rejected: Access denied";

pub struct RecipientList {
    deny: Patterns,
    allow: Patterns,
    deny_text: String,
}

impl Plugin for RecipientList {
    const NAME: &'static str = "recipient-list";
    const STAGES: &'static [Stage] = &[Stage::Rcpt];

    /// Holds only its configuration, so the value is kept between transactions (no re-read).
    fn reset(&mut self) -> bool {
        true
    }

    /// `on_rcpt` looks only at the recipient.
    fn reads(&self, _stage: Stage) -> Reads {
        Reads::NONE
    }

    fn new(config: &Config) -> Result<Self, String> {
        config.check_keys(&["deny", "allow", "deny_text"])?;
        let deny = Patterns::parse("deny", &config.get_list::<String>("deny")?)?;
        let allow = Patterns::parse("allow", &config.get_list::<String>("allow")?)?;
        if deny.is_empty() && allow.is_empty() {
            return Err("nothing to do: set `deny` and/or `allow`".to_string());
        }
        let deny_text = config.get("deny_text").unwrap_or(DEFAULT_DENY_TEXT);
        if deny_text.trim().is_empty() {
            return Err("config key `deny_text`: must not be empty".to_string());
        }
        Ok(RecipientList {
            deny,
            allow,
            deny_text: deny_text.to_string(),
        })
    }

    fn on_rcpt(&mut self, _conn: &ConnectionInfo, _env: &Envelope, rcpt: &Recipient) -> Decision {
        let a = &rcpt.address;
        if self.deny.matches(a) {
            let text = self.deny_text.replace("{rcpt}", &a.to_string());
            reject(550, "5.7.1", &text)
        } else if self.allow.matches(a) {
            accept()
        } else {
            proceed()
        }
    }
}

/// Address patterns, compiled into sets because lists of thousands of entries are common and
/// the plugin is rebuilt for every transaction. Everything is lower-cased: domains are
/// case-insensitive, and although RFC 5321 lets a server treat local parts case-sensitively,
/// an access list that `Bob@` slips past is worse than one that also catches `bob@`.
#[derive(Default)]
struct Patterns {
    /// `user@domain`.
    addresses: HashSet<String>,
    /// `@domain` and `*@domain`.
    domains: HashSet<String>,
    /// `@*.domain`: any subdomain of `domain` (not `domain` itself).
    parents: HashSet<String>,
}

impl Patterns {
    fn parse(key: &str, list: &[String]) -> Result<Self, String> {
        let mut p = Patterns::default();
        for raw in list {
            let bad = |why: &str| {
                format!("config key `{key}`: pattern {raw:?} {why} (use user@domain, @domain, *@domain or @*.domain)")
            };
            let Some((local, domain)) = raw.trim().rsplit_once('@') else {
                return Err(bad("has no @"));
            };
            let domain = normalize_domain(domain);
            let name = domain.strip_prefix("*.").unwrap_or(&domain);
            if name.is_empty() || name.contains(['*', '@']) || name.contains(char::is_whitespace) {
                return Err(bad("has an invalid domain"));
            }
            match local {
                "" | "*" if domain.starts_with("*.") => p.parents.insert(name.to_string()),
                "" | "*" => p.domains.insert(domain),
                _ if local.contains('*') => return Err(bad("has a wildcard in the local part")),
                _ if domain.starts_with("*.") => return Err(bad("mixes a user with *.domain")),
                _ => p
                    .addresses
                    .insert(format!("{}@{domain}", local.to_lowercase())),
            };
        }
        Ok(p)
    }

    fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty() && self.parents.is_empty()
    }

    fn matches(&self, a: &Address) -> bool {
        let domain = normalize_domain(&a.domain);
        if self.domains.contains(&domain)
            || self
                .addresses
                .contains(&format!("{}@{domain}", a.local.to_lowercase()))
        {
            return true;
        }
        // Walk up the labels: `a.b.example` has the parents `b.example` and `example`.
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if self.parents.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }
}

/// Lower case without the root dot, so `Example.COM.` and `example.com` are one domain.
fn normalize_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_lowercase()
}

export_plugin!(RecipientList);

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_sdk::testing::*;

    fn plugin(pairs: &[(&str, &str)]) -> RecipientList {
        reset();
        match RecipientList::new(&Config::from_pairs(pairs.iter().copied())) {
            Ok(p) => p,
            Err(e) => panic!("config refused: {e}"),
        }
    }

    fn decide(p: &mut RecipientList, to: &str) -> Decision {
        p.on_rcpt(
            &conn("192.0.2.1"),
            &envelope("s@sender.example", &[]),
            &rcpt(to),
        )
    }

    fn reply_text(d: &Decision) -> String {
        match &d.verdict {
            Verdict::Reject(r) => format!("{} {} {}", r.code, r.enhanced, r.text),
            other => panic!("not a reject: {other:?}"),
        }
    }

    #[test]
    fn denied_addresses_and_domains_are_refused_case_insensitively() {
        let mut p = plugin(&[(
            "deny",
            r#"["Bob@Example.com", "@spam.example", "*@junk.example", "@*.bad.example"]"#,
        )]);
        for to in [
            "bob@example.com",
            "BOB@EXAMPLE.COM.",
            "anyone@Spam.Example",
            "x@junk.example",
            "x@mail.bad.example",
            "x@a.b.bad.example",
        ] {
            let d = decide(&mut p, to);
            assert_eq!(code_of(&d), Some(550), "{to}");
            assert!(d.modifications.is_empty());
        }
        for to in [
            "alice@example.com",
            "bob@example.org",
            "x@notspam.example",
            "x@bad.example",
            "x@spam.example.org",
        ] {
            assert!(decide(&mut p, to).is_continue(), "{to}");
        }
    }

    #[test]
    fn the_reply_is_550_571_with_the_configured_text() {
        let mut p = plugin(&[("deny", "@spam.example")]);
        assert_eq!(
            reply_text(&decide(&mut p, "a@spam.example")),
            "550 5.7.1 <a@spam.example>: Recipient address rejected: Access denied"
        );
        let mut p = plugin(&[
            ("deny", "@spam.example"),
            ("deny_text", "No mail for {rcpt} here"),
        ]);
        assert_eq!(
            reply_text(&decide(&mut p, "a@spam.example")),
            "550 5.7.1 No mail for a@spam.example here"
        );
    }

    #[test]
    fn allowed_recipients_are_accepted_and_deny_wins() {
        let mut p = plugin(&[
            ("allow", r#"["@partner.example", "relay-me@Other.example"]"#),
            ("deny", r#"["ceo@partner.example"]"#),
        ]);
        assert_eq!(
            decide(&mut p, "sales@PARTNER.example").verdict,
            Verdict::Accept
        );
        assert_eq!(
            decide(&mut p, "relay-me@other.example").verdict,
            Verdict::Accept
        );
        assert_eq!(code_of(&decide(&mut p, "ceo@partner.example")), Some(550));
        assert!(decide(&mut p, "someone@other.example").is_continue());
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        let refused = |pairs: &[(&str, &str)]| {
            RecipientList::new(&Config::from_pairs(pairs.iter().copied()))
                .err()
                .unwrap_or_else(|| panic!("accepted: {pairs:?}"))
        };
        assert!(refused(&[]).contains("nothing to do"));
        assert!(refused(&[("deny", "no-at-sign")]).contains("has no @"));
        assert!(refused(&[("deny", "a*b@x.example")]).contains("wildcard"));
        assert!(refused(&[("deny", "@")]).contains("invalid domain"));
        assert!(refused(&[("deny", "@x.*.example")]).contains("invalid domain"));
        assert!(refused(&[("deny", r#"["@a.example""#)]).contains("`deny`"));
        assert!(refused(&[("deny", "@a.example"), ("deny_txt", "x")]).contains("deny_txt"));
        assert!(refused(&[("deny", "@a.example"), ("deny_text", " ")]).contains("deny_text"));
    }

    #[test]
    fn the_exported_glue_describes_and_validates() {
        reset();
        let info = corvid_plugin_sdk::runtime::describe::<RecipientList>();
        assert_eq!(info.name, "recipient-list");
        assert_eq!(info.stages, vec![Stage::Rcpt]);
        let table = |k: &str, v: &str| ConfigTable {
            entries: vec![(k.to_string(), v.to_string())],
            json: "{}".to_string(),
        };
        assert!(
            corvid_plugin_sdk::runtime::configure::<RecipientList>(table("deny", "x")).is_err()
        );
        assert!(
            corvid_plugin_sdk::runtime::configure::<RecipientList>(table("deny", "@x")).is_ok()
        );
    }
}
