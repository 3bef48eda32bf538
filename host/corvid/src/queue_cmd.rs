//! `corvid queue ...`: through the running server's admin socket, or on the stopped queue.

use crate::admin::{self, Request};
use crate::cli::QueueAction;
use crate::config::Config;
use anyhow::{Context, Result};
use corvid_queue::{printable, SledSpool, SpoolSettings};
use serde_json::Value;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

pub fn run(config: Option<&Path>, action: QueueAction) -> Result<()> {
    let config = Config::load(config)?;
    let req = match action.clone() {
        QueueAction::List { held } => Request::QueueList { held },
        QueueAction::Show { id } => Request::QueueShow { id },
        QueueAction::Delete { id } => Request::QueueDelete { id },
        QueueAction::Flush => Request::QueueFlush,
        QueueAction::Hold { id, reason } => Request::QueueHold { id, reason },
        QueueAction::Release { id } => Request::QueueRelease { id },
        QueueAction::Bounce { id } => Request::QueueBounce { id },
    };
    let (data, running) = request(&config, req)?;
    print(&action, &data, running);
    Ok(())
}

/// Sends `req` to the running server, or, when none answers on the admin socket, runs it on
/// the queue opened here (sled admits one process at a time). The flag says which.
pub fn request(config: &Config, req: Request) -> Result<(Value, bool)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(data) = rt.block_on(admin::request(&config.admin_socket(), &req))? {
        return Ok((data, true));
    }
    let spool = open_spool(config).with_context(|| {
        format!(
            "opening the queue in {} (is a server running elsewhere?)",
            config.queue_dir().display()
        )
    })?;
    let kv = config.kv.open_admin(&spool)?;
    let ctx = Arc::new(admin::Context {
        spool,
        kv,
        plugins: None,
    });
    Ok((rt.block_on(admin::handle_async(ctx, req))?, false))
}

/// Creates data_dir owner-only (0700, and its missing parents) if it does not exist yet:
/// whichever command runs first on a fresh install, the queue, users file, keys and socket
/// are never readable by others. An existing directory is left as the administrator set it.
pub fn ensure_data_dir(config: &Config) -> Result<()> {
    let dir = &config.server.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data_dir {}", dir.display()))
}

/// The spool's settings from the config (`[dsn]`, `[kv]`, the `queue.quarantine_*` keys).
pub fn spool_settings(config: &Config) -> SpoolSettings {
    SpoolSettings {
        hostname: config.server.hostname.clone(),
        dsn: config.dsn,
        quarantine_max_age: config
            .queue
            .quarantine_max_age
            .unwrap_or(corvid_queue::DEFAULT_QUARANTINE_MAX_AGE),
        quarantine_expiry: config.queue.quarantine_expiry,
        kv: config.kv.limits(),
    }
}

/// Opens the queue with the config's settings, creating data_dir first.
pub fn open_spool(config: &Config) -> Result<Arc<SledSpool>> {
    ensure_data_dir(config)?;
    Ok(SledSpool::open_with(
        &config.queue_dir(),
        spool_settings(config),
    )?)
}

fn print(action: &QueueAction, data: &Value, running: bool) {
    match action {
        QueueAction::List { .. } => print_list(data),
        QueueAction::Show { .. } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&data["message"]).unwrap_or_default()
            );
            let headers = data["headers"].as_str().unwrap_or("").replace("\r\n", "\n");
            println!("--- headers ---\n{}", terminal_safe(&headers));
        }
        QueueAction::Delete { id } => println!("deleted {id}"),
        QueueAction::Flush => {
            let n = data["scheduled"].as_u64().unwrap_or(0);
            let when = if running {
                "now"
            } else {
                "at the next server start"
            };
            println!("{n} message(s) scheduled for delivery {when}");
        }
        QueueAction::Hold { id, .. } => println!(
            "held {id}: {}",
            printable(data["quarantined"].as_str().unwrap_or(""))
        ),
        QueueAction::Release { id } => {
            let when = if running {
                "now"
            } else {
                "at the next server start"
            };
            println!("released {id}: delivered {when}");
        }
        QueueAction::Bounce { id } => match data["dsn"].as_str() {
            Some(dsn) => println!("bounced {id}: failure report {dsn} queued for the sender"),
            None => println!("bounced {id}: removed (no report: null sender or not asked for)"),
        },
    }
}

/// Peer text for a terminal: line breaks and tabs kept, every other control character (an
/// escape sequence could rewrite the screen) shown escaped.
fn terminal_safe(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.chars()
                .map(|c| match c {
                    '\t' => c.to_string(),
                    c if c.is_control() => c.escape_default().to_string(),
                    c => c.to_string(),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_list(data: &Value) {
    let empty = Vec::new();
    let msgs = data.as_array().unwrap_or(&empty);
    if msgs.is_empty() {
        println!("queue is empty");
        return;
    }
    println!("{:<18} {:>10} {:<30} recipients", "id", "size", "sender");
    for m in msgs {
        let sender = m["envelope"]["sender"]
            .as_object()
            .map(|s| {
                format!(
                    "{}@{}",
                    s["local"].as_str().unwrap_or(""),
                    s["domain"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| "<>".into());
        let rcpts: Vec<String> = m["recipients"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|r| {
                let a = &r["recipient"]["address"];
                let status = r["status"].as_str().unwrap_or("?");
                format!(
                    "{}@{} ({status}, {} attempts)",
                    a["local"].as_str().unwrap_or(""),
                    a["domain"].as_str().unwrap_or(""),
                    r["attempts"]
                )
            })
            .collect();
        let held = match m["quarantined"].as_str() {
            Some(reason) => format!("  [held: {}]", printable(reason)),
            None => String::new(),
        };
        println!(
            "{:<18} {:>10} {:<30} {}{held}",
            m["id"].as_str().unwrap_or("?"),
            m["size"],
            printable(&sender),
            printable(&rcpts.join(", "))
        );
    }
    println!("{} message(s)", msgs.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_queue::dsn::{DsnPolicy, NotifySuccessFrom};
    use corvid_queue::{KvLimits, QuarantineExpiry};
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn the_reference_config_documents_the_defaults() {
        let c = Config::parse(include_str!("../../../config/corvid.toml")).unwrap();
        let s = spool_settings(&c);
        assert_eq!(s.dsn, DsnPolicy::default());
        assert_eq!(s.kv, KvLimits::default());
        assert_eq!(
            s.quarantine_max_age,
            corvid_queue::DEFAULT_QUARANTINE_MAX_AGE
        );
        assert_eq!(s.quarantine_expiry, QuarantineExpiry::Bounce);
        // And an empty config gives the same.
        let s = spool_settings(&Config::parse(crate::config::DEV_CONFIG).unwrap());
        assert_eq!(s.dsn, DsnPolicy::default());
        assert_eq!(
            s.quarantine_max_age,
            corvid_queue::DEFAULT_QUARANTINE_MAX_AGE
        );
    }

    #[test]
    fn spool_settings_follow_the_config() {
        let text = crate::config::DEV_CONFIG.replace(
            "[queue]\n",
            "[dsn]\nnotify_success_from = \"nobody\"\nmax_return_size = 10\n\
             [kv]\nmax_keys_per_plugin = 5\nmax_bytes_per_plugin = 600\n\
             [queue]\nquarantine_max_age = \"2h\"\nquarantine_expiry = \"discard\"\n",
        );
        let c = Config::parse(&text).unwrap();
        let s = spool_settings(&c);
        assert_eq!(s.dsn.notify_success_from, NotifySuccessFrom::Nobody);
        assert_eq!(s.dsn.max_return_size, 10);
        assert_eq!(s.kv.max_keys_per_plugin, 5);
        assert_eq!(s.kv.max_bytes_per_plugin, 600);
        assert_eq!(s.quarantine_max_age, Duration::from_secs(7200));
        assert_eq!(s.quarantine_expiry, QuarantineExpiry::Discard);
        let bad = text.replace("\"nobody\"", "\"friends\"");
        let err = format!("{:#}", Config::parse(&bad).unwrap_err());
        assert!(err.contains("dsn.notify_success_from"), "{err}");
    }

    #[test]
    fn headers_are_shown_without_control_characters() {
        assert_eq!(
            terminal_safe("Subject: a\x1b[2J\n\tfolded\rx"),
            "Subject: a\\u{1b}[2J\n\tfolded\\rx"
        );
    }

    #[test]
    fn data_dir_and_its_parents_are_created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("new/data");
        let text = crate::config::DEV_CONFIG.replace(
            "data_dir = \"data\"",
            &format!("data_dir = \"{}\"", data.display()),
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.server.data_dir, data);
        let spool = open_spool(&c).unwrap();
        drop(spool);
        for dir in [&data, &tmp.path().join("new")] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }
}
