//! Generations: an immutable, ordered set of loaded plugins. Loading builds a new one off the
//! async threads; [`crate::PluginHost`] swaps it in atomically. A plugin that fails to compile,
//! link or configure keeps its previous version (if any) in the new generation.

use crate::bindings::corvid::plugin::types::PluginInfo;
use crate::bindings::{PluginIndices, PluginPre};
use crate::breaker::BreakerState;
use crate::cache::{self, CacheUse};
use crate::convert;
use crate::engine::PluginEngine;
use crate::instance::{arm, classify, Budget, SETUP_BUDGETS};
use crate::manifest::{Manifest, PluginMode};
use crate::state::{new_store, PluginEnv};
use crate::stats::PluginStats;
use crate::Error;
use corvid_types::Stage;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A plugin ready to instantiate.
pub(crate) struct LoadedPlugin {
    pub(crate) manifest: Manifest,
    pub(crate) pre: PluginPre<crate::state::HostState>,
    /// Where the `plugin` world's exports are (looked up once, not per instance).
    pub(crate) indices: PluginIndices,
    /// Where the `hooks` export is, when the component has it (facts on demand).
    pub(crate) hooks: Option<crate::context::HookIndices>,
    pub(crate) env: Arc<PluginEnv>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) version: String,
    pub(crate) stats: Arc<PluginStats>,
    pub(crate) generation: u64,
    pub(crate) cache: CacheUse,
    /// Idle warm instances (pool mode).
    pub(crate) pool: crate::warm::Pool,
    /// Bypasses the plugin while it keeps failing.
    pub(crate) breaker: crate::breaker::Breaker,
}

impl LoadedPlugin {
    /// The limits of one hook call.
    pub(crate) fn budget(&self) -> Budget {
        Budget {
            fuel: self.manifest.limits.hook_fuel.max(1),
            time: Duration::from_millis(self.manifest.limits.hook_time_ms.max(1)),
        }
    }

    /// Whether the plugin runs in shadow mode (beside the chain, never acted on).
    pub(crate) fn shadow(&self) -> bool {
        self.manifest.mode == PluginMode::Shadow
    }

    /// Whether this plugin takes part in `stage` on the listener called `listener`.
    pub(crate) fn applies(&self, stage: Stage, listener: &str) -> bool {
        self.stages.contains(&stage)
            && self
                .manifest
                .listeners
                .as_ref()
                .is_none_or(|l| l.iter().any(|x| x == listener))
    }
}

/// The state of one plugin in a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginState {
    /// Loaded from the current manifest.
    Active,
    /// The new version failed; the version of an earlier generation keeps serving.
    Stale { error: String },
    /// Failed, and no earlier version exists: the plugin is not in the chain.
    Failed { error: String },
}

/// What `corvid plugins list` shows about a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginStatus {
    pub name: String,
    /// The version from `describe` (empty when it never loaded).
    pub version: String,
    pub stages: Vec<Stage>,
    pub order: i32,
    /// Active, or shadow (compared with the chain, never acted on).
    pub mode: PluginMode,
    /// The generation the serving version was loaded in (0 when none serves).
    pub loaded_in: u64,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    pub state: PluginState,
    /// The circuit breaker of the serving version (live in [`crate::PluginHost::plugins`]).
    pub breaker: BreakerState,
    /// Times that breaker opened.
    pub breaker_trips: u64,
}

/// One immutable set of plugins. A transaction runs entirely on the generation it started on.
pub struct Generation {
    pub(crate) number: u64,
    pub(crate) plugins: Vec<Arc<LoadedPlugin>>,
    pub(crate) status: Vec<PluginStatus>,
    /// The stages some shadow plugin takes part in, one bit per stage (`stats::STAGES`).
    shadow_stages: u16,
}

impl Generation {
    pub(crate) fn new(
        number: u64,
        plugins: Vec<Arc<LoadedPlugin>>,
        status: Vec<PluginStatus>,
    ) -> Self {
        let shadow_stages = plugins
            .iter()
            .filter(|p| p.shadow())
            .flat_map(|p| p.stages.iter())
            .fold(0, |bits, s| bits | (1 << crate::stats::stage_index(*s)));
        Generation {
            number,
            plugins,
            status,
            shadow_stages,
        }
    }

    pub(crate) fn empty() -> Self {
        Self::new(0, Vec::new(), Vec::new())
    }

    /// Whether some shadow plugin takes part in `stage` (on some listener).
    pub(crate) fn shadows(&self, stage: Stage) -> bool {
        self.shadow_stages & (1 << crate::stats::stage_index(stage)) != 0
    }

    /// Its number; each load makes a higher one.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Every plugin of the manifests it was built from, in chain order, failed ones included.
    pub fn plugins(&self) -> &[PluginStatus] {
        &self.status
    }

    /// The errors of this load, as (plugin, reason).
    pub fn errors(&self) -> Vec<(String, String)> {
        self.status
            .iter()
            .filter_map(|s| match &s.state {
                PluginState::Active => None,
                PluginState::Stale { error } | PluginState::Failed { error } => {
                    Some((s.name.clone(), error.clone()))
                }
            })
            .collect()
    }
}

pub(crate) fn status_of(p: &LoadedPlugin, state: PluginState) -> PluginStatus {
    PluginStatus {
        name: p.manifest.name.clone(),
        version: p.version.clone(),
        stages: p.stages.clone(),
        order: p.manifest.order,
        mode: p.manifest.mode,
        loaded_in: p.generation,
        from_cache: p.cache == CacheUse::Hit,
        state,
        breaker: p.breaker.state(),
        breaker_trips: p.breaker.trips(),
    }
}

/// Everything [`load_one`] needs besides the manifest.
pub(crate) struct LoadContext<'a> {
    pub(crate) engine: &'a PluginEngine,
    pub(crate) env: PluginEnv,
    pub(crate) stats: Arc<PluginStats>,
    pub(crate) cache_dir: Option<&'a Path>,
    pub(crate) generation: u64,
    pub(crate) rt: &'a tokio::runtime::Handle,
}

/// Reads, compiles (or loads from the cache), links, instantiates once, and calls `describe`
/// and `configure`. Blocking: run it on a blocking thread.
pub(crate) fn load_one(m: &Manifest, cx: LoadContext<'_>) -> Result<LoadedPlugin, Error> {
    let name = m.name.clone();
    let bytes = std::fs::read(&m.path).map_err(|source| Error::Read {
        path: m.path.clone(),
        source,
    })?;
    let engine = &cx.engine.inner.engine;
    let (component, cache) =
        cache::component(engine, &bytes, cx.cache_dir).map_err(|e| Error::Compile {
            plugin: name.clone(),
            reason: format!("{e:#}"),
        })?;
    let link = |e: wasmtime::Error| Error::Link {
        plugin: name.clone(),
        reason: format!("{e:#}"),
    };
    let pre = cx
        .engine
        .inner
        .linker
        .instantiate_pre(&component)
        .map_err(link)?;
    let indices = PluginIndices::new(&pre).map_err(link)?;
    let hooks = crate::context::HookIndices::find(&component);
    let pre = PluginPre::new(pre).map_err(link)?;

    let env = Arc::new(cx.env);
    let limit = Budget {
        fuel: m.limits.hook_fuel.max(1).saturating_mul(SETUP_BUDGETS),
        time: Duration::from_millis(m.limits.hook_time_ms.max(1000)),
    };
    let configure = |reason: String| Error::Configure {
        plugin: name.clone(),
        reason,
    };
    let (info, result): (PluginInfo, Result<(), String>) = cx
        .rt
        .block_on(async {
            let mut store = new_store(engine, env.clone(), 0);
            arm(&mut store, limit);
            let instance = pre
                .instance_pre()
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify(e, &store).1)?;
            let inst = indices
                .load(&mut store, &instance)
                .map_err(|e| format!("{e:#}"))?;
            // A `hooks` export of the wrong shape refuses the plugin here, not at every call.
            if let Some(h) = &hooks {
                h.load(&mut store, &instance)
                    .map_err(|e| format!("export `hooks`: {e:#}"))?;
            }
            arm(&mut store, limit);
            let info = inst
                .call_describe(&mut store)
                .await
                .map_err(|e| classify(e, &store).1)?;
            arm(&mut store, limit);
            let result = inst
                .call_configure(&mut store, &env.config)
                .await
                .map_err(|e| classify(e, &store).1)?;
            Ok::<_, String>((info, result))
        })
        .map_err(configure)?;
    result.map_err(|refusal| configure(format!("configuration refused: {refusal}")))?;

    let stages = match &m.stages {
        Some(s) => s.clone(),
        None => info.stages.iter().map(|s| convert::stage(*s)).collect(),
    };
    tracing::info!(
        plugin = %name,
        version = %info.version,
        generation = cx.generation,
        cache = ?cache,
        "plugin loaded"
    );
    let total = env.total.clone();
    let breaker_trips = env.breaker_trips.clone();
    Ok(LoadedPlugin {
        manifest: m.clone(),
        pre,
        indices,
        hooks,
        env,
        stages,
        version: info.version,
        stats: cx.stats,
        generation: cx.generation,
        cache,
        pool: crate::warm::Pool::new(total),
        breaker: crate::breaker::Breaker::new(m.breaker, breaker_trips),
    })
}
