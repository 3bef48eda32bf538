//! SIGHUP: the config file is read again as a whole. A file that does not load (syntax, a bad
//! value, a failed check) changes nothing: the running config stays and the log says why.
//! Otherwise the TLS certificate files are read again, the `[[plugin]]` tables are applied
//! (a new plugin generation; transactions in progress finish on theirs), the local domains,
//! mailboxes, aliases, catch-alls and the postmaster replace the running ones (the server and
//! delivery share one `Directory`; each lookup resolves on one version of it), the
//! `[[delivery.route]]` table is replaced for the next routing decisions, and
//! `server.hostname`, `server.relay_networks`, `server.etrn_networks` and `[limits]` apply to
//! the sessions that start after the reload: a session keeps the settings it started with to
//! its end. Every other setting that changed is named in the log as needing a restart.
//!
//! Listener addresses and `server.data_dir` can never change in a running server (sockets are
//! bound, the queue is open). The connection limits and the memory budget are sized once at
//! start, and delivery keeps the hostname (EHLO, DSNs), `limits.max_hops` and the rest of
//! `[delivery]` it started with. The users file needs no reload: it is read again whenever it
//! changes on disk.

use crate::config::Config;
use crate::plugins::Plugins;
use corvid_delivery::route::RouteTable;
use corvid_server::tls::TlsHandle;
use corvid_server::{LiveHandle, LiveSettings};
use corvid_types::Directory;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};

pub struct Reloader {
    /// `None`: the built-in dev config, which cannot change.
    path: Option<PathBuf>,
    /// What the server started with, for the sections a reload does not apply.
    started: Config,
    tls: Arc<TlsHandle>,
    plugins: Arc<Plugins>,
    /// The one the server and delivery hold.
    directory: Arc<Directory>,
    live: Live,
}

/// What new sessions and new routing decisions read, replaced by a reload.
pub struct Live {
    /// The server's settings for new sessions.
    pub settings: LiveHandle,
    /// Delivery's static routes.
    pub routes: Arc<RouteTable>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        started: Config,
        tls: Arc<TlsHandle>,
        plugins: Arc<Plugins>,
        directory: Arc<Directory>,
        live: Live,
    ) -> Self {
        Reloader {
            path,
            started,
            tls,
            plugins,
            directory,
            live,
        }
    }

    /// Returns the keys whose change needs a restart (empty when all was applied), or the
    /// reason the file was refused.
    pub async fn reload(&self) -> Result<Vec<&'static str>, String> {
        let config = match Config::load(self.path.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("{e:#}");
                warn!(error = %why, "config reload refused: the running config stays");
                return Err(why);
            }
        };
        // `Config::load` has built and checked this directory already: it cannot fail here.
        match config.directory() {
            Ok(d) => {
                self.directory.replace_domains(&d);
                self.directory.replace_postmaster(d.postmaster());
            }
            Err(e) => warn!(error = %format!("{e:#}"), "local domains not reloaded"),
        }
        self.live
            .settings
            .replace(LiveSettings::from_config(&config.server_config()));
        self.live.routes.replace(config.delivery.routes.clone());
        crate::tls_setup::reload(&self.tls);
        if let Err(e) = self.plugins.reload_manifests(config.plugins.clone()).await {
            warn!(error = %format!("{e:#}"), "plugin reload failed");
        }
        let pending = restart_needed(&self.started, &config);
        if pending.is_empty() {
            info!("config reloaded");
        } else {
            warn!(
                keys = %pending.join(", "),
                "config reloaded: TLS certificate files, plugins, local domains, routes, limits, relay networks and the hostname applied; these changes need a restart"
            );
        }
        Ok(pending)
    }
}

/// The keys that differ between `a` and `b` and that a running server does not apply. The
/// sections are compared through their `Debug` text (the config types do not implement
/// `PartialEq`); values are never logged, only key names.
pub fn restart_needed(a: &Config, b: &Config) -> Vec<&'static str> {
    fn differs<T: std::fmt::Debug>(x: &T, y: &T) -> bool {
        format!("{x:?}") != format!("{y:?}")
    }
    let mut out = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            out.push(key);
        }
    };
    let addrs = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.address))
            .collect::<Vec<_>>()
    };
    // Never without a restart: the sockets are bound and the queue is open.
    check("listener (addresses)", addrs(a) != addrs(b));
    check("server.data_dir", a.server.data_dir != b.server.data_dir);
    // Read once at start by the server and delivery crates.
    check(
        "listener",
        differs(&a.listeners, &b.listeners) && addrs(a) == addrs(b),
    );
    // New sessions take the new hostname; delivery's EHLO name and DSNs keep the old one.
    check(
        "server.hostname (delivery)",
        a.server.hostname != b.server.hostname && b.delivery.helo_name.is_none(),
    );
    check(
        "server.plugin_cache",
        a.server.plugin_cache != b.server.plugin_cache,
    );
    check(
        "server.user",
        (&a.server.user, &a.server.group, a.server.allow_root)
            != (&b.server.user, &b.server.group, b.server.allow_root),
    );
    // The rest of [limits] applies to new sessions.
    let (la, lb) = (&a.limits, &b.limits);
    check(
        "limits.max_inflight_bytes",
        la.max_inflight_bytes != lb.max_inflight_bytes,
    );
    check(
        "limits.shutdown_grace",
        la.shutdown_grace != lb.shutdown_grace,
    );
    check("limits.max_hops (delivery)", la.max_hops != lb.max_hops);
    check("tls.certificates", differs(&a.tls, &b.tls));
    check("auth", differs(&a.auth, &b.auth));
    // `local.domain` (domains, mailboxes, aliases, catch-alls) and `local.postmaster` are
    // applied by the reload.
    check(
        "local.maildir_root",
        a.local.maildir_root != b.local.maildir_root,
    );
    check(
        "local.recipient_delimiter",
        a.local.recipient_delimiter != b.local.recipient_delimiter,
    );
    check("queue", differs(&a.queue, &b.queue));
    check("dsn", differs(&a.dsn, &b.dsn));
    check("kv", differs(&a.kv, &b.kv));
    // `delivery.route` is applied by the reload.
    let no_routes = |c: &Config| corvid_delivery::DeliveryConfig {
        routes: Vec::new(),
        ..c.delivery.clone()
    };
    check("delivery", no_routes(a) != no_routes(b));
    check("log", differs(&a.log, &b.log));
    check("plugin_engine", differs(&a.plugin_engine, &b.plugin_engine));
    check("auth_checks", differs(&a.auth_checks, &b.auth_checks));
    check("dkim", differs(&a.dkim, &b.dkim));
    check("metrics", differs(&a.metrics, &b.metrics));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEV_CONFIG;

    #[test]
    fn names_what_changed_and_nothing_else() {
        let a = Config::parse(DEV_CONFIG).unwrap();
        let same = Config::parse(DEV_CONFIG).unwrap();
        assert!(restart_needed(&a, &same).is_empty());

        let text = DEV_CONFIG
            .replace("127.0.0.1:2525", "127.0.0.1:2526")
            .replace("data_dir = \"data\"", "data_dir = \"other\"")
            .replace("max_recipients = 100", "max_recipients = 200")
            .replace("max_connections = 1000", "max_connections = 10")
            .replace(
                "mailboxes = [\"alice\"",
                "mailboxes = [\"carol\", \"alice\"",
            );
        let b = Config::parse(&text).unwrap();
        assert_eq!(
            restart_needed(&a, &b),
            vec!["listener (addresses)", "server.data_dir"]
        );

        // The postmaster, routes, relay networks and the hostname for new sessions are applied.
        let text = DEV_CONFIG.replace(
            "mailboxes = [\"alice\"",
            "mailboxes = [\"carol\", \"alice\"",
        );
        let text = text
            .replace("postmaster = \"postmaster@", "postmaster = \"carol@")
            .replace(
                "[server]\n",
                "[server]\nrelay_networks = [\"10.0.0.0/8\"]\n",
            )
            .replace(
                "[delivery]\n",
                "[delivery]\nhelo_name = \"out.corvid.test\"\n",
            );
        let routes = "\n[[delivery.route]]\ndomain = \"x.test\"\nto = \"smtp://127.0.0.1:2525\"\n";
        let d = Config::parse(&format!("{text}{routes}")).unwrap();
        assert_eq!(restart_needed(&a, &d), vec!["delivery"], "helo_name only");
        let text = format!("{text}{routes}").replace("helo_name = \"out.corvid.test\"\n", "");
        let d = Config::parse(&text).unwrap();
        assert!(restart_needed(&a, &d).is_empty());
        let d = Config::parse(&text.replace(
            "hostname = \"mx.corvid.test\"",
            "hostname = \"mx2.corvid.test\"",
        ))
        .unwrap();
        assert_eq!(restart_needed(&a, &d), vec!["server.hostname (delivery)"]);

        // Plugins are applied by the reload: not a restart.
        let text = DEV_CONFIG.replace("messages_per_window = 1000", "messages_per_window = 5");
        let c = Config::parse(&text).unwrap();
        assert!(restart_needed(&a, &c).is_empty());
    }
}
