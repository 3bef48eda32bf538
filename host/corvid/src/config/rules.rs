//! The rules of a config that serde cannot express, checked by `Config::parse`, so that
//! `check-config` and `serve` refuse the same files.

use super::Config;
use anyhow::{bail, Result};
use corvid_types::Address;

impl Config {
    /// The rules serde cannot express.
    pub(super) fn check(&self) -> Result<()> {
        if self.listeners.is_empty() {
            bail!("key `listener`: at least one [[listener]] is needed");
        }
        if self.limits.max_recipients < 100 {
            bail!("key `limits.max_recipients`: RFC 5321 4.5.3.1.8 requires at least 100");
        }
        if self.local.domains.is_empty() {
            bail!("key `local.domain`: at least one local domain is needed");
        }
        for (i, l) in self.listeners.iter().enumerate() {
            // Without a network to trust, a PROXY listener would close every connection.
            if l.proxy_protocol && l.proxy_from.is_empty() {
                bail!("key `listener[{i}].proxy_from`: proxy_protocol = true needs the load balancers' networks");
            }
        }
        // sled refuses a page cache under 256 bytes (it panics at open).
        if self.queue.cache_mb == Some(0) {
            bail!("key `queue.cache_mb`: at least 1");
        }
        if let Some(r) = &self.record {
            if !(0.0..=1.0).contains(&r.rate) {
                bail!("key `record.rate`: a share of sessions, from 0 to 1");
            }
        }
        if let Err(e) = self.delivery.check() {
            bail!("key `delivery`: {e}");
        }
        self.kv.check()?;
        if self.auth.backend == corvid_server::auth::AuthBackend::Dovecot
            && self.auth.dovecot_socket.is_none()
        {
            bail!("key `auth.dovecot_socket`: required with auth.backend = \"dovecot\"");
        }
        // Plugins are named in logs, metrics, `plugins diff` and kv namespaces: a second
        // plugin of the same name would share them (the plugin host refuses it at load).
        for (i, m) in self.plugins.iter().enumerate() {
            if self.plugins[..i].iter().any(|o| o.name == m.name) {
                bail!(
                    "key `plugin[{i}].name`: `{}` is already the name of another plugin",
                    m.name
                );
            }
        }
        let directory = self.directory()?;
        if !matches!(
            directory.lookup_postmaster(),
            corvid_types::Lookup::Mailboxes(_)
        ) {
            bail!("key `local.postmaster`: `{}` is not a local mailbox (RFC 5321 4.5.1 requires a postmaster)", self.local.postmaster);
        }
        for (i, d) in self.local.domains.iter().enumerate() {
            for (alias, targets) in &d.aliases {
                let addr = Address::new(alias.as_str(), d.name.as_str());
                if !matches!(directory.lookup(&addr), corvid_types::Lookup::Mailboxes(_)) {
                    bail!("key `local.domain[{i}].aliases.{alias}`: {targets:?} do not all lead to local mailboxes");
                }
            }
        }
        Ok(())
    }
}
