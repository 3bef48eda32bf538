//! `corvid plugin replay CAPTURE...`: runs sessions recorded by `[record]` (see
//! [`crate::record`]) offline through the recorded chain, or through new builds of some of its
//! plugins (`--plugin NAME=PATH.wasm`), and prints every hook decision that differs from the
//! recorded one (exit status 1 when any does). Several captures (or a directory of them) run
//! one after the other in one process, each on its own scripted clock, kv store and http
//! answers (installed afresh by [`run_chain`]).
//!
//! A capture is a `corvid plugin test` script (the connection facts, the AUTH mechanism and
//! user, the transactions with their messages, the clock, and the chain's decisions as the
//! expectations) with the names of the plugins of the chain, so the replay is the test runner
//! run on a chain instead of one plugin.

use crate::plugin_test::ambient::KvEntry;
use crate::plugin_test::script::Script;
use crate::plugin_test::{report, run_chain, Format};
use anyhow::{bail, Context, Result};
use corvid_plugin_host::{Manifest, PluginMode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The format version written by the recorder.
pub const CAPTURE_VERSION: u32 = 1;

/// A capture file (JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// The format version ([`CAPTURE_VERSION`]).
    pub corvid_capture: u32,
    /// When the session started (RFC 3339).
    #[serde(default)]
    pub recorded_at: Option<String>,
    /// The names of the active plugins of the chain, in the order they ran.
    pub plugins: Vec<String>,
    /// What the recorder left out (a truncated message, the AUTH password, ...): a replay
    /// of a partial capture may differ for that reason alone.
    #[serde(default)]
    pub partial: Vec<String>,
    /// The kv values the plugins found, by namespace (the plugin's name) and key: the replay
    /// starts with them.
    #[serde(default)]
    pub kv: BTreeMap<String, BTreeMap<String, KvEntry>>,
    /// The plugins whose verdicts refused something in the session.
    #[serde(default)]
    pub refused_by: Vec<String>,
    pub script: Script,
}

/// Reads a capture (JSON, or TOML when the name ends in `.toml`).
pub fn load(path: &Path) -> Result<Capture> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed: Capture = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(anyhow::Error::from)
    } else {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    }
    .with_context(|| format!("in {}", path.display()))?;
    if parsed.corvid_capture != CAPTURE_VERSION {
        bail!(
            "{}: capture format {} (this corvid reads {CAPTURE_VERSION})",
            path.display(),
            parsed.corvid_capture
        );
    }
    Ok(parsed)
}

/// `NAME=PATH.wasm`.
pub fn parse_override(text: &str) -> Result<(String, PathBuf)> {
    match text.split_once('=') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), PathBuf::from(p))),
        _ => bail!("--plugin {text:?}: expected NAME=PATH.wasm"),
    }
}

/// The chain to replay: each recorded plugin as the config describes it (its component
/// replaced by an override), then the overrides naming no recorded plugin (a plugin tried
/// on recorded traffic). A plugin known only from `--plugin` gets the capabilities `plugin
/// test` grants and an empty config.
pub fn chain(
    recorded: &[String],
    configured: &[Manifest],
    overrides: &[(String, PathBuf)],
) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let names = recorded.iter().chain(
        overrides
            .iter()
            .map(|o| &o.0)
            .filter(|n| !recorded.contains(n)),
    );
    for name in names {
        let over = overrides.iter().find(|o| &o.0 == name).map(|o| &o.1);
        let mut m = match (configured.iter().find(|m| &m.name == name), over) {
            (Some(m), _) => m.clone(),
            (None, Some(path)) => {
                let mut m = Manifest::new(name, path);
                m.capabilities = crate::plugin_test::all_capabilities();
                m
            }
            (None, None) => bail!(
                "the capture's plugin {name:?} is in neither the --config file nor a --plugin"
            ),
        };
        if let Some(path) = over {
            m.path = path.clone();
        }
        // A shadow plugin in the config is replayed as a member of the chain: that is the
        // point of trying it on recorded traffic.
        m.mode = PluginMode::Active;
        // The replay keeps the chain's order as recorded (or as listed).
        m.order = 0;
        out.push(m);
    }
    Ok(out)
}

/// Replays each capture (a directory stands for the captures in it), one after the other
/// in this process; `Err` when a decision differs or a capture cannot be replayed.
pub fn run(
    paths: &[PathBuf],
    config: Option<&Path>,
    overrides: &[String],
    format: Format,
    cache: Option<PathBuf>,
) -> Result<()> {
    let captures = expand(paths)?;
    let configured = match config {
        Some(p) => crate::config::Config::load(Some(p))?.plugins,
        None => Vec::new(),
    };
    let overrides = overrides
        .iter()
        .map(|o| parse_override(o))
        .collect::<Result<Vec<_>>>()?;
    crate::plugin_test::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let [one] = &captures[..] {
        let outcomes = rt.block_on(replay(one, &configured, &overrides, format, cache))?;
        let failed = report::print(&one.display().to_string(), &outcomes, format);
        return differs(failed, outcomes.len(), one);
    }
    let mut differ = 0;
    let mut suites = Vec::new();
    for path in &captures {
        let name = path.display().to_string();
        let got = rt.block_on(replay(path, &configured, &overrides, format, cache.clone()));
        let outcomes = match got {
            Ok(outcomes) => outcomes,
            Err(e) => {
                eprintln!("corvid: {e:#}");
                differ += 1;
                continue;
            }
        };
        if format == Format::Text {
            let failed = report::print(&name, &outcomes, format);
            if let Err(e) = differs(failed, outcomes.len(), path) {
                eprintln!("corvid: {e:#}");
            }
        }
        if outcomes.iter().any(|o| !o.passed()) {
            differ += 1;
        }
        suites.push((name, outcomes));
    }
    report::print_many(&suites, format);
    if differ > 0 {
        bail!(
            "{differ} of {} captures did not replay as recorded",
            captures.len()
        );
    }
    Ok(())
}

/// The capture files: each path, or the `.json` and `.toml` files of a directory in name
/// order (the recorder names them by start time).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|x| x == "json" || x == "toml"))
            .collect();
        if found.is_empty() {
            bail!("{}: no capture files (*.json) in it", p.display());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// One capture through its chain, on a clock, kv store and host answers of its own: its
/// outcomes, compared with the recorded decisions (printed by the caller).
async fn replay(
    capture_path: &Path,
    configured: &[Manifest],
    overrides: &[(String, PathBuf)],
    format: Format,
    cache: Option<PathBuf>,
) -> Result<Vec<report::Outcome>> {
    let capture = load(capture_path)?;
    let manifests = chain(&capture.plugins, configured, overrides)?;
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    if format == Format::Text {
        println!(
            "replaying {} (recorded {}) through {}",
            capture_path.display(),
            capture
                .recorded_at
                .as_deref()
                .unwrap_or("at an unknown time"),
            names.join(", ")
        );
        if !capture.refused_by.is_empty() {
            println!("refused by {}", capture.refused_by.join(", "));
        }
        for note in &capture.partial {
            println!("partial capture: {note}");
        }
        println!("(under a differing decision: - recorded, + replayed)");
    }
    run_chain(manifests, &capture.kv, &capture.script, cache).await
}

fn differs(failed: usize, of: usize, capture: &Path) -> Result<()> {
    if failed > 0 {
        bail!(
            "{failed} of {of} decisions differ from the recording in {}",
            capture.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
