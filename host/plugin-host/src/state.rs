//! What a store carries: the empty WASI context, the resource table, the memory limiter, the
//! plugin's environment (name, capabilities, config, services) and the hook deadline.

use crate::bindings::corvid::plugin::types::ConfigTable;
use crate::limiter::{Limiter, TotalMemory};
use crate::manifest::{Capability, Manifest};
use crate::metrics::Metrics;
use crate::Services;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Marks the trap raised when the plugin's circuit breaker opened during a call.
#[derive(Debug)]
pub(crate) struct BreakerTripped;

impl std::fmt::Display for BreakerTripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the plugin's circuit breaker opened during the call")
    }
}

impl std::error::Error for BreakerTripped {}

/// Marks the trap raised when a hook runs past its deadline.
#[derive(Debug)]
pub(crate) struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hook wall-time limit exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Epoch ticks in a row a call may run on without yielding while its memory grows (see
/// [`new_store`]): more than a hook running out of a 64 MiB limit needs (about 12 ms), few
/// enough that a hook growing a little at every tick still yields every 25 ms.
const RUN_ON_TICKS: u32 = 25;

/// Everything host imports need to know about the plugin, shared by all its stores.
pub(crate) struct PluginEnv {
    pub(crate) name: String,
    pub(crate) caps: Vec<Capability>,
    pub(crate) config: ConfigTable,
    pub(crate) services: Services,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) memory_bytes: usize,
    /// The engine's account of linear memory across all instances.
    pub(crate) total: Arc<TotalMemory>,
    /// A shadow plugin (`mode = "shadow"`): its stores grow within the shadows' share.
    pub(crate) shadow: bool,
    /// The `http` prefixes and limits (checked by `PluginHost::load`; a prefix that does
    /// not parse grants nothing here).
    pub(crate) http: Arc<crate::http::HttpPolicy>,
    /// Instances created so far (each one's serial seeds its random generator).
    instances: AtomicU64,
    /// Times the plugin's circuit breaker opened (the breaker counts, the stores watch).
    pub(crate) breaker_trips: Arc<AtomicU64>,
    /// The plugin's fuel per hook (`limits.hook_fuel`): what a call's host calls may owe
    /// before the first check of their account ([`crate::charge`]).
    pub(crate) hook_fuel: u64,
}

impl PluginEnv {
    pub(crate) fn new(
        m: &Manifest,
        services: Services,
        metrics: Arc<Metrics>,
        total: Arc<TotalMemory>,
    ) -> Self {
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
            total,
            shadow: m.mode == crate::manifest::PluginMode::Shadow,
            http: Arc::new(crate::http::HttpPolicy::from_manifest(m).unwrap_or_default()),
            instances: AtomicU64::new(0),
            breaker_trips: Arc::default(),
            hook_fuel: m.limits.hook_fuel.max(1),
        }
    }

    pub(crate) fn grants(&self, cap: Capability) -> bool {
        self.caps.contains(&cap)
    }
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: crate::http::HttpHooks,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) env: Arc<PluginEnv>,
    pub(crate) session_id: u64,
    pub(crate) deadline: Instant,
    /// The breaker's trip count when the current call started: a call that sees it change
    /// is stopped ([`BreakerTripped`]).
    pub(crate) trips_seen: u64,
    /// The unit of work the instance serves (`lifecycle.lease`).
    pub(crate) lease: u64,
    /// The quarantine reason of the message of the current delivery hook
    /// (`lifecycle.quarantined`).
    pub(crate) quarantined: Option<String>,
    /// The facts of the SMTP hook being called (`context` import), kept after the call for
    /// the next one of the same unit of work; `None` on a new lease and at delivery hooks.
    pub(crate) facts: Option<crate::context::Facts>,
    /// DSN parameters the current SMTP hook gave recipients it adds (`added-recipients`),
    /// taken with its decision.
    pub(crate) added: crate::added::Pending,
    /// The delivery hook being called (`delivery-tls`); `None` outside one.
    pub(crate) delivery: Option<crate::delivery_tls::DeliveryCall>,
    /// Bytes copied between host and guest by the current call's imports ([`crate::charge`]).
    pub(crate) copied: u64,
    /// Host calls the current call owes fuel for ([`crate::charge`]).
    pub(crate) account: crate::charge::Account,
    /// Epoch ticks the current call may still run through ([`crate::charge::ticks_for`]).
    pub(crate) ticks_left: u64,
    /// The instance's memory peak at the last epoch tick: a call that grew since runs on.
    pub(crate) peak_seen: usize,
    /// Ticks the current call ran on without yielding because its memory grew.
    pub(crate) ran_on: u32,
    /// Times a call into this store was pending (counted by [`crate::backstop`]): for an
    /// import that waits (DNS, HTTP, a WASI sleep), or at the epoch callback's own yield.
    pub(crate) waits: Arc<AtomicU32>,
    /// `waits` at the last epoch check (or when the call was armed).
    pub(crate) waits_seen: u32,
    /// Whether the last epoch check yielded (one wait of its own).
    pub(crate) yielded: bool,
    /// The engine, whose epoch a host call advances to have its account checked early.
    pub(crate) engine: Engine,
}

/// A new `lifecycle.lease` number, unique in the process.
pub(crate) fn next_lease() -> u64 {
    static LEASES: AtomicU64 = AtomicU64::new(1);
    LEASES.fetch_add(1, Ordering::Relaxed)
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // Requests are bounded by the hook being called.
        self.http_hooks.deadline = self.deadline;
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// A store for one instance of the plugin: WASI without files, env, args or network, with
/// clocks and random as the capabilities say ([`crate::sandbox`]), the memory limiter, and an
/// epoch callback that yields to the executor every tick and traps with [`DeadlineExceeded`]
/// once the hook's deadline passed, with [`BreakerTripped`] once the breaker opened, or out of
/// fuel once the call's host calls owe more than its fuel ([`crate::charge`]).
pub(crate) fn new_store(engine: &Engine, env: Arc<PluginEnv>, session_id: u64) -> Store<HostState> {
    let serial = env.instances.fetch_add(1, Ordering::Relaxed);
    let wasi = crate::sandbox::wasi(&env, serial);
    let limiter = Limiter::new(env.memory_bytes, env.total.clone())
        .for_shadow(env.shadow)
        .watching(env.breaker_trips.clone());
    let http_hooks = crate::http::HttpHooks {
        policy: env.http.clone(),
        plugin: env.name.clone(),
        deadline: Instant::now(),
    };
    let trips_seen = env.breaker_trips.load(Ordering::Relaxed);
    let deadline = Instant::now();
    let account = crate::charge::Account::new(deadline, env.hook_fuel);
    let state = HostState {
        wasi,
        http: WasiHttpCtx::new(),
        http_hooks,
        table: ResourceTable::new(),
        limiter,
        env,
        session_id,
        deadline,
        trips_seen,
        lease: next_lease(),
        quarantined: None,
        facts: None,
        added: Default::default(),
        delivery: None,
        copied: 0,
        account,
        ticks_left: crate::charge::MIN_TICKS,
        peak_seen: 0,
        ran_on: 0,
        waits: Arc::new(AtomicU32::new(0)),
        waits_seen: 0,
        yielded: false,
        engine: engine.clone(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|mut ctx| {
        let s = ctx.data();
        if s.env.breaker_trips.load(Ordering::Relaxed) != s.trips_seen {
            return Err(wasmtime::Error::new(BreakerTripped));
        }
        // A tick the call spent (partly) waiting in an import is not one it ran through:
        // its future was pending since the last check for more than this callback's own
        // yield. Waiting costs no fuel and no ticks (`wit/world.wit`).
        let s = ctx.data_mut();
        let waits = s.waits.load(Ordering::Relaxed);
        let waited = waits.wrapping_sub(s.waits_seen) > u32::from(s.yielded);
        s.waits_seen = waits;
        crate::charge::check(&mut ctx, waited)?;
        let s = ctx.data_mut();
        if Instant::now() >= s.deadline {
            return Err(wasmtime::Error::new(DeadlineExceeded));
        }
        // A call whose memory grew since the last tick keeps its thread until it stops
        // growing (its fuel and ticks still bound it). Yielding, the calls of a plugin that
        // runs out of memory on every message take turns and all reach the limit together,
        // each holding up to `memory_mb` before the breaker has its failures (1.9 GB at 50
        // sessions); run through, the first calls fail within milliseconds and the breaker
        // stops the others before they grow.
        // At most RUN_ON_TICKS in a row, so that a hook growing a little at every tick
        // cannot keep its thread for the whole of its budget.
        let grew = s.limiter.peak != s.peak_seen;
        s.peak_seen = s.limiter.peak;
        s.yielded = !(grew && s.ran_on < RUN_ON_TICKS);
        Ok(if s.yielded {
            s.ran_on = 0;
            UpdateDeadline::Yield(1)
        } else {
            s.ran_on += 1;
            UpdateDeadline::Continue(1)
        })
    });
    store
}
