//! Counters and histograms recorded by plugins through the `metrics` import.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One metric series as last seen.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSample {
    /// The plugin that records it.
    pub plugin: String,
    pub name: String,
    /// Sorted label pairs.
    pub labels: Vec<(String, String)>,
    pub value: MetricValue,
}

/// A counter total, or a histogram's count and sum.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Histogram { count: u64, sum: f64 },
}

type Key = (String, String, Vec<(String, String)>);

/// Series one plugin may hold through the `metrics` import. Past it, updates that would start
/// a new series are refused and counted per plugin ([`Metrics::dropped`]), so that one
/// plugin's labels can neither exhaust host memory nor crowd out another plugin's series.
pub const MAX_SERIES_PER_PLUGIN: usize = 1000;

#[derive(Default)]
struct Registry {
    series: BTreeMap<Key, MetricValue>,
    /// Series held, and updates refused at the cap, per plugin.
    per_plugin: BTreeMap<String, (usize, u64)>,
}

/// The in-memory registry the server's `/metrics` endpoint exports.
#[derive(Default)]
pub(crate) struct Metrics {
    inner: Mutex<Registry>,
}

impl Metrics {
    fn update(&self, key: Key, f: impl FnOnce(&mut MetricValue), init: MetricValue) {
        let Ok(mut reg) = self.inner.lock() else {
            return;
        };
        let reg = &mut *reg;
        if let Some(v) = reg.series.get_mut(&key) {
            f(v);
            return;
        }
        let (held, refused) = reg.per_plugin.entry(key.0.clone()).or_default();
        if *held >= MAX_SERIES_PER_PLUGIN {
            *refused = refused.saturating_add(1);
            return;
        }
        *held += 1;
        f(reg.series.entry(key).or_insert(init));
    }

    /// Per plugin that hit [`MAX_SERIES_PER_PLUGIN`]: how many updates to new series were
    /// refused since start.
    pub(crate) fn dropped(&self) -> Vec<(String, u64)> {
        let Ok(reg) = self.inner.lock() else {
            return Vec::new();
        };
        reg.per_plugin
            .iter()
            .filter(|(_, (_, refused))| *refused > 0)
            .map(|(plugin, (_, refused))| (plugin.clone(), *refused))
            .collect()
    }

    pub(crate) fn counter_add(
        &self,
        plugin: &str,
        name: String,
        v: u64,
        mut labels: Vec<(String, String)>,
    ) {
        labels.sort();
        self.update(
            (plugin.to_string(), name, labels),
            |m| {
                if let MetricValue::Counter(c) = m {
                    *c = c.saturating_add(v);
                }
            },
            MetricValue::Counter(0),
        );
    }

    pub(crate) fn histogram_record(
        &self,
        plugin: &str,
        name: String,
        v: f64,
        mut labels: Vec<(String, String)>,
    ) {
        labels.sort();
        self.update(
            (plugin.to_string(), name, labels),
            |m| {
                if let MetricValue::Histogram { count, sum } = m {
                    *count += 1;
                    *sum += v;
                }
            },
            MetricValue::Histogram { count: 0, sum: 0.0 },
        );
    }

    pub(crate) fn snapshot(&self) -> Vec<MetricSample> {
        let Ok(reg) = self.inner.lock() else {
            return Vec::new();
        };
        reg.series
            .iter()
            .map(|((plugin, name, labels), value)| MetricSample {
                plugin: plugin.clone(),
                name: name.clone(),
                labels: labels.clone(),
                value: value.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_plugin_and_refusals_are_counted() {
        let m = Metrics::default();
        for i in 0..MAX_SERIES_PER_PLUGIN + 5 {
            m.counter_add("noisy", "hits".into(), 1, vec![("n".into(), i.to_string())]);
        }
        // A second plugin still gets its series, and existing ones still count.
        m.counter_add("quiet", "hits".into(), 2, Vec::new());
        m.counter_add("noisy", "hits".into(), 1, vec![("n".into(), "0".into())]);
        let snap = m.snapshot();
        let noisy: Vec<_> = snap.iter().filter(|s| s.plugin == "noisy").collect();
        assert_eq!(noisy.len(), MAX_SERIES_PER_PLUGIN);
        assert!(noisy
            .iter()
            .any(|s| s.labels == [("n".into(), "0".into())] && s.value == MetricValue::Counter(2)));
        assert!(snap
            .iter()
            .any(|s| s.plugin == "quiet" && s.value == MetricValue::Counter(2)));
        assert_eq!(m.dropped(), vec![("noisy".to_string(), 5)]);
    }
}
