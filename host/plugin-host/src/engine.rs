//! The process-wide wasmtime engine: component model, epoch interruption driven by a ticker
//! thread, the pooling allocator, and the linker with WASI (empty context) and Corvid's imports.

use crate::bindings::Plugin as WitPlugin;
use crate::state::HostState;
use crate::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Sizing of the engine. One engine serves every plugin host of the process.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Instances that may be alive at once (pool slots): concurrent transactions times
    /// plugins per transaction.
    pub max_instances: u32,
    /// The largest memory limit any manifest may ask for, in MiB (the pool's slot size).
    pub max_memory_mb: u64,
    /// The epoch period: the granularity of time limits and of yields of a busy plugin.
    pub tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_instances: 1000,
            max_memory_mb: 256,
            tick: Duration::from_millis(1),
        }
    }
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
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
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| Error::Engine(format!("wasi: {e:#}")))?;
        WitPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| Error::Engine(format!("imports: {e:#}")))?;

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
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}
