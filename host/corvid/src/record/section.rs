//! The `[record]` table of the config.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The `[record]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSection {
    /// The share of sessions recorded, 0 to 1 (evenly spaced: 0.1 is every tenth).
    #[serde(default = "one")]
    pub rate: f64,
    /// `all` (default) or `refused`: only sessions in which the chain refused something
    /// (reject, tempfail or disconnect) are kept.
    #[serde(default)]
    pub only: RecordOnly,
    /// Only sessions in which this plugin refused something (its reject, tempfail or
    /// disconnect decided a stage; or its failure, under `failure_policy = "tempfail"`).
    pub plugin: Option<String>,
    /// Where the capture files go; default `<data_dir>/captures`.
    pub dir: Option<PathBuf>,
    /// The most bytes of messages one capture holds; a longer message is cut there and
    /// later transactions are left out (the capture says so: it is partial). Default 1 MiB.
    #[serde(default = "max_bytes")]
    pub max_bytes: usize,
    /// Captures older than this are removed (checked at start and then hourly). Default 7d.
    #[serde(default = "retention", with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordOnly {
    #[default]
    All,
    Refused,
}

fn one() -> f64 {
    1.0
}

fn max_bytes() -> usize {
    1 << 20
}

pub(super) fn retention() -> Duration {
    Duration::from_secs(7 * 86400)
}
