//! [`PluginHost`]: the chain of plugins behind the [`Policy`] seam, with hot reload.

use crate::breaker::BreakerState;
use crate::delivery;
use crate::dns::{DnsResolver, StaticDns};
use crate::engine::PluginEngine;
use crate::generation::LoadedPlugin;
use crate::generation::{load_one, status_of, Generation, LoadContext, PluginState, PluginStatus};
use crate::kv::{KvStore, MemoryKv, ShadowKv};
use crate::manifest::{Manifest, PluginMode};
use crate::metrics::{MetricSample, Metrics};
use crate::session::PluginSession;
use crate::state::PluginEnv;
use crate::stats::Outcome;
use crate::stats::{HookStats, PluginStats};
use crate::Error;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use corvid_types::{
    BounceAction, Deferral, DeliveryInfo, DeliveryPolicy, Route, RouteRequest, Stage,
};
use corvid_types::{ConnectionInfo, Policy, PolicySession};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The longest `limits.hook_time_ms` a manifest may set: ten minutes (see `reload`).
const MAX_HOOK_TIME_MS: u64 = 600_000;

/// The services host imports reach: the kv store and the DNS resolver.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<dyn KvStore>,
    pub dns: Arc<dyn DnsResolver>,
}

impl Services {
    /// An in-memory kv store and an empty static resolver (tests, `corvid plugin test`).
    pub fn in_memory() -> Self {
        Services {
            kv: Arc::new(MemoryKv::new()),
            dns: Arc::new(StaticDns::new()),
        }
    }
}

struct Inner {
    engine: PluginEngine,
    services: Services,
    cache_dir: Option<PathBuf>,
    current: ArcSwap<Generation>,
    next_generation: AtomicU64,
    stats: Mutex<BTreeMap<String, Arc<PluginStats>>>,
    metrics: Arc<Metrics>,
    /// The instances shadow plugins may hold at once, across sessions.
    shadow_budget: Arc<crate::shadow_run::Budget>,
}

/// The plugin chain. Cheap to clone; every clone shares the same generations.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

impl PluginHost {
    /// A host with no plugins (generation 0). `cache_dir` enables the compiled-code cache.
    pub fn new(engine: &PluginEngine, services: Services, cache_dir: Option<PathBuf>) -> Self {
        PluginHost {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                services,
                cache_dir,
                current: ArcSwap::from_pointee(Generation::empty()),
                next_generation: AtomicU64::new(1),
                stats: Mutex::new(BTreeMap::new()),
                metrics: Arc::new(Metrics::default()),
                shadow_budget: Arc::new(crate::shadow_run::Budget::new(engine.options())),
            }),
        }
    }

    /// Builds a new generation from `manifests` on a blocking thread (compile or cache load,
    /// link, `describe`, `configure`), without installing it. A plugin that fails keeps its
    /// version from the current generation (state `Stale`), or is left out (`Failed`).
    /// `Err` only for a set of manifests that is wrong as a whole (duplicate names, limits
    /// beyond the engine's) or a loader crash; the current generation is untouched then.
    pub async fn load(&self, manifests: Vec<Manifest>) -> Result<Arc<Generation>, Error> {
        let mut seen = HashSet::new();
        let max_mb = self.inner.engine.options().max_memory_mb;
        for m in &manifests {
            let bad = |reason: String| Error::Manifest {
                plugin: m.name.clone(),
                reason,
            };
            if !seen.insert(m.name.clone()) {
                return Err(bad("duplicate plugin name".into()));
            }
            // Shadow plugins keep their kv under `shadow:<name>`: no plugin may own that.
            if m.name.starts_with(crate::kv::SHADOW_NS) {
                return Err(bad(format!(
                    "a plugin name may not start with `{}`",
                    crate::kv::SHADOW_NS
                )));
            }
            if m.limits.memory_mb == 0 || m.limits.memory_mb > max_mb {
                return Err(bad(format!("memory_mb must be within 1..={max_mb}")));
            }
            // RFC 5321 4.5.3.2.6: a client waits 10 minutes for the reply to its data; a hook
            // allowed longer would outlive it (and a huge value overflowed the deadline).
            if !(1..=MAX_HOOK_TIME_MS).contains(&m.limits.hook_time_ms) {
                return Err(bad(format!(
                    "hook_time_ms must be within 1..={MAX_HOOK_TIME_MS}"
                )));
            }
            crate::http::HttpPolicy::from_manifest(m).map_err(bad)?;
        }
        let this = self.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || this.build(manifests, &rt))
            .await
            .map_err(|e| Error::Loader(e.to_string()))
    }

    fn build(&self, mut manifests: Vec<Manifest>, rt: &tokio::runtime::Handle) -> Arc<Generation> {
        let inner = &self.inner;
        let number = inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let old = inner.current.load_full();
        manifests.sort_by_key(|m| m.order);
        let (mut plugins, mut status) = (Vec::new(), Vec::new());
        for m in &manifests {
            let cx = LoadContext {
                engine: &inner.engine,
                env: PluginEnv::new(
                    m,
                    services_for(m, &inner.services),
                    inner.metrics.clone(),
                    inner.engine.inner.total.clone(),
                ),
                stats: self.stats_of(&m.name),
                cache_dir: inner.cache_dir.as_deref(),
                generation: number,
                rt,
            };
            match load_one(m, cx) {
                Ok(p) => {
                    status.push(status_of(&p, PluginState::Active));
                    plugins.push(Arc::new(p));
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::error!(plugin = %m.name, generation = number, "plugin not loaded: {error}");
                    match old.plugins.iter().find(|p| p.manifest.name == m.name) {
                        Some(prev) => {
                            status.push(status_of(prev, PluginState::Stale { error }));
                            plugins.push(prev.clone());
                        }
                        None => status.push(PluginStatus {
                            name: m.name.clone(),
                            version: String::new(),
                            stages: m.stages.clone().unwrap_or_default(),
                            order: m.order,
                            mode: m.mode,
                            loaded_in: 0,
                            from_cache: false,
                            state: PluginState::Failed { error },
                            breaker: BreakerState::Closed,
                            breaker_trips: 0,
                        }),
                    }
                }
            }
        }
        Arc::new(Generation::new(number, plugins, status))
    }

    /// Installs `generation`: new transactions use it, running ones finish on theirs.
    pub fn swap(&self, generation: Arc<Generation>) {
        tracing::info!(
            generation = generation.number(),
            "plugin generation installed"
        );
        self.inner.current.store(generation);
    }

    /// [`PluginHost::load`] then [`PluginHost::swap`].
    pub async fn reload(&self, manifests: Vec<Manifest>) -> Result<Arc<Generation>, Error> {
        let generation = self.load(manifests).await?;
        self.swap(generation.clone());
        Ok(generation)
    }

    /// The generation new transactions start on.
    pub fn current(&self) -> Arc<Generation> {
        self.inner.current.load_full()
    }

    /// The plugins of the current generation (for `corvid plugins list`), with the live
    /// state of their circuit breakers.
    pub fn plugins(&self) -> Vec<PluginStatus> {
        let generation = self.current();
        let mut list = generation.plugins().to_vec();
        for s in &mut list {
            let serving = generation
                .plugins
                .iter()
                .find(|p| p.manifest.name == s.name);
            if let Some(p) = serving {
                s.breaker = p.breaker.state();
                s.breaker_trips = p.breaker.trips();
            }
        }
        list
    }

    /// Per plugin and stage counters, since the host was created.
    pub fn stats(&self) -> Vec<HookStats> {
        let Ok(map) = self.inner.stats.lock() else {
            return Vec::new();
        };
        map.iter().flat_map(|(name, s)| s.snapshot(name)).collect()
    }

    /// The recent differences of the shadow plugin `name` from the chain (at most
    /// [`crate::DIFF_LOG_SIZE`], oldest first), since the host was created; `None` when no
    /// plugin of that name was ever loaded. Its counters are in [`PluginHost::stats`].
    pub fn shadow_diffs(&self, name: &str) -> Option<Vec<crate::ShadowDiff>> {
        let map = self.inner.stats.lock().ok()?;
        map.get(name).map(|s| s.diffs.recent())
    }

    /// Metrics recorded by plugins.
    pub fn metrics(&self) -> Vec<MetricSample> {
        self.inner.metrics.snapshot()
    }

    /// Per plugin that reached `MAX_SERIES_PER_PLUGIN` series in the `metrics` import: the
    /// updates to new series refused since start.
    pub fn metrics_dropped(&self) -> Vec<(String, u64)> {
        self.inner.metrics.dropped()
    }

    fn stats_of(&self, name: &str) -> Arc<PluginStats> {
        match self.inner.stats.lock() {
            Ok(mut map) => map.entry(name.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

/// The services of the plugin of `m`: a shadow's kv is its own namespace (see
/// [`crate::kv::ShadowKv`]); DNS and `http` are the same (lookups and requests it makes,
/// within its manifest's grants).
fn services_for(m: &Manifest, services: &Services) -> Services {
    match m.mode {
        PluginMode::Active => services.clone(),
        PluginMode::Shadow => Services {
            kv: Arc::new(ShadowKv {
                inner: services.kv.clone(),
            }),
            dns: services.dns.clone(),
        },
    }
}

impl PluginHost {
    fn delivery_chain(&self, stage: Stage) -> Vec<Arc<LoadedPlugin>> {
        let generation = self.current();
        let plugins = generation.plugins.iter();
        plugins
            .filter(|p| !p.shadow() && p.stages.contains(&stage))
            .cloned()
            .collect()
    }
}

/// The delivery-side hooks: on the current generation, an instance per plugin per call, first
/// answer other than `continue` wins, failing plugins are skipped. Shadow plugins are not
/// called here.
#[async_trait]
impl DeliveryPolicy for PluginHost {
    fn observes(&self, stage: Stage) -> bool {
        let generation = self.current();
        let mut plugins = generation.plugins.iter();
        plugins.any(|p| !p.shadow() && p.stages.contains(&stage))
    }

    /// Where mail for `req.recipient` goes.
    async fn route(&self, req: &RouteRequest) -> Route {
        // Shared by the plugins' calls (each needs an owned value): no deep copy per plugin.
        let r = Arc::new(delivery::request(req));
        for p in self.delivery_chain(Stage::Route) {
            let r = Arc::clone(&r);
            let answer = delivery::call(
                &p,
                Stage::Route,
                None,
                move |b, s| Box::pin(async move { b.call_on_route(s, &r).await }),
                |_| Outcome::Accept,
            )
            .await;
            match answer.map(delivery::route_answer) {
                None | Some(Ok(Route::Continue)) => {}
                Some(Ok(route)) => return route,
                Some(Err(why)) => {
                    p.stats
                        .record(Stage::Route, Outcome::Invalid, Default::default());
                    if p.breaker.failure(&p.manifest.name, false) {
                        p.stats.tripped();
                    }
                    tracing::warn!(plugin = %p.manifest.name, "invalid route refused: {why}");
                }
            }
        }
        Route::Continue
    }

    /// A delivery attempt failed temporarily: keep the schedule, retry at another time, or bounce.
    async fn deferred(&self, info: &DeliveryInfo) -> Deferral {
        let i = Arc::new(delivery::info(info));
        for p in self.delivery_chain(Stage::Deferred) {
            let i = Arc::clone(&i);
            let answer = delivery::call(
                &p,
                Stage::Deferred,
                info.quarantined.as_deref(),
                move |b, s| Box::pin(async move { b.call_on_deferred(s, &i).await }),
                |_| Outcome::Accept,
            )
            .await;
            match answer.map(delivery::deferral_answer) {
                None | Some(Deferral::Continue) => {}
                Some(d) => return d,
            }
        }
        Deferral::Continue
    }

    /// A delivery failed permanently: send the DSN, suppress it, or annotate it.
    async fn bounced(&self, info: &DeliveryInfo) -> BounceAction {
        let i = Arc::new(delivery::info(info));
        for p in self.delivery_chain(Stage::Bounced) {
            let i = Arc::clone(&i);
            let answer = delivery::call(
                &p,
                Stage::Bounced,
                info.quarantined.as_deref(),
                move |b, s| Box::pin(async move { b.call_on_bounced(s, &i).await }),
                |_| Outcome::Accept,
            )
            .await;
            match answer.map(delivery::bounce_answer) {
                None | Some(BounceAction::Continue) => {}
                Some(b) => return b,
            }
        }
        BounceAction::Continue
    }

    /// A recipient was delivered: every plugin of the stage is told.
    async fn delivered(&self, info: &DeliveryInfo) {
        let i = Arc::new(delivery::info(info));
        for p in self.delivery_chain(Stage::Delivered) {
            let i = Arc::clone(&i);
            delivery::call(
                &p,
                Stage::Delivered,
                info.quarantined.as_deref(),
                move |b, s| Box::pin(async move { b.call_on_delivered(s, &i).await }),
                |_| Outcome::Continue,
            )
            .await;
        }
    }
}

impl Policy for PluginHost {
    fn session(&self, conn: &ConnectionInfo) -> Box<dyn PolicySession> {
        let inner = self.inner.clone();
        let budget = inner.shadow_budget.clone();
        Box::new(PluginSession::new(
            Box::new(move || inner.current.load_full()),
            conn,
            budget,
        ))
    }
}
