//! Per plugin and hook counters, kept in memory (atomics; no lock on the hook path) and
//! readable with [`crate::PluginHost::stats`]. Stats follow the plugin's name across reloads.

use corvid_types::Stage;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// All stages, in the order of [`Stage`]'s declaration (index = position).
pub(crate) const STAGES: [Stage; 10] = [
    Stage::Connect,
    Stage::Helo,
    Stage::Auth,
    Stage::Mail,
    Stage::Rcpt,
    Stage::Data,
    Stage::Route,
    Stage::Deferred,
    Stage::Bounced,
    Stage::Delivered,
];

pub(crate) fn stage_index(stage: Stage) -> usize {
    STAGES.iter().position(|s| *s == stage).unwrap_or(0)
}

/// How one hook call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Continue,
    Accept,
    Reject,
    Tempfail,
    Disconnect,
    Discard,
    Quarantine,
    /// The guest trapped (panic, unreachable, host refusal that traps).
    Trap,
    /// The hook ran past its wall-time limit.
    Timeout,
    /// The guest trapped after its memory limit refused a growth.
    OutOfMemory,
    /// The decision failed validation.
    Invalid,
    /// The hook used up its CPU budget (`limits.hook_fuel`).
    CpuBudget,
    /// The plugin's circuit breaker was open: its failure policy applied without a call.
    Bypassed,
    /// The engine's instance or total memory limit was reached (not the plugin's fault: it
    /// does not count towards its breaker).
    Exhausted,
}

const OUTCOMES: usize = 14;

/// Upper bounds of the hook latency histogram's buckets, in seconds: from a warm call of a
/// plugin that reads nothing (about a microsecond) to the default wall-time backstop (5 s).
pub const LATENCY_BUCKETS: [f64; 16] = [
    1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05, 0.25, 1.0,
    5.0,
];

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    outcomes: [AtomicU64; OUTCOMES],
    latency_ns: AtomicU64,
    max_latency_ns: AtomicU64,
    /// Calls per latency bucket (not cumulative); slower than the last bound: none.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    fuel_max: AtomicU64,
    /// Shadow mode: decisions the same as the chain's, different, and calls not made
    /// because the session's shadow queue was full or the shadows held their instance share.
    shadow: [AtomicU64; 3],
}

/// The live counters of one plugin (all generations of it).
#[derive(Default)]
pub(crate) struct PluginStats {
    hooks: [Counters; 10],
    instantiations: AtomicU64,
    memory_peak: AtomicU64,
    breaker_trips: AtomicU64,
    /// Shadow mode: the recent differences from the chain.
    pub(crate) diffs: crate::shadow::DiffLog,
}

/// What became of one shadow call ([`PluginStats::shadow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShadowOutcome {
    Agree = 0,
    Differ = 1,
    Skipped = 2,
}

impl PluginStats {
    /// Counts a shadow call at `stage`.
    pub(crate) fn shadow(&self, stage: Stage, outcome: ShadowOutcome) {
        self.hooks[stage_index(stage)].shadow[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Notes an instance's linear memory size.
    pub(crate) fn memory(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.memory_peak.fetch_max(bytes, Relaxed);
    }

    pub(crate) fn record(&self, stage: Stage, outcome: Outcome, elapsed: Duration) {
        let c = &self.hooks[stage_index(stage)];
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        c.calls.fetch_add(1, Relaxed);
        c.outcomes[outcome as usize].fetch_add(1, Relaxed);
        c.latency_ns.fetch_add(ns, Relaxed);
        // A read first: a new maximum is rare, and an RMW on every call is not free.
        if ns > c.max_latency_ns.load(Relaxed) {
            c.max_latency_ns.fetch_max(ns, Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
            c.buckets[i].fetch_add(1, Relaxed);
        }
    }

    /// Notes the fuel one call of `stage` used.
    pub(crate) fn fuel(&self, stage: Stage, used: u64) {
        let max = &self.hooks[stage_index(stage)].fuel_max;
        if used > max.load(Relaxed) {
            max.fetch_max(used, Relaxed);
        }
    }

    /// Notes that the plugin's circuit breaker opened.
    pub(crate) fn tripped(&self) {
        self.breaker_trips.fetch_add(1, Relaxed);
    }

    pub(crate) fn instantiated(&self) {
        self.instantiations.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, plugin: &str) -> Vec<HookStats> {
        let get = |c: &Counters, o: Outcome| c.outcomes[o as usize].load(Relaxed);
        let shadow = |c: &Counters, o: ShadowOutcome| c.shadow[o as usize].load(Relaxed);
        STAGES
            .iter()
            .zip(self.hooks.iter())
            .filter(|(_, c)| c.calls.load(Relaxed) > 0 || shadow(c, ShadowOutcome::Skipped) > 0)
            .map(|(stage, c)| HookStats {
                plugin: plugin.to_string(),
                stage: *stage,
                calls: c.calls.load(Relaxed),
                continues: get(c, Outcome::Continue),
                accepts: get(c, Outcome::Accept),
                rejects: get(c, Outcome::Reject),
                tempfails: get(c, Outcome::Tempfail),
                disconnects: get(c, Outcome::Disconnect),
                discards: get(c, Outcome::Discard),
                quarantines: get(c, Outcome::Quarantine),
                traps: get(c, Outcome::Trap),
                timeouts: get(c, Outcome::Timeout),
                out_of_memory: get(c, Outcome::OutOfMemory),
                invalid: get(c, Outcome::Invalid),
                cpu_budget: get(c, Outcome::CpuBudget),
                bypassed: get(c, Outcome::Bypassed),
                exhausted: get(c, Outcome::Exhausted),
                breaker_trips: self.breaker_trips.load(Relaxed),
                fuel_max: c.fuel_max.load(Relaxed),
                latency_total: Duration::from_nanos(c.latency_ns.load(Relaxed)),
                latency_max: Duration::from_nanos(c.max_latency_ns.load(Relaxed)),
                latency_buckets: c.buckets.iter().map(|b| b.load(Relaxed)).collect(),
                instantiations: self.instantiations.load(Relaxed),
                memory_peak_bytes: self.memory_peak.load(Relaxed),
                shadow_agree: shadow(c, ShadowOutcome::Agree),
                shadow_differ: shadow(c, ShadowOutcome::Differ),
                shadow_skipped: shadow(c, ShadowOutcome::Skipped),
            })
            .collect()
    }
}

/// Counters of one plugin's hook at one stage, since the host started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStats {
    pub plugin: String,
    pub stage: Stage,
    /// Hook calls made (failed ones included).
    pub calls: u64,
    pub continues: u64,
    pub accepts: u64,
    pub rejects: u64,
    pub tempfails: u64,
    pub disconnects: u64,
    pub discards: u64,
    pub quarantines: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls cut off at the wall-time limit.
    pub timeouts: u64,
    /// Calls that trapped after the memory limit refused a growth.
    pub out_of_memory: u64,
    /// Decisions refused by validation.
    pub invalid: u64,
    /// Calls stopped when they used up their CPU budget (`limits.hook_fuel`).
    pub cpu_budget: u64,
    /// Calls skipped because the plugin's circuit breaker was open (counted in `calls`; no
    /// instance was taken).
    pub bypassed: u64,
    /// Calls that failed because the engine's instance or total memory limit was reached.
    pub exhausted: u64,
    /// Times the plugin's circuit breaker opened (all stages).
    pub breaker_trips: u64,
    /// The most fuel one call of the hook used (its CPU cost, to size `limits.hook_fuel`).
    pub fuel_max: u64,
    /// Sum of call latencies (divide by `calls` for the mean).
    pub latency_total: Duration,
    pub latency_max: Duration,
    /// Calls per bucket of [`LATENCY_BUCKETS`] (not cumulative); calls slower than the last
    /// bound are `calls` minus their sum.
    pub latency_buckets: Vec<u64>,
    /// Instances created for this plugin (all stages).
    pub instantiations: u64,
    /// The largest linear memory one instance of the plugin has had.
    pub memory_peak_bytes: u64,
    /// Shadow mode: decisions that matched the chain's final verdict at the stage (same
    /// class, same reply code; `continue` and `accept` are one class).
    pub shadow_agree: u64,
    /// Shadow mode: decisions that did not (the recent ones: `PluginHost::shadow_diffs`).
    pub shadow_differ: u64,
    /// Shadow mode: calls not made because the session's shadow queue was full, or the
    /// shadows already held their share of the engine's instances.
    pub shadow_skipped: u64,
}
