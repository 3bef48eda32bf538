//! `corvid plugins list [--stats]|reload|diff NAME`: through the running server's admin
//! socket.

use crate::admin::{self, Request};
use crate::cli::PluginsAction;
use crate::config::Config;
use anyhow::{bail, Result};
use corvid_plugin_host::{verdict_text, PluginHost, PluginMode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

pub fn run(config: Option<&Path>, action: PluginsAction) -> Result<()> {
    let config = Config::load(config)?;
    let req = match action {
        PluginsAction::List { stats: true } => Request::PluginsStats,
        PluginsAction::List { stats: false } => Request::PluginsList,
        PluginsAction::Reload => Request::PluginsReload,
        PluginsAction::Diff { ref name, .. } => Request::PluginsDiff { name: name.clone() },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let Some(data) = rt.block_on(admin::request(&config.admin_socket(), &req))? else {
        bail!(
            "no server is running with {}",
            config.admin_socket().display()
        );
    };
    match action {
        PluginsAction::List { stats: true } => print_stats(&data),
        PluginsAction::Diff { limit, .. } => print_diff(&data, limit),
        PluginsAction::List { stats: false } => {
            let rows = data.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no plugins configured");
            }
            println!(
                "{:<20} {:<10} {:<6} {:<8} {:<30} {:<12} state",
                "name", "version", "order", "gen", "stages", "breaker"
            );
            for p in rows {
                let stages: Vec<&str> = p["stages"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                    .unwrap_or_default();
                let error = p["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                // Shadow plugins are marked (`corvid plugins diff NAME` for their counts).
                let shadow = match p["mode"].as_str() {
                    Some("shadow") => ", shadow",
                    _ => "",
                };
                println!(
                    "{:<20} {:<10} {:<6} {:<8} {:<30} {:<12} {}{shadow}{error}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or(""),
                    p["order"].to_string(),
                    p["generation"].to_string(),
                    stages.join(","),
                    p["breaker"].as_str().unwrap_or("?"),
                    p["state"].as_str().unwrap_or("?"),
                );
            }
        }
        PluginsAction::Reload => {
            let errors = data["errors"].as_array().cloned().unwrap_or_default();
            println!("generation {} loaded", data["generation"]);
            for e in &errors {
                println!(
                    "error: {}: {}",
                    e[0].as_str().unwrap_or("?"),
                    e[1].as_str().unwrap_or("?")
                );
            }
            if !errors.is_empty() {
                bail!(
                    "{} plugin(s) failed to load and keep their previous version",
                    errors.len()
                );
            }
        }
    }
    Ok(())
}

/// One line per plugin and stage. Failures are the hooks that did not give a decision (traps,
/// timeouts, memory, CPU budget, invalid answers); their policy decided instead. A shadow
/// plugin's line ends with its comparisons with the chain (`corvid plugins diff NAME`).
fn print_stats(data: &Value) {
    let rows = data.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no plugin has been called yet");
        return;
    }
    println!(
        "{:<20} {:<10} {:>8} {:>8} {:>7} {:>7} {:>8} {:>6} {:>7} {:>5} {:>5} {:>5} {:>7} {:>7} {:>9} {:>9}",
        "plugin", "stage", "calls", "continue", "accept", "reject", "tempfail", "other",
        "failed", "trap", "time", "oom", "trips", "mean_us", "max_us", "mem_peak"
    );
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0);
    for r in &rows {
        let other = n(r, "disconnect") + n(r, "discard") + n(r, "quarantine");
        let failed = n(r, "trap")
            + n(r, "timeout")
            + n(r, "out_of_memory")
            + n(r, "invalid")
            + n(r, "cpu_budget");
        let (agree, differ) = (n(r, "shadow_agree"), n(r, "shadow_differ"));
        let skipped = n(r, "shadow_skipped");
        let shadow = if agree + differ + skipped > 0 {
            format!("  shadow: {agree} agree, {differ} differ, {skipped} skipped")
        } else {
            String::new()
        };
        println!(
            "{:<20} {:<10} {:>8} {:>8} {:>7} {:>7} {:>8} {:>6} {:>7} {:>5} {:>5} {:>5} {:>7} {:>7} {:>9} {:>9}{shadow}",
            r["plugin"].as_str().unwrap_or("?"),
            r["stage"].as_str().unwrap_or("?"),
            n(r, "calls"),
            n(r, "continue"),
            n(r, "accept"),
            n(r, "reject"),
            n(r, "tempfail"),
            other,
            failed,
            n(r, "trap"),
            n(r, "timeout"),
            n(r, "out_of_memory"),
            n(r, "breaker_trips"),
            n(r, "mean_us"),
            n(r, "max_us"),
            n(r, "memory_peak_bytes"),
        );
    }
}

/// The answer to `plugins-diff` (server side): the shadow plugin's counters per stage and
/// its kept differences, oldest first.
pub fn diff(host: &PluginHost, name: &str) -> Result<Value> {
    let Some(status) = host.plugins().into_iter().find(|p| p.name == name) else {
        bail!("no plugin {name} in the chain");
    };
    if status.mode != PluginMode::Shadow {
        bail!("plugin {name} is not in shadow mode (mode = \"shadow\" in its [[plugin]] table)");
    }
    let stages: Vec<Value> = host
        .stats()
        .into_iter()
        .filter(|s| s.plugin == name)
        .map(|s| {
            json!({ "stage": s.stage.as_str(), "agree": s.shadow_agree,
                    "differ": s.shadow_differ, "skipped": s.shadow_skipped })
        })
        .collect();
    let diffs: Vec<Value> = host
        .shadow_diffs(name)
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            let at = d.at.duration_since(UNIX_EPOCH).map_or(0, |t| t.as_secs());
            json!({ "at": at, "stage": d.stage.as_str(), "session": d.session,
                    "chain": verdict_text(d.chain_verdict, d.chain_code),
                    "shadow": verdict_text(d.shadow_verdict, d.shadow_code),
                    "reason": d.reason })
        })
        .collect();
    Ok(json!({ "plugin": name, "stages": stages, "diffs": diffs }))
}

/// Counters per stage, then the `limit` most recent differences, oldest first.
fn print_diff(data: &Value, limit: usize) {
    let empty = Vec::new();
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0);
    println!("shadow plugin {}", data["plugin"].as_str().unwrap_or("?"));
    println!(
        "{:<10} {:>8} {:>8} {:>8}",
        "stage", "agree", "differ", "skipped"
    );
    for r in data["stages"].as_array().unwrap_or(&empty) {
        println!(
            "{:<10} {:>8} {:>8} {:>8}",
            r["stage"].as_str().unwrap_or("?"),
            n(r, "agree"),
            n(r, "differ"),
            n(r, "skipped")
        );
    }
    let diffs = data["diffs"].as_array().unwrap_or(&empty);
    if diffs.is_empty() {
        println!("no differences kept");
        return;
    }
    let shown = &diffs[diffs.len().saturating_sub(limit)..];
    println!(
        "{} of the last {} differences (oldest first):",
        shown.len(),
        diffs.len()
    );
    println!(
        "{:<20} {:<10} {:>8}  {:<16} {:<16} reason",
        "time", "stage", "session", "chain", "shadow"
    );
    for d in shown {
        let at = UNIX_EPOCH + Duration::from_secs(n(d, "at"));
        println!(
            "{:<20} {:<10} {:>8}  {:<16} {:<16} {}",
            humantime_serde::re::humantime::format_rfc3339_seconds(at).to_string(),
            d["stage"].as_str().unwrap_or("?"),
            n(d, "session"),
            d["chain"].as_str().unwrap_or("?"),
            d["shadow"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or(""),
        );
    }
}
