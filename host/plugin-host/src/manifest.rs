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
//! breaker = { failures = 5, consecutive = 3, window_ms = 10000, cooldown_ms = 30000 }
//! capabilities = ["log", "config", "dns"]
//! limits = { hook_fuel = 100_000_000, hook_time_ms = 5000, memory_mb = 32 }
//! http = ["http://127.0.0.1:11333/"]  # optional: URL prefixes for wasi:http requests
//! instance = "transaction"        # or "pool" (warm instances; "connection" is an alias)
//! mode = "active"                 # or "shadow": decisions compared with the chain's, never acted on
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
    /// When a plugin that keeps failing is bypassed (by its failure policy) for a while.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// How instances are created and reused.
    #[serde(default)]
    pub instance: InstanceMode,
    /// Whether the plugin's decisions count (`active`) or are only compared with the
    /// chain's (`shadow`, see [`PluginMode::Shadow`]).
    #[serde(default)]
    pub mode: PluginMode,
    /// Pool mode: the most idle warm instances kept for reuse (default 64: enough for 50
    /// concurrent transactions without instantiating per message). All plugins' idle
    /// instances together never hold more than half of `plugin_engine.max_instances`.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Warm modes: an instance is retired after serving this many transactions, so that a
    /// slow leak in a guest runtime cannot grow without bound.
    #[serde(default = "default_max_reuse")]
    pub max_reuse: u32,
    /// Host imports the plugin may use. Default: `log`, `config`, `clock`.
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<Capability>,
    /// URL prefixes the plugin may send `wasi:http` requests to (see the `http` module);
    /// empty (the default): every request is refused with `HTTP-request-denied`.
    #[serde(default)]
    pub http: Vec<String>,
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
            breaker: BreakerConfig::default(),
            instance: InstanceMode::default(),
            mode: PluginMode::default(),
            pool_size: default_pool_size(),
            max_reuse: default_max_reuse(),
            capabilities: default_capabilities(),
            http: Vec::new(),
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
    /// The CPU budget of one hook call, in fuel units (about one WebAssembly instruction
    /// each). Deterministic: the same call uses the same fuel on an idle or a loaded machine.
    pub hook_fuel: u64,
    /// Wall time one hook call may take, host calls (DNS) included: a backstop for a host
    /// call that hangs, generous so that a busy machine never fails a hook.
    pub hook_time_ms: u64,
    /// Linear memory the instance may grow to.
    pub memory_mb: u64,
    /// The deadline of one `wasi:http` request (connect, headers and the whole body),
    /// never later than the hook's `hook_time_ms`.
    pub http_timeout_ms: u64,
    /// The largest `wasi:http` response body a plugin may read; past it the read fails
    /// with `HTTP-response-body-size`.
    pub http_max_response_bytes: u64,
}

/// The default CPU budget per hook. Measured (tests/examples_fuel.rs): the greylist example's
/// costliest hook takes 2.7 million fuel in JavaScript, 0.6 million in Python and 19 thousand
/// in Rust, so this leaves a margin of more than 30 while a runaway loop stops after tens of
/// milliseconds.
pub const DEFAULT_HOOK_FUEL: u64 = 100_000_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hook_fuel: DEFAULT_HOOK_FUEL,
            hook_time_ms: 5_000,
            memory_mb: 64,
            // Below the hook's 5 s, so that a plugin learns of a slow server in time to
            // apply its own policy rather than the hook's failure policy.
            http_timeout_ms: 3_000,
            http_max_response_bytes: 1 << 20,
        }
    }
}

/// The circuit breaker of a plugin: after `failures` failures (trap, CPU budget, timeout, out
/// of memory, invalid decision) within `window_ms`, or `consecutive` failures in a row with no
/// success between them, the plugin is bypassed by its failure policy for `cooldown_ms`,
/// without being instantiated; then one transaction probes it. Calls of the plugin still
/// running when it trips are stopped at their next epoch tick (the failure policy applies).
/// The defaults trip within a fraction of a second of a plugin failing under load (three
/// failures in a row), so throughput recovers at once, and retry every 30 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures within the window that open the breaker (0: never open it).
    pub failures: u32,
    /// Failures in a row (no success between them) that open the breaker, within the window
    /// too; 0: only `failures` counts. A plugin failing on every call trips at once.
    pub consecutive: u32,
    /// The window the failures are counted in.
    pub window_ms: u64,
    /// How long the plugin is bypassed before it is probed again.
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            consecutive: 3,
            window_ms: 10_000,
            cooldown_ms: 30_000,
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
    /// A fresh instance per SMTP transaction (and per session-stage or delivery hook call).
    #[default]
    Transaction,
    /// The older name of `Pool`, which it now is: a connection keeping an instance between
    /// transactions let idle clients exhaust the engine's instances.
    Connection,
    /// A pool of warm instances shared by all connections and the delivery hooks; a
    /// transaction borrows one and gives it back at its end.
    Pool,
    /// The same pool, borrowed for one hook call and given back at once: every call gets a
    /// fresh plugin value (the SDK sees a new lease), so the plugin keeps nothing between its
    /// hooks of a transaction. In exchange a plugin has only as many instances in use as
    /// hooks running at that moment (about one per CPU), which stay hot in the CPU caches,
    /// where `pool` holds one per transaction in progress (50 at concurrency 50): the
    /// bundled chain's CPU per message fell by about a fifth at concurrency 50.
    Call,
}

/// Whether a plugin's decisions are acted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginMode {
    /// In the chain: its verdicts and modifications apply.
    #[default]
    Active,
    /// Beside the chain, at the SMTP stages (`connect` to `data`, `auth` included): called
    /// after the chain decided a stage, off the session's path (the reply never waits for
    /// it), its decision is compared with the chain's and counted, and never acted on; its
    /// modifications are dropped, its kv is the namespace `shadow:<name>`. Never called at
    /// the delivery stages.
    Shadow,
}

fn default_pool_size() -> usize {
    // 16 made a pool churn at 50 sessions: a third of the transactions instantiated their
    // plugins afresh (about 280 us of CPU per message with the bundled chain, issue 11).
    64
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
    /// `clock`: the wall clock (the `clock` import and WASI's wall and monotonic clocks;
    /// without it they all read the Unix epoch).
    Clock,
    /// `random`: the operating system's entropy for WASI random; without it a generator
    /// seeded from the plugin's name and instance number (deterministic).
    Random,
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
            limits = { hook_time_ms = 200, hook_fuel = 1000, http_timeout_ms = 150 }
            http = ["http://127.0.0.1:11333/"]
            breaker = { failures = 2, cooldown_ms = 500 }
            instance = "pool"
            mode = "shadow"
            pool_size = 4
            [config]
            zones = ["a", "b"]
            "#,
        )
        .expect("parses");
        assert_eq!(m.stages, Some(vec![Stage::Connect, Stage::Rcpt]));
        assert_eq!(m.limits.hook_time_ms, 200);
        assert_eq!((m.limits.memory_mb, m.limits.hook_fuel), (64, 1000));
        assert_eq!(m.limits.http_timeout_ms, 150);
        assert_eq!(m.http, vec!["http://127.0.0.1:11333/".to_string()]);
        assert_eq!(
            m.breaker,
            BreakerConfig {
                failures: 2,
                consecutive: 3,
                window_ms: 10_000,
                cooldown_ms: 500
            }
        );
        assert_eq!(m.failure_policy, FailurePolicy::Continue);
        assert!(m.grants(Capability::ReplaceBody) && !m.grants(Capability::Kv));
        assert!(m.config.contains_key("zones"));
        assert_eq!((m.instance, m.pool_size), (InstanceMode::Pool, 4));
        assert_eq!(m.mode, PluginMode::Shadow);
    }

    #[test]
    fn an_unknown_mode_is_refused() {
        let r: Result<Manifest, _> =
            toml::from_str("name = \"x\"\npath = \"x.wasm\"\nmode = \"dry\"");
        let e = r.expect_err("refused").to_string();
        assert!(e.contains("active") && e.contains("shadow"), "{e}");
    }

    #[test]
    fn defaults_are_conservative() {
        let m: Manifest = toml::from_str("name = \"x\"\npath = \"x.wasm\"").expect("parses");
        assert_eq!(m.failure_policy, FailurePolicy::Tempfail);
        assert_eq!(m.capabilities, default_capabilities());
        assert_eq!(m.limits, Limits::default());
        assert_eq!(
            (m.limits.hook_fuel, m.limits.hook_time_ms),
            (DEFAULT_HOOK_FUEL, 5_000)
        );
        assert_eq!(m.breaker.failures, 5);
        assert_eq!(m.instance, InstanceMode::Transaction);
        assert_eq!(m.mode, PluginMode::Active);
        assert!(m.http.is_empty(), "no http grant by default");
        assert_eq!(
            (m.limits.http_timeout_ms, m.limits.http_max_response_bytes),
            (3_000, 1 << 20)
        );
    }
}
