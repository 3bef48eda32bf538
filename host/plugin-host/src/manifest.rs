//! The per-plugin manifest, as it appears in the server config:
//!
//! ```toml
//! [[plugin]]
//! name = "rbl"
//! path = "/usr/lib/corvid/plugins/rbl.wasm"
//! order = 10
//! stages = ["connect"]            # optional: else the plugin's own `describe`
//! listeners = ["smtp"]            # optional: else every listener
//! failure_policy = "tempfail"     # or "continue"
//! capabilities = ["log", "config", "dns"]
//! limits = { hook_time_ms = 200, memory_mb = 32 }
//! instance = "transaction"        # or "connection" / "pool" (warm instances)
//! [plugin.config]
//! zones = ["zen.example"]
//! ```

use corvid_types::Stage;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One plugin of the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique name within the chain; used in logs, stats and kv namespaces.
    pub name: String,
    /// The component file (`.wasm`, built for `wasm32-wasip2`).
    pub path: PathBuf,
    /// The stages to call; when absent, the stages the plugin lists in `describe`.
    #[serde(default)]
    pub stages: Option<Vec<Stage>>,
    /// Position in the chain: lower runs first; ties keep the config order.
    #[serde(default)]
    pub order: i32,
    /// Listener names this plugin applies to; when absent, all.
    #[serde(default)]
    pub listeners: Option<Vec<String>>,
    /// Time and memory limits.
    #[serde(default)]
    pub limits: Limits,
    /// What happens when the plugin traps, times out, or returns an invalid decision.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// How instances are created and reused.
    #[serde(default)]
    pub instance: InstanceMode,
    /// Pool mode: the most idle warm instances kept for reuse.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Warm modes: an instance is retired after serving this many transactions, so that a
    /// slow leak in a guest runtime cannot grow without bound.
    #[serde(default = "default_max_reuse")]
    pub max_reuse: u32,
    /// Host imports the plugin may use. Default: `log`, `config`, `clock`.
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<Capability>,
    /// The plugin's own settings, handed to `configure` and the `config` import.
    #[serde(default)]
    pub config: toml::Table,
}

impl Manifest {
    /// A manifest with defaults for everything but the name and the component path.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Manifest {
            name: name.into(),
            path: path.into(),
            stages: None,
            order: 0,
            listeners: None,
            limits: Limits::default(),
            failure_policy: FailurePolicy::default(),
            instance: InstanceMode::default(),
            pool_size: default_pool_size(),
            max_reuse: default_max_reuse(),
            capabilities: default_capabilities(),
            config: toml::Table::new(),
        }
    }

    /// True when the manifest grants `cap`.
    pub fn grants(&self, cap: Capability) -> bool {
        self.capabilities.contains(&cap)
    }
}

/// Per-plugin limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall time one hook call may take, host calls (DNS) included.
    pub hook_time_ms: u64,
    /// Linear memory the instance may grow to.
    pub memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hook_time_ms: 50,
            memory_mb: 64,
        }
    }
}

/// What a failing plugin does to the stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// `451 4.3.0 Temporary policy failure`: the client retries later, nothing is lost.
    #[default]
    Tempfail,
    /// Skip the plugin as if it had answered `continue`.
    Continue,
}

/// How a plugin's instances live.
///
/// Instantiating a compiled (Rust, C) component costs tens of microseconds, so a fresh one per
/// transaction is cheap and gives every transaction clean globals. Interpreted runtimes
/// (Python, JavaScript) pay hundreds of microseconds on the first calls of an instance, so
/// they are better served warm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceMode {
    /// A fresh instance per SMTP transaction (and per delivery hook call).
    #[default]
    Transaction,
    /// One instance per connection, reused by its transactions.
    Connection,
    /// A pool of warm instances shared by all connections and the delivery hooks; a
    /// transaction borrows one and gives it back at its end.
    Pool,
}

fn default_pool_size() -> usize {
    16
}

fn default_max_reuse() -> u32 {
    10_000
}

/// A host import the manifest grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `log`: write to the server log.
    Log,
    /// `config`: read the plugin's own config table.
    Config,
    /// `kv`: the plugin's namespace of the key-value store.
    Kv,
    /// `dns`: lookups through the server's resolver.
    Dns,
    /// `clock`: the wall clock.
    Clock,
    /// `metrics`: counters and histograms.
    Metrics,
    /// The `replace-body` modification at `data`.
    ReplaceBody,
    /// The password at the `auth` stage (`auth-info.password`), for plugins that check
    /// credentials themselves (LDAP, HTTP, a database).
    Credentials,
}

fn default_capabilities() -> Vec<Capability> {
    vec![Capability::Log, Capability::Config, Capability::Clock]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_table() {
        let m: Manifest = toml::from_str(
            r#"
            name = "rbl"
            path = "/p/rbl.wasm"
            order = 10
            stages = ["connect", "rcpt"]
            failure_policy = "continue"
            capabilities = ["dns", "replace-body"]
            limits = { hook_time_ms = 200 }
            instance = "pool"
            pool_size = 4
            [config]
            zones = ["a", "b"]
            "#,
        )
        .expect("parses");
        assert_eq!(m.stages, Some(vec![Stage::Connect, Stage::Rcpt]));
        assert_eq!(m.limits.hook_time_ms, 200);
        assert_eq!(m.limits.memory_mb, 64);
        assert_eq!(m.failure_policy, FailurePolicy::Continue);
        assert!(m.grants(Capability::ReplaceBody) && !m.grants(Capability::Kv));
        assert!(m.config.contains_key("zones"));
        assert_eq!((m.instance, m.pool_size), (InstanceMode::Pool, 4));
    }

    #[test]
    fn defaults_are_conservative() {
        let m: Manifest = toml::from_str("name = \"x\"\npath = \"x.wasm\"").expect("parses");
        assert_eq!(m.failure_policy, FailurePolicy::Tempfail);
        assert_eq!(m.capabilities, default_capabilities());
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.instance, InstanceMode::Transaction);
    }
}
