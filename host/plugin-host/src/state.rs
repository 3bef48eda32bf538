//! What a store carries: the empty WASI context, the resource table, the memory limiter, the
//! plugin's environment (name, capabilities, config, services) and the hook deadline.

use crate::bindings::corvid::plugin::types::ConfigTable;
use crate::manifest::{Capability, Manifest};
use crate::metrics::Metrics;
use crate::Services;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Marks the trap raised when a hook runs past its deadline.
#[derive(Debug)]
pub(crate) struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hook wall-time limit exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Everything host imports need to know about the plugin, shared by all its stores.
pub(crate) struct PluginEnv {
    pub(crate) name: String,
    pub(crate) caps: Vec<Capability>,
    pub(crate) config: ConfigTable,
    pub(crate) services: Services,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) memory_bytes: usize,
}

impl PluginEnv {
    pub(crate) fn new(m: &Manifest, services: Services, metrics: Arc<Metrics>) -> Self {
        let entries = m
            .config
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect();
        let json = serde_json::to_string(&m.config).unwrap_or_else(|_| "{}".to_string());
        PluginEnv {
            name: m.name.clone(),
            caps: m.capabilities.clone(),
            config: ConfigTable { entries, json },
            services,
            metrics,
            memory_bytes: usize::try_from(m.limits.memory_mb << 20).unwrap_or(usize::MAX),
        }
    }

    pub(crate) fn grants(&self, cap: Capability) -> bool {
        self.caps.contains(&cap)
    }
}

/// Refuses memory growth past the plugin's limit and remembers that it did, so that the trap
/// that follows (the guest's allocator aborts) is reported as out-of-memory.
pub(crate) struct Limiter {
    memory_bytes: usize,
    pub(crate) refused: bool,
    /// The largest linear memory granted (creation counts as growth from 0).
    pub(crate) peak: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_bytes;
        self.refused |= !ok;
        if ok {
            self.peak = self.peak.max(desired);
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) env: Arc<PluginEnv>,
    pub(crate) session_id: u64,
    pub(crate) deadline: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store for one instance of the plugin: empty WASI (no files, env, args, network), the
/// memory limiter, and an epoch callback that yields to the executor every tick and traps with
/// [`DeadlineExceeded`] once the hook's deadline passed.
pub(crate) fn new_store(engine: &Engine, env: Arc<PluginEnv>, session_id: u64) -> Store<HostState> {
    let wasi = WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let limiter = Limiter {
        memory_bytes: env.memory_bytes,
        refused: false,
        peak: 0,
    };
    let state = HostState {
        wasi,
        table: ResourceTable::new(),
        limiter,
        env,
        session_id,
        deadline: Instant::now(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}
