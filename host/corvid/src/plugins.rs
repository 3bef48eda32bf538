//! The plugin chain in the running server: manifests from the config into the plugin host,
//! and the three ways to reload it without a restart (SIGHUP, a changed component file, and
//! `corvid plugins reload` through the admin socket).

use crate::config::Config;
use anyhow::{bail, Context, Result};
use corvid_plugin_host::{
    BreakerState, Manifest, PluginEngine, PluginHost, PluginMode, PluginState, Services,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often component files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

pub struct Plugins {
    pub host: PluginHost,
    /// The engine (its memory in use is a metric).
    pub engine: PluginEngine,
    /// Where the `[[plugin]]` tables are read again on reload; `None` for the built-in config.
    config_path: Option<PathBuf>,
    manifests: Mutex<Vec<Manifest>>,
}

impl Plugins {
    /// Builds the engine and loads the configured chain. At start a plugin that fails to load is
    /// an error: a server must not run without a policy its administrator configured.
    pub async fn start(
        config: &Config,
        config_path: Option<PathBuf>,
        services: Services,
    ) -> Result<Plugins> {
        let options = config.plugin_engine.options(config.limits.max_connections);
        let engine = PluginEngine::new(options).context("starting the WebAssembly engine")?;
        let cache = config
            .server
            .plugin_cache
            .clone()
            .unwrap_or_else(|| config.server.data_dir.join("plugin-cache"));
        let host = PluginHost::new(&engine, services, Some(cache));
        let plugins = Plugins {
            host,
            engine,
            config_path,
            manifests: Mutex::new(config.plugins.clone()),
        };
        let generation = plugins.host.load(config.plugins.clone()).await?;
        let errors = generation.errors();
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(|(p, e)| format!("{p}: {e}")).collect();
            bail!(
                "plugins failed to load (build the bundled ones with `make plugins`):\n  {}",
                list.join("\n  ")
            );
        }
        plugins.host.swap(generation);
        for p in plugins.host.plugins() {
            info!(plugin = %p.name, version = %p.version, stages = ?p.stages, from_cache = p.from_cache, "plugin loaded");
        }
        Ok(plugins)
    }

    /// Reads the manifests again (from the config file, when there is one) and swaps in a new
    /// generation. A plugin that fails keeps its previous version; the errors are returned.
    pub async fn reload(&self) -> Result<Value> {
        if let Some(path) = &self.config_path {
            let config = Config::load(Some(path))?;
            *self.manifests.lock().unwrap_or_else(|p| p.into_inner()) = config.plugins;
        }
        self.swap_in().await
    }

    /// Swaps in a generation built from `manifests` (the `[[plugin]]` tables of a config the
    /// caller has read and checked already: SIGHUP).
    pub async fn reload_manifests(&self, manifests: Vec<Manifest>) -> Result<Value> {
        *self.manifests.lock().unwrap_or_else(|p| p.into_inner()) = manifests;
        self.swap_in().await
    }

    async fn swap_in(&self) -> Result<Value> {
        let manifests = self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let generation = self.host.reload(manifests).await?;
        let errors = generation.errors();
        for (plugin, error) in &errors {
            warn!(plugin = %plugin, error = %error, "plugin reload failed; the previous version stays");
        }
        info!(
            generation = generation.number(),
            errors = errors.len(),
            "plugins reloaded"
        );
        Ok(json!({ "generation": generation.number(), "errors": errors }))
    }

    /// `corvid plugins list`: each plugin with its `mode` (`active`, `shadow`).
    pub fn list(&self) -> Value {
        let rows: Vec<Value> = self
            .host
            .plugins()
            .into_iter()
            .map(|p| {
                let (state, error) = match p.state {
                    PluginState::Active => ("active", None),
                    PluginState::Stale { error } => ("stale", Some(error)),
                    PluginState::Failed { error } => ("failed", Some(error)),
                };
                let stages: Vec<&str> = p.stages.iter().map(|s| s.as_str()).collect();
                let breaker = match p.breaker {
                    BreakerState::Closed => "closed".to_string(),
                    BreakerState::HalfOpen => "half-open".to_string(),
                    BreakerState::Open { remaining } => {
                        format!("open {}s", remaining.as_secs() + 1)
                    }
                };
                let mode = match p.mode {
                    PluginMode::Active => "active",
                    PluginMode::Shadow => "shadow",
                };
                json!({ "name": p.name, "version": p.version, "stages": stages, "order": p.order,
                        "generation": p.loaded_in, "state": state, "error": error,
                        "breaker": breaker, "breaker_trips": p.breaker_trips, "mode": mode })
            })
            .collect();
        json!(rows)
    }

    /// Per plugin and stage counters since the server started, one JSON object each (a shadow
    /// plugin's comparisons with the chain included).
    pub fn stats(&self) -> Value {
        let rows: Vec<Value> = self
            .host
            .stats()
            .into_iter()
            .map(|s| {
                let mean_us = s.latency_total.as_micros() as u64 / s.calls.max(1);
                json!({ "plugin": s.plugin, "stage": s.stage.as_str(), "calls": s.calls,
                        "continue": s.continues, "accept": s.accepts, "reject": s.rejects,
                        "tempfail": s.tempfails, "disconnect": s.disconnects,
                        "discard": s.discards, "quarantine": s.quarantines, "trap": s.traps,
                        "timeout": s.timeouts, "out_of_memory": s.out_of_memory,
                        "invalid": s.invalid, "cpu_budget": s.cpu_budget,
                        "bypassed": s.bypassed, "exhausted": s.exhausted,
                        "breaker_trips": s.breaker_trips, "mean_us": mean_us,
                        "max_us": s.latency_max.as_micros() as u64,
                        "instantiations": s.instantiations,
                        "memory_peak_bytes": s.memory_peak_bytes,
                        "shadow_agree": s.shadow_agree, "shadow_differ": s.shadow_differ,
                        "shadow_skipped": s.shadow_skipped })
            })
            .collect();
        json!(rows)
    }

    /// Reloads when a component file changes (a new build dropped in place).
    pub async fn watch(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let mut seen = self.mtimes();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
            let now = self.mtimes();
            if now != seen {
                info!("a plugin component changed on disk; reloading");
                if let Err(e) = self.reload().await {
                    warn!(error = %format!("{e:#}"), "plugin reload failed");
                }
                seen = now;
            }
        }
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        let manifests = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        manifests
            .iter()
            .map(|m| std::fs::metadata(&m.path).and_then(|md| md.modified()).ok())
            .collect()
    }
}
