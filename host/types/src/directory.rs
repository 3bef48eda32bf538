//! Local domains, their mailboxes and aliases: who Corvid accepts mail for and where it goes.

use crate::Address;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

/// Alias chains longer than this are a configuration loop (Postfix stops at a similar depth).
const MAX_ALIAS_DEPTH: usize = 8;

/// One local domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainEntry {
    /// Mailbox names, lower case.
    pub mailboxes: BTreeSet<String>,
    /// Alias name (lower case) to targets: a local part of this domain or a full address in
    /// another local domain.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Mailbox (or alias) that takes mail for any unknown local part.
    pub catch_all: Option<String>,
}

/// The answer to "where does mail for this address go?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The final mailboxes, each a mailbox of a local domain.
    Mailboxes(Vec<Address>),
    /// A local domain with no such user (RCPT gets 550 5.1.1).
    UnknownUser,
    /// Not one of our domains.
    NotLocal,
}

/// The domain tables, replaced as a whole: a lookup resolves on one snapshot.
type Domains = Arc<HashMap<String, DomainEntry>>;

/// The server and delivery hold one `Arc<Directory>` for their lifetime; a config reload
/// swaps its domain tables in place ([`Directory::replace_domains`]), so that new lookups see
/// the new domains, mailboxes and aliases while a lookup in progress finishes on the old ones.
#[derive(Debug, Default)]
pub struct Directory {
    domains: RwLock<Domains>,
    /// Where `<postmaster>` (no domain, RFC 5321 4.5.1) and `postmaster@` of a domain that
    /// does not define one go. A reload may change it ([`Directory::replace_postmaster`]).
    postmaster: RwLock<Option<Address>>,
    /// Address extension separator (`alice+news@` is `alice@`), as Postfix's
    /// `recipient_delimiter`.
    delimiter: Option<char>,
}

impl Clone for Directory {
    fn clone(&self) -> Self {
        Directory {
            domains: RwLock::new(self.snapshot()),
            postmaster: RwLock::new(self.postmaster()),
            delimiter: self.delimiter,
        }
    }
}

impl PartialEq for Directory {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot() == other.snapshot()
            && self.postmaster() == other.postmaster()
            && self.delimiter == other.delimiter
    }
}

impl Eq for Directory {}

impl Directory {
    pub fn new(postmaster: Option<Address>, delimiter: Option<char>) -> Self {
        Directory {
            domains: RwLock::new(Arc::default()),
            postmaster: RwLock::new(postmaster),
            delimiter,
        }
    }

    pub fn add_domain(&mut self, name: &str, entry: DomainEntry) {
        // The lock only ever holds a whole table (writers swap an `Arc`), so a poisoned lock
        // still holds a consistent one.
        let domains = self
            .domains
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::make_mut(domains).insert(name.to_ascii_lowercase(), entry);
    }

    /// Takes the domains, mailboxes, aliases and catch-alls of `new` (a config reload). The
    /// postmaster and the extension delimiter stay as they were built.
    pub fn replace_domains(&self, new: &Directory) {
        let tables = new.snapshot();
        *self.domains.write().unwrap_or_else(PoisonError::into_inner) = tables;
    }

    fn snapshot(&self) -> Domains {
        Arc::clone(&self.domains.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.snapshot().contains_key(&domain.to_ascii_lowercase())
    }

    /// The local domains, lower case, at the time of the call.
    pub fn domains(&self) -> Vec<String> {
        self.snapshot().keys().cloned().collect()
    }

    /// The postmaster at the time of the call.
    pub fn postmaster(&self) -> Option<Address> {
        self.postmaster
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes a new postmaster (a config reload), for the lookups that start after it.
    pub fn replace_postmaster(&self, postmaster: Option<Address>) {
        *self
            .postmaster
            .write()
            .unwrap_or_else(PoisonError::into_inner) = postmaster;
    }

    /// Resolves `addr` through aliases, extensions and catch-alls to final mailboxes.
    pub fn lookup(&self, addr: &Address) -> Lookup {
        let domains = self.snapshot();
        if !domains.contains_key(&addr.domain_lower()) {
            return Lookup::NotLocal;
        }
        let mut out = Vec::new();
        match self.resolve(&domains, addr, 0, &mut out) {
            true if !out.is_empty() => {
                out.dedup();
                Lookup::Mailboxes(out)
            }
            _ => Lookup::UnknownUser,
        }
    }

    /// The mailbox for `<postmaster>` without a domain.
    pub fn lookup_postmaster(&self) -> Lookup {
        match &self.postmaster() {
            Some(pm) => self.lookup(pm),
            None => Lookup::UnknownUser,
        }
    }

    fn resolve(
        &self,
        domains: &HashMap<String, DomainEntry>,
        addr: &Address,
        depth: usize,
        out: &mut Vec<Address>,
    ) -> bool {
        if depth > MAX_ALIAS_DEPTH {
            return false;
        }
        let domain = addr.domain_lower();
        let Some(entry) = domains.get(&domain) else {
            return false;
        };
        let local = addr.local.to_lowercase();
        let base = self.strip_extension(&local);
        for name in [local.as_str(), base] {
            if entry.mailboxes.contains(name) {
                out.push(Address::new(name, domain.clone()));
                return true;
            }
            if let Some(targets) = entry.aliases.get(name) {
                return self.resolve_targets(domains, targets, &domain, depth, out);
            }
        }
        if local == "postmaster" {
            if let Some(pm) = &self.postmaster() {
                if pm.domain_lower() != domain || pm.local.to_lowercase() != local {
                    return self.resolve(domains, pm, depth + 1, out);
                }
            }
        }
        match &entry.catch_all {
            Some(target) => {
                self.resolve_targets(domains, std::slice::from_ref(target), &domain, depth, out)
            }
            None => false,
        }
    }

    fn resolve_targets(
        &self,
        domains: &HashMap<String, DomainEntry>,
        targets: &[String],
        domain: &str,
        depth: usize,
        out: &mut Vec<Address>,
    ) -> bool {
        targets.iter().all(|t| {
            let target = match t.rsplit_once('@') {
                Some((l, d)) => Address::new(l, d),
                None => Address::new(t.as_str(), domain),
            };
            self.resolve(domains, &target, depth + 1, out)
        })
    }

    fn strip_extension<'a>(&self, local: &'a str) -> &'a str {
        match self.delimiter {
            Some(d) => local.split_once(d).map_or(local, |(base, _)| base),
            None => local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        let mut d = Directory::new(Some(Address::new("postmaster", "a.test")), Some('+'));
        let mut a = DomainEntry::default();
        a.mailboxes
            .extend(["alice".into(), "bob".into(), "postmaster".into()]);
        a.aliases
            .insert("team".into(), vec!["alice".into(), "bob".into()]);
        a.aliases.insert("loop".into(), vec!["loop".into()]);
        a.aliases.insert("far".into(), vec!["carol@b.test".into()]);
        d.add_domain("A.test", a);
        let mut b = DomainEntry::default();
        b.mailboxes.insert("carol".into());
        b.catch_all = Some("carol".into());
        d.add_domain("b.test", b);
        d
    }

    fn mb(l: &str, d: &str) -> Lookup {
        Lookup::Mailboxes(vec![Address::new(l, d)])
    }

    #[test]
    fn mailboxes_are_case_insensitive_and_extensions_stripped() {
        let d = dir();
        assert_eq!(
            d.lookup(&Address::new("Alice", "a.TEST")),
            mb("alice", "a.test")
        );
        assert_eq!(
            d.lookup(&Address::new("alice+news", "a.test")),
            mb("alice", "a.test")
        );
    }

    #[test]
    fn aliases_expand_across_local_domains() {
        let d = dir();
        assert_eq!(
            d.lookup(&Address::new("team", "a.test")),
            Lookup::Mailboxes(vec![
                Address::new("alice", "a.test"),
                Address::new("bob", "a.test")
            ])
        );
        assert_eq!(
            d.lookup(&Address::new("far", "a.test")),
            mb("carol", "b.test")
        );
    }

    #[test]
    fn unknown_loops_catch_all_and_foreign() {
        let d = dir();
        assert_eq!(
            d.lookup(&Address::new("zed", "a.test")),
            Lookup::UnknownUser
        );
        assert_eq!(
            d.lookup(&Address::new("loop", "a.test")),
            Lookup::UnknownUser
        );
        assert_eq!(
            d.lookup(&Address::new("zed", "b.test")),
            mb("carol", "b.test")
        );
        assert_eq!(d.lookup(&Address::new("x", "c.test")), Lookup::NotLocal);
    }

    #[test]
    fn replacing_the_domains_is_seen_through_every_holder() {
        let shared = Arc::new(dir());
        let held_by_server = Arc::clone(&shared);
        let clone = (*shared).clone();
        assert_eq!(
            held_by_server.lookup(&Address::new("dana", "new.test")),
            Lookup::NotLocal
        );
        let mut next = Directory::new(None, None);
        let mut n = DomainEntry::default();
        n.mailboxes.insert("dana".into());
        next.add_domain("New.test", n);
        shared.replace_domains(&next);
        assert!(held_by_server.is_local_domain("NEW.test"));
        assert_eq!(
            held_by_server.lookup(&Address::new("dana+x", "new.test")),
            mb("dana", "new.test"),
            "the delimiter of the running directory stays"
        );
        assert_eq!(
            held_by_server.lookup(&Address::new("alice", "a.test")),
            Lookup::NotLocal,
            "a domain left out of the new tables is gone"
        );
        assert_eq!(held_by_server.domains(), vec!["new.test".to_string()]);
        assert_eq!(
            held_by_server.postmaster(),
            Some(Address::new("postmaster", "a.test"))
        );
        shared.replace_postmaster(Some(Address::new("dana", "new.test")));
        assert_eq!(held_by_server.lookup_postmaster(), mb("dana", "new.test"));
        // A clone is a copy, not a second handle.
        assert!(clone.is_local_domain("a.test") && !clone.is_local_domain("new.test"));
        assert_ne!(clone, *held_by_server);
    }

    #[test]
    fn postmaster_falls_back_to_the_configured_one() {
        let d = dir();
        assert_eq!(
            d.lookup(&Address::new("POSTMASTER", "b.test")),
            mb("postmaster", "a.test")
        );
        assert_eq!(d.lookup_postmaster(), mb("postmaster", "a.test"));
    }
}
