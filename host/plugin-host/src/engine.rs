//! The process-wide wasmtime engine: component model, fuel (the CPU budget of hooks), epoch
//! interruption driven by a ticker thread, the pooling allocator, and the linker with WASI
//! (sandboxed context) and Corvid's imports.

use crate::limiter::TotalMemory;
use crate::state::HostState;
use crate::Error;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Sizing of the engine. One engine serves every plugin host of the process.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Instances that may be alive at once (pool slots): concurrent transactions times
    /// plugins per transaction. Beyond it, taking an instance fails at once and the plugin's
    /// failure policy applies.
    pub max_instances: u32,
    /// The largest memory limit any manifest may ask for, in MiB (the pool's slot size).
    pub max_memory_mb: u64,
    /// Linear memory of the active plugins' live instances together, in MiB; growth beyond
    /// it is refused (the hook fails with its failure policy). Shadow plugins
    /// (`mode = "shadow"`) have a share of their own, a quarter of this, on top of it.
    pub total_memory_mb: u64,
    /// The epoch period: the granularity of time limits and of yields of a busy plugin.
    pub tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_instances: 1000,
            max_memory_mb: 256,
            total_memory_mb: 4096,
            tick: Duration::from_millis(1),
        }
    }
}

/// The `[plugin_engine]` table of the server config; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Instances alive at once; default twice `limits.max_connections` (at least 64, at
    /// most 4096).
    pub max_instances: Option<u32>,
    /// The largest `memory_mb` a plugin may ask for; default 256.
    pub instance_memory_mb: Option<u64>,
    /// Linear memory of all instances together; default 4096.
    pub total_memory_mb: Option<u64>,
}

impl EngineConfig {
    /// The engine options for a server accepting `max_connections` connections.
    pub fn options(&self, max_connections: usize) -> EngineOptions {
        let d = EngineOptions::default();
        let sized = u32::try_from(max_connections.saturating_mul(2))
            .unwrap_or(u32::MAX)
            .clamp(64, 4096);
        EngineOptions {
            max_instances: self.max_instances.unwrap_or(sized),
            max_memory_mb: self.instance_memory_mb.unwrap_or(d.max_memory_mb),
            total_memory_mb: self.total_memory_mb.unwrap_or(d.total_memory_mb),
            tick: d.tick,
        }
    }
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    pub(crate) total: Arc<TotalMemory>,
    pub(crate) linker: Linker<HostState>,
    pub(crate) options: EngineOptions,
    stop: Arc<AtomicBool>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The shared engine (cheap to clone). Create one per process and hand it to every
/// [`crate::PluginHost`].
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) inner: Arc<EngineInner>,
}

impl PluginEngine {
    /// Builds the engine and starts its epoch ticker thread (stopped when the last clone drops).
    pub fn new(options: EngineOptions) -> Result<Self, Error> {
        let engine = build_engine(&options).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // Each import counts its call for the fuel charge (`crate::charge`). `wasi:http` is
        // linked for every plugin; a request outside the manifest's `http` prefixes (all of
        // them without any) is refused by `crate::http::HttpHooks`.
        crate::charge::add_wasi_to_linker(&mut linker)
            .map_err(|e| Error::Engine(format!("wasi: {e:#}")))?;
        crate::charge::add_plugin_to_linker(&mut linker)
            .map_err(|e| Error::Engine(format!("imports: {e:#}")))?;
        crate::context::add_to_linker(&mut linker)
            .map_err(|e| Error::Engine(format!("context import: {e:#}")))?;
        crate::auth_results::add_to_linker(&mut linker)
            .map_err(|e| Error::Engine(format!("auth-results import: {e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (weak, flag, tick) = (engine.weak(), stop.clone(), options.tick);
        std::thread::Builder::new()
            .name("corvid-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| Error::Engine(format!("epoch thread: {e}")))?;
        Ok(PluginEngine {
            inner: Arc::new(EngineInner {
                engine,
                // Idle pooled instances may hold at most half the instance slots, so calls in
                // flight always find room however large the plugins' `pool_size`.
                total: Arc::new(
                    TotalMemory::new(
                        usize::try_from(options.total_memory_mb << 20).unwrap_or(usize::MAX),
                    )
                    .with_idle_cap(usize::try_from(options.max_instances / 2).unwrap_or(0)),
                ),
                linker,
                options,
                stop,
            }),
        })
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Linear memory granted to live instances now, in bytes (shadow plugins' included).
    pub fn memory_in_use(&self) -> usize {
        self.inner.total.used()
    }

    /// Plugin instances alive now, idle pooled ones included (against `max_instances`).
    pub fn instances_in_use(&self) -> usize {
        self.inner.total.instances()
    }

    /// Idle instances kept in the plugins' pools now (at most half of `max_instances`).
    pub fn instances_idle(&self) -> usize {
        self.inner.total.idle()
    }
}

fn build_engine(options: &EngineOptions) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let slots = options.max_instances.max(1);
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(4))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_memory_size(usize::try_from(options.max_memory_mb << 20).unwrap_or(usize::MAX))
        .max_unused_warm_slots(slots.min(100))
        // Reset a reused slot's pages in place instead of with madvise, so a fresh instance
        // per transaction costs no page faults for the guest's stack and data; with
        // PAGEMAP_SCAN (Linux 6.7+) only the pages the guest dirtied are reset.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Fuel is the CPU budget of a hook (deterministic); epochs are the wall-time backstop
        // and make a busy guest yield to the executor every tick.
        .consume_fuel(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // A profiling aid: with CORVID_WASM_PERFMAP set, compiled guest code is listed in
    // /tmp/perf-PID.map, so that `perf report` names it (`wasm[module]::function[index]`)
    // instead of `[unknown]`.
    if std::env::var_os("CORVID_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_defaults_are_sized_from_max_connections() {
        let none = EngineConfig::default();
        assert_eq!(none.options(1000).max_instances, 2000);
        assert_eq!(none.options(10).max_instances, 64, "at least 64");
        assert_eq!(none.options(100_000).max_instances, 4096, "at most 4096");
        let o = none.options(1000);
        assert_eq!((o.max_memory_mb, o.total_memory_mb), (256, 4096));
        let set: EngineConfig =
            toml::from_str("max_instances = 7\ninstance_memory_mb = 32\ntotal_memory_mb = 100")
                .expect("parses");
        let o = set.options(1000);
        assert_eq!(
            (o.max_instances, o.max_memory_mb, o.total_memory_mb),
            (7, 32, 100)
        );
        assert!(toml::from_str::<EngineConfig>("instances = 1").is_err());
    }
}
