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

/// The in-memory registry (exported when the server grows a metrics endpoint).
#[derive(Default)]
pub(crate) struct Metrics {
    series: Mutex<BTreeMap<Key, MetricValue>>,
}

/// Series per plugin are capped so that a plugin cannot exhaust host memory with labels.
const MAX_SERIES: usize = 10_000;

impl Metrics {
    fn update(&self, key: Key, f: impl FnOnce(&mut MetricValue), init: MetricValue) {
        let Ok(mut map) = self.series.lock() else {
            return;
        };
        if !map.contains_key(&key) && map.len() >= MAX_SERIES {
            return;
        }
        f(map.entry(key).or_insert(init));
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
        let Ok(map) = self.series.lock() else {
            return Vec::new();
        };
        map.iter()
            .map(|((plugin, name, labels), value)| MetricSample {
                plugin: plugin.clone(),
                name: name.clone(),
                labels: labels.clone(),
                value: value.clone(),
            })
            .collect()
    }
}
