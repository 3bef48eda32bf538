//! The plugin host's numbers, read at each scrape: per plugin and stage hook counters
//! (`PluginHost::stats`), the engine's memory, and the metrics plugins record through the
//! `metrics` import (`PluginHost::metrics`), capped per plugin.

use corvid_plugin_host::{
    HookStats, MetricSample, MetricValue, PluginEngine, PluginHost, LATENCY_BUCKETS,
};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

/// Empty until the plugins are loaded (a scrape during start-up has no plugin families).
#[derive(Default)]
pub struct Collector {
    plugins: OnceLock<(PluginHost, PluginEngine)>,
}

impl Collector {
    pub fn set(&self, host: PluginHost, engine: PluginEngine) {
        let _ = self.plugins.set((host, engine));
    }
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("plugin metrics collector")
    }
}

type Labels = Vec<(String, String)>;

/// One family's series, gathered before its descriptor is written (the format wants each
/// family in one block).
struct Series<T> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    rows: Vec<(Labels, T)>,
}

impl<T> Series<T> {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Series {
            name,
            help,
            kind,
            rows: Vec::new(),
        }
    }
}

fn write_u64(enc: &mut DescriptorEncoder, s: &Series<u64>) -> fmt::Result {
    let mut m = enc.encode_descriptor(s.name, s.help, None, s.kind)?;
    for (labels, v) in &s.rows {
        let fam = m.encode_family(labels)?;
        match s.kind {
            MetricType::Counter => ConstCounter::new(*v).encode(fam)?,
            _ => ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(fam)?,
        }
    }
    Ok(())
}

fn write_f64(enc: &mut DescriptorEncoder, s: &Series<f64>) -> fmt::Result {
    let mut m = enc.encode_descriptor(s.name, s.help, None, s.kind)?;
    for (labels, v) in &s.rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn hook_labels(h: &HookStats) -> Labels {
    vec![
        ("plugin".into(), h.plugin.clone()),
        ("stage".into(), h.stage.as_str().into()),
    ]
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some((host, engine)) = self.plugins.get() else {
            return Ok(());
        };
        let stats = host.stats();
        let mut calls = Series::new(
            "corvid_plugin_calls",
            "Hook calls, by plugin and stage",
            MetricType::Counter,
        );
        let mut outcomes = Series::new(
            "corvid_plugin_outcomes",
            "Hook calls by how they ended, by plugin, stage and outcome",
            MetricType::Counter,
        );
        let mut traps = Series::new(
            "corvid_plugin_traps",
            "Hook calls that trapped, by plugin and stage",
            MetricType::Counter,
        );
        let mut timeouts = Series::new(
            "corvid_plugin_timeouts",
            "Hook calls cut off at the wall-time limit, by plugin and stage",
            MetricType::Counter,
        );
        let mut fuel = Series::new(
            "corvid_plugin_fuel_max",
            "Most fuel one hook call used, by plugin and stage",
            MetricType::Gauge,
        );
        let mut max = Series::new(
            "corvid_plugin_hook_duration_max_seconds",
            "Longest hook call, by plugin and stage",
            MetricType::Gauge,
        );
        let mut shadow = Series::new(
            "corvid_plugin_shadow_decisions",
            "Decisions of shadow plugins compared with the chain's (agree, differ), and calls \
             skipped (shadows behind or out of instances), by plugin and stage",
            MetricType::Counter,
        );
        // Per plugin, not per stage: the host counts these for the plugin as a whole.
        let mut per_plugin: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for h in &stats {
            let l = hook_labels(h);
            calls.rows.push((l.clone(), h.calls));
            let ends = [
                ("continue", h.continues),
                ("accept", h.accepts),
                ("reject", h.rejects),
                ("tempfail", h.tempfails),
                ("disconnect", h.disconnects),
                ("discard", h.discards),
                ("quarantine", h.quarantines),
                ("trap", h.traps),
                ("timeout", h.timeouts),
                ("out_of_memory", h.out_of_memory),
                ("invalid", h.invalid),
                ("cpu_budget", h.cpu_budget),
                ("bypassed", h.bypassed),
                ("exhausted", h.exhausted),
            ];
            for (outcome, n) in ends {
                let mut l = l.clone();
                l.push(("outcome".into(), outcome.into()));
                outcomes.rows.push((l, n));
            }
            let compared = [
                ("agree", h.shadow_agree),
                ("differ", h.shadow_differ),
                ("skipped", h.shadow_skipped),
            ];
            // Only shadow plugins have these: no series of zeros for every active plugin.
            if compared.iter().any(|(_, n)| *n > 0) {
                for (result, n) in compared {
                    let mut l = l.clone();
                    l.push(("result".into(), result.into()));
                    shadow.rows.push((l, n));
                }
            }
            traps.rows.push((l.clone(), h.traps));
            timeouts.rows.push((l.clone(), h.timeouts));
            fuel.rows.push((l.clone(), h.fuel_max));
            max.rows.push((l, h.latency_max.as_secs_f64()));
            per_plugin.insert(
                h.plugin.clone(),
                (h.breaker_trips, h.instantiations, h.memory_peak_bytes),
            );
        }
        for s in [&calls, &outcomes, &shadow, &traps, &timeouts, &fuel] {
            write_u64(&mut enc, s)?;
        }
        // Buckets from 1 µs to 5 s (corvid_plugin_host::LATENCY_BUCKETS), then +Inf; each
        // with its own count: the encoder makes them cumulative.
        let mut m = enc.encode_descriptor(
            "corvid_plugin_hook_duration_seconds",
            "Hook call latency, by plugin and stage",
            None,
            MetricType::Histogram,
        )?;
        for h in &stats {
            let labels = hook_labels(h);
            let mut fam = m.encode_family(&labels)?;
            let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(h.latency_buckets.iter().copied())
                .collect();
            let finite: u64 = h.latency_buckets.iter().sum();
            buckets.push((f64::INFINITY, h.calls.saturating_sub(finite)));
            fam.encode_histogram::<NoLabelSet>(
                h.latency_total.as_secs_f64(),
                h.calls,
                &buckets,
                None,
            )?;
        }
        write_f64(&mut enc, &max)?;

        let mut trips = Series::new(
            "corvid_plugin_breaker_trips",
            "Times the plugin's circuit breaker opened",
            MetricType::Counter,
        );
        let mut inst = Series::new(
            "corvid_plugin_instantiations",
            "Instances created for the plugin",
            MetricType::Counter,
        );
        let mut peak = Series::new(
            "corvid_plugin_memory_peak_bytes",
            "Largest linear memory one instance of the plugin has had",
            MetricType::Gauge,
        );
        for (plugin, (t, i, p)) in per_plugin {
            let l: Labels = vec![("plugin".into(), plugin)];
            trips.rows.push((l.clone(), t));
            inst.rows.push((l.clone(), i));
            peak.rows.push((l, p));
        }
        for s in [&trips, &inst, &peak] {
            write_u64(&mut enc, s)?;
        }

        let mut memory = Series::new(
            "corvid_plugin_engine_memory_bytes",
            "Linear memory of all live plugin instances (pool use), and its limit",
            MetricType::Gauge,
        );
        let used = u64::try_from(engine.memory_in_use()).unwrap_or(u64::MAX);
        let limit = engine.options().total_memory_mb.saturating_mul(1 << 20);
        memory
            .rows
            .push((vec![("kind".into(), "used".into())], used));
        memory
            .rows
            .push((vec![("kind".into(), "limit".into())], limit));
        write_u64(&mut enc, &memory)?;

        let mut instances = Series::new(
            "corvid_plugin_engine_instances",
            "Plugin instances alive (idle pooled ones included), and the limit",
            MetricType::Gauge,
        );
        let alive = u64::try_from(engine.instances_in_use()).unwrap_or(u64::MAX);
        let max = u64::from(engine.options().max_instances);
        instances
            .rows
            .push((vec![("kind".into(), "used".into())], alive));
        instances
            .rows
            .push((vec![("kind".into(), "limit".into())], max));
        write_u64(&mut enc, &instances)?;

        write_plugin_metrics(&mut enc, host.metrics(), host.metrics_dropped())
    }
}

/// The metrics plugins define, as `corvid_plugin_metric_<plugin>_<name>` (a prefix no host
/// family uses), with a `plugin` label (two plugins can map to one name: `a_b`+`c`, `a`+`b_c`)
/// and the plugin's own labels (one named `plugin` or `le` becomes `_plugin`, `_le`).
/// The plugin host holds at most `MAX_SERIES_PER_PLUGIN` series per plugin; `dropped` counts
/// the updates it refused past that.
fn write_plugin_metrics(
    enc: &mut DescriptorEncoder,
    samples: Vec<MetricSample>,
    dropped: Vec<(String, u64)>,
) -> fmt::Result {
    let mut families: BTreeMap<String, Vec<MetricSample>> = BTreeMap::new();
    for s in samples {
        let kind = match s.value {
            MetricValue::Counter(_) => "c",
            MetricValue::Histogram { .. } => "h",
        };
        let name = format!(
            "corvid_plugin_metric_{}_{}",
            sanitize(&s.plugin),
            sanitize(&s.name)
        );
        // A plugin that uses one name as a counter and as a histogram gets two families.
        families
            .entry(format!("{name}\0{kind}"))
            .or_default()
            .push(s);
    }
    for (key, rows) in &families {
        let (name, kind) = key.split_once('\0').unwrap_or((key.as_str(), "c"));
        let metric_type = match kind {
            "h" => MetricType::Histogram,
            _ => MetricType::Counter,
        };
        let help = "Recorded by the plugin through the metrics import";
        let mut m = enc.encode_descriptor(name, help, None, metric_type)?;
        for s in rows {
            let mut labels: Labels = vec![("plugin".into(), s.plugin.clone())];
            for (k, v) in &s.labels {
                let k = match sanitize(k) {
                    k if k == "plugin" || k == "le" => format!("_{k}"),
                    k => k,
                };
                labels.push((k, v.clone()));
            }
            let fam = m.encode_family(&labels)?;
            match s.value {
                MetricValue::Counter(v) => ConstCounter::new(v).encode(fam)?,
                MetricValue::Histogram { count, sum } => {
                    let mut fam = fam;
                    fam.encode_histogram::<NoLabelSet>(sum, count, &[(f64::INFINITY, count)], None)?
                }
            }
        }
    }
    let mut d = Series::new(
        "corvid_plugin_series_dropped",
        "Updates a plugin made to new series beyond the per-plugin cap of 1000 series, refused",
        MetricType::Counter,
    );
    for (plugin, n) in dropped {
        d.rows.push((vec![("plugin".into(), plugin)], n));
    }
    write_u64(enc, &d)
}

/// A metric or label name from a plugin, made valid for the exposition format
/// (`[a-zA-Z_][a-zA-Z0-9_]*`): other characters become `_`.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}
