//! Envelope address rewriting: aliases (`old@a.example -> new@b.example`) and domain maps
//! (`@old.example -> @new.example`, local part kept) for the sender and for recipients
//! (README.md documents the configuration).
//!
//! Why three hooks:
//! - `mail` changes the sender as soon as it is known, so later plugins see the new one.
//! - `rcpt` answers `accept` for a mapped recipient (an alias source needs no mailbox and no
//!   relay right: the operator configured it) and adds the target. It must accept rather than
//!   continue: the host applies the modifications before its built-in recipient rule, so a
//!   `continue` refused by that rule would still leave the target in the envelope.
//! - `rcpt` also removes the recipient being decided: the host applies the modifications of
//!   an accepted RCPT after adding its recipient, so the original is answered 250 but never
//!   delivered.
//! - `data` catches what `rcpt` could not see: recipients another plugin accepted before this
//!   one ran (an `accept` ends the stage's chain), originals a plugin added, and a sender a
//!   later `mail` plugin changed to a mapped address.
//!
//! Rules apply recursively (an alias of an alias resolves to the final address), so the result
//! is never itself rewritten: every hook is idempotent, and the `data` pass can safely run over
//! already-rewritten mail. Loops are refused at load time.

use corvid_plugin_sdk::*;
use std::collections::HashMap;

/// Rules applied to one address at most; a longer chain is treated as a loop.
const MAX_HOPS: usize = 16;

pub struct AddressRewrite {
    sender: Map,
    recipient: Map,
}

impl Plugin for AddressRewrite {
    const NAME: &'static str = "address-rewrite";
    const STAGES: &'static [Stage] = &[Stage::Mail, Stage::Rcpt, Stage::Data];

    /// Holds only its configuration, so the value is kept between transactions (no re-read).
    fn reset(&mut self) -> bool {
        true
    }

    /// The connection is never read; the envelope at `mail` (the sender) and `data` (the
    /// recipients), not at `rcpt` (the recipient alone).
    fn reads(&self, stage: Stage) -> Reads {
        Reads {
            connection: false,
            envelope: stage != Stage::Rcpt,
        }
    }

    /// Without sender rules `mail` has nothing to do (`data` still removes the rewritten
    /// recipients): the host is not asked to call it.
    fn stages_for(config: &Config) -> Vec<Stage> {
        let senders = config
            .get_map::<String>("sender")
            .map_or(true, |m| !m.is_empty());
        let stages = Self::STAGES.iter().copied();
        stages.filter(|s| *s != Stage::Mail || senders).collect()
    }

    fn new(config: &Config) -> Result<Self, String> {
        config.check_keys(&["sender", "recipient"])?;
        let sender = Map::parse("sender", &config.get_map::<String>("sender")?)?;
        let recipient = Map::parse("recipient", &config.get_map::<String>("recipient")?)?;
        if sender.is_empty() && recipient.is_empty() {
            return Err("nothing to do: set a `sender` and/or `recipient` table".to_string());
        }
        Ok(AddressRewrite { sender, recipient })
    }

    fn on_mail(&mut self, _conn: &ConnectionInfo, env: &Envelope) -> Decision {
        self.rewrite_sender(env, proceed())
    }

    fn on_rcpt(&mut self, _conn: &ConnectionInfo, _env: &Envelope, rcpt: &Recipient) -> Decision {
        match self.recipient.rewrite(&rcpt.address) {
            Some(target) => {
                log_rewrite("recipient", &rcpt.address, &target);
                // Applied after the host adds the recipient it answers 250 for: the original
                // is accepted (the client sees no difference) but only the target delivered.
                accept()
                    .add_recipient(target)
                    .remove_recipient(rcpt.address.clone())
            }
            None => proceed(),
        }
    }

    fn on_data(
        &mut self,
        _conn: &ConnectionInfo,
        env: &Envelope,
        _msg: &dyn MailMessage,
    ) -> Decision {
        let mut d = self.rewrite_sender(env, proceed());
        for r in &env.recipients {
            if let Some(target) = self.recipient.rewrite(&r.address) {
                // The host ignores adding a recipient already present, so re-adding the
                // target that `rcpt` added is harmless.
                d = d.remove_recipient(r.address.clone()).add_recipient(target);
            }
        }
        d
    }
}

impl AddressRewrite {
    fn rewrite_sender(&self, env: &Envelope, d: Decision) -> Decision {
        // The null sender (bounces) has no address to rewrite and must stay null.
        match env
            .sender
            .as_ref()
            .and_then(|s| Some((s, self.sender.rewrite(s)?)))
        {
            Some((old, new)) => {
                log_rewrite("sender", old, &new);
                d.change_sender(Some(new))
            }
            None => d,
        }
    }
}

fn log_rewrite(what: &str, old: &Address, new: &Address) {
    host::log(LogLevel::Debug, &format!("{what} {old} rewritten to {new}"));
}

/// Where a source goes.
#[derive(Clone, Debug)]
enum Target {
    /// A fixed address.
    Address(Address),
    /// The same local part in another domain.
    Domain(String),
}

/// One direction's rewrite rules. Keys are lower-cased; the exact address wins over its domain.
#[derive(Default)]
struct Map {
    addresses: HashMap<String, Target>,
    domains: HashMap<String, Target>,
}

impl Map {
    fn parse(key: &str, table: &[(String, String)]) -> Result<Self, String> {
        let mut map = Map::default();
        for (from, to) in table {
            let bad = |why: &str| format!("config key `{key}`: {from:?} = {to:?}: {why}");
            let (from_local, from_domain) = split(from).ok_or_else(|| bad("bad source"))?;
            let (to_local, to_domain) = split(to).ok_or_else(|| bad("bad target"))?;
            let domain_wide = from_local.is_empty() || from_local == "*";
            let target = match (to_local.is_empty(), domain_wide) {
                (true, true) => Target::Domain(to_domain.to_ascii_lowercase()),
                (true, false) => return Err(bad("an address can only map to an address")),
                (false, _) if to_local == "*" => return Err(bad("bad target")),
                (false, _) => Target::Address(Address {
                    local: to_local.to_string(),
                    domain: to_domain.to_string(),
                }),
            };
            let from_domain = from_domain.to_ascii_lowercase();
            if domain_wide {
                map.domains.insert(from_domain, target);
            } else {
                let k = format!("{}@{from_domain}", from_local.to_lowercase());
                map.addresses.insert(k, target);
            }
        }
        map.refuse_loops(key)?;
        Ok(map)
    }

    /// Refuses loops (and chains longer than `MAX_HOPS`). Walking from every exact source and
    /// from every domain source with a placeholder local part finds every loop: a loop either
    /// passes through an exact source (and the walk from it comes back), or consists of domain
    /// maps only, which move any local part alike.
    fn refuse_loops(&self, key: &str) -> Result<(), String> {
        let exact = self.addresses.keys().filter_map(|k| Address::parse(k));
        let domains = self.domains.keys().map(|d| Address {
            local: "*".to_string(),
            domain: d.clone(),
        });
        for start in exact.chain(domains) {
            if self.resolve(&start).is_err() {
                return Err(format!(
                    "config key `{key}`: rewriting {start} loops (or takes over {MAX_HOPS} steps)"
                ));
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty()
    }

    /// The final address of `a`, or `None` when it is not mapped (or maps to itself). A loop
    /// leaves the address alone, with a warning.
    fn rewrite(&self, a: &Address) -> Option<Address> {
        match self.resolve(a) {
            Ok(new) => (new != *a).then_some(new),
            Err(()) => {
                host::log(
                    LogLevel::Warn,
                    &format!("rewriting {a} loops; left unchanged"),
                );
                None
            }
        }
    }

    /// Follows the rules until none applies, like an alias table that expands recursively:
    /// `@old.example -> @example.org` then `sales@example.org -> team@example.org` takes
    /// `sales@old.example` to `team@example.org`. The result is a fixed point, which is what
    /// makes every hook idempotent. `Err` on a loop.
    fn resolve(&self, a: &Address) -> Result<Address, ()> {
        let mut seen: Vec<String> = Vec::new();
        let mut current = a.clone();
        for _ in 0..MAX_HOPS {
            let key = Map::key(&current);
            let Some(next) = self.step(&current, &key) else {
                return Ok(current);
            };
            if next == current {
                return Ok(current);
            }
            if seen.contains(&key) {
                return Err(());
            }
            seen.push(key);
            current = next;
        }
        Err(())
    }

    /// One rule applied: the exact address wins over its domain's map.
    fn step(&self, a: &Address, key: &str) -> Option<Address> {
        let domain = key.rsplit_once('@').map_or("", |(_, d)| d);
        match self
            .addresses
            .get(key)
            .or_else(|| self.domains.get(domain))?
        {
            Target::Address(t) => Some(t.clone()),
            Target::Domain(d) => Some(Address {
                local: a.local.clone(),
                domain: d.clone(),
            }),
        }
    }

    /// Lower case, without the root dot: how sources are stored.
    fn key(a: &Address) -> String {
        let domain = a.domain.trim_end_matches('.').to_ascii_lowercase();
        format!("{}@{domain}", a.local.to_lowercase())
    }
}

/// `local@domain`, `@domain` or `*@domain`, checked the way the host checks addresses in
/// modifications (so a config the plugin accepts never produces a refused decision).
fn split(s: &str) -> Option<(&str, &str)> {
    let (local, domain) = s.trim().rsplit_once('@')?;
    let bad = |p: &str| p.len() > 255 || p.chars().any(|c| c.is_control() || c == '<' || c == '>');
    let domain_ok = !domain.is_empty() && !domain.contains(['@', ' ', '*']) && !bad(domain);
    (domain_ok && !bad(local) && !local.contains(' ')).then_some((local, domain))
}

export_plugin!(AddressRewrite);

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_sdk::testing::*;

    const MAPS: &[(&str, &str)] = &[
        (
            "sender",
            r#"{ "Old@Staff.example" = "new@corp.example", "@legacy.example" = "@corp.example", "info@legacy.example" = "new@corp.example" }"#,
        ),
        (
            "recipient",
            r#"{ "sales@corp.example" = "team-sales@corp.example", "*@old.example" = "@new.example", "@gone.example" = "catchall@corp.example" }"#,
        ),
    ];

    fn plugin(pairs: &[(&str, &str)]) -> AddressRewrite {
        configured(pairs)
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        corvid_plugin_sdk::testing::refused::<AddressRewrite>(pairs)
    }

    fn c() -> ConnectionInfo {
        conn("192.0.2.1")
    }

    #[test]
    fn mail_is_left_out_of_the_stages_without_sender_rules() {
        let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs.iter().copied());
        let recipients = config(&[("recipient", r#"{ "a@x.example" = "b@y.example" }"#)]);
        let stages = AddressRewrite::stages_for(&recipients);
        assert_eq!(stages, vec![Stage::Rcpt, Stage::Data]);
        assert_eq!(
            AddressRewrite::stages_for(&config(MAPS)),
            AddressRewrite::STAGES
        );
    }

    #[test]
    fn senders_are_rewritten_at_mail_by_address_and_by_domain() {
        let mut p = plugin(MAPS);
        let d = p.on_mail(&c(), &envelope("old@STAFF.example", &[]));
        assert!(d.is_continue());
        assert_eq!(
            d.modifications,
            vec![Modification::ChangeSender(Some(addr("new@corp.example")))]
        );
        let d = p.on_mail(&c(), &envelope("Jane.Doe@legacy.example", &[]));
        assert_eq!(
            d.modifications,
            vec![Modification::ChangeSender(Some(addr(
                "Jane.Doe@corp.example"
            )))]
        );
        for untouched in ["other@corp.example", ""] {
            let d = p.on_mail(&c(), &envelope(untouched, &[]));
            assert!(
                d.is_continue() && d.modifications.is_empty(),
                "{untouched:?}"
            );
        }
    }

    #[test]
    fn mapped_recipients_are_accepted_with_the_target_added() {
        let mut p = plugin(MAPS);
        let env = envelope("a@x.example", &[]);
        let d = p.on_rcpt(&c(), &env, &rcpt("Sales@corp.example"));
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(
            d.modifications,
            vec![
                Modification::AddRecipient(addr("team-sales@corp.example")),
                Modification::RemoveRecipient(addr("Sales@corp.example")),
            ]
        );
        let d = p.on_rcpt(&c(), &env, &rcpt("bob@old.example"));
        assert_eq!(
            d.modifications[0],
            Modification::AddRecipient(addr("bob@new.example"))
        );
        let d = p.on_rcpt(&c(), &env, &rcpt("anyone@GONE.example."));
        assert_eq!(
            d.modifications[0],
            Modification::AddRecipient(addr("catchall@corp.example"))
        );
        let d = p.on_rcpt(&c(), &env, &rcpt("bob@corp.example"));
        assert!(d.is_continue() && d.modifications.is_empty());
    }

    #[test]
    fn an_exact_alias_wins_over_its_domain_map() {
        let mut p = plugin(&[(
            "recipient",
            r#"{ "@old.example" = "@new.example", "boss@old.example" = "ceo@new.example" }"#,
        )]);
        let d = p.on_rcpt(&c(), &envelope("", &[]), &rcpt("boss@old.example"));
        assert_eq!(
            d.modifications[0],
            Modification::AddRecipient(addr("ceo@new.example"))
        );
    }

    #[test]
    fn aliases_of_aliases_resolve_to_the_final_address() {
        let mut p = plugin(&[(
            "recipient",
            r#"{ "@old-brand.example" = "@example.org", "sales@example.org" = "team@example.org", "team@example.org" = "team@lists.example.org", "alias@example.org" = "alias@example.org" }"#,
        )]);
        let env = envelope("", &[]);
        let target = |p: &mut AddressRewrite, to: &str| {
            p.on_rcpt(&c(), &env, &rcpt(to))
                .modifications
                .first()
                .cloned()
        };
        assert_eq!(
            target(&mut p, "Sales@Old-Brand.example"),
            Some(Modification::AddRecipient(addr("team@lists.example.org")))
        );
        assert_eq!(
            target(&mut p, "jane@old-brand.example"),
            Some(Modification::AddRecipient(addr("jane@example.org")))
        );
        assert_eq!(target(&mut p, "team@lists.example.org"), None);
        assert_eq!(target(&mut p, "alias@example.org"), None, "maps to itself");
    }

    #[test]
    fn data_removes_the_originals_the_host_kept() {
        let mut p = plugin(MAPS);
        // What the envelope looks like after `rcpt`: the added target, then the original.
        let env = envelope(
            "new@corp.example",
            &[
                "team-sales@corp.example",
                "sales@corp.example",
                "x@elsewhere.example",
            ],
        );
        let d = p.on_data(&c(), &env, &TestMessage::new("Subject: t\n\nbody\n"));
        assert!(d.is_continue());
        assert_eq!(
            d.modifications,
            vec![
                Modification::RemoveRecipient(addr("sales@corp.example")),
                Modification::AddRecipient(addr("team-sales@corp.example")),
            ]
        );
        // A recipient accepted by an earlier plugin (never seen at rcpt) and a sender that
        // was not rewritten at mail are rewritten here.
        let env = envelope("old@staff.example", &["bob@old.example"]);
        let d = p.on_data(&c(), &env, &TestMessage::new("\n"));
        assert_eq!(
            d.modifications,
            vec![
                Modification::ChangeSender(Some(addr("new@corp.example"))),
                Modification::RemoveRecipient(addr("bob@old.example")),
                Modification::AddRecipient(addr("bob@new.example")),
            ]
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        assert!(refused(&[]).contains("nothing to do"));
        assert!(refused(&[("recipient", "a@b")]).contains("expected a table"));
        assert!(
            refused(&[("recipient", r#"{ "a@b.example" = "@c.example" }"#)])
                .contains("only map to an address")
        );
        assert!(refused(&[("recipient", r#"{ "nobody" = "x@c.example" }"#)]).contains("bad source"));
        assert!(refused(&[("sender", r#"{ "a@b.example" = "x@<c>" }"#)]).contains("bad target"));
        assert!(
            refused(&[("sender", r#"{ "@a.example" = "*@c.example" }"#)]).contains("bad target")
        );
        assert!(refused(&[(
            "recipient",
            r#"{ "a@x.example" = "b@x.example", "b@x.example" = "A@X.example" }"#
        )])
        .contains("loops"));
        assert!(refused(&[(
            "sender",
            r#"{ "@a.example" = "@b.example", "@b.example" = "@a.example" }"#
        )])
        .contains("loops"));
        // Only `x@...` loops here; the walk from the exact source finds it.
        assert!(refused(&[(
            "recipient",
            r#"{ "@a.example" = "@b.example", "x@b.example" = "x@a.example" }"#
        )])
        .contains("loops"));
        assert!(refused(&[("recipients", "{}")]).contains("unknown key"));
    }

    #[test]
    fn the_exported_glue_describes_the_stages_the_configuration_needs() {
        // The fake host's configuration is empty: no sender rules, so no `mail`
        // (`stages_for` with sender rules is tested above).
        corvid_plugin_sdk::testing::reset();
        let info = corvid_plugin_sdk::runtime::describe::<AddressRewrite>();
        assert_eq!(info.stages, vec![Stage::Rcpt, Stage::Data]);
    }
}
