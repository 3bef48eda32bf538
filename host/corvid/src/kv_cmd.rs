//! `corvid kv ...`: the plugins' key-value store, by plugin (namespace), on the configured
//! backend (`[kv]`: the node's sled or the shared Redis). Through the running server's admin
//! socket, or directly when no server runs (like `corvid queue`). Keys and values are
//! bytes a plugin chose: they are printed with non-printable octets escaped (`\x1b`, `\n`).

use crate::admin::Request;
use crate::config::Config;
use crate::kv_backend::AdminKv;
use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::Path;

#[derive(Subcommand, Clone)]
pub enum KvAction {
    /// The live keys of one plugin, with their values and expiry.
    List {
        /// The plugin's name (its namespace in the store).
        #[arg(long)]
        plugin: String,
        /// Only keys starting with this.
        prefix: Option<String>,
        /// Show at most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One key's value.
    Get {
        #[arg(long)]
        plugin: String,
        key: String,
    },
    /// Remove one key.
    Delete {
        #[arg(long)]
        plugin: String,
        key: String,
    },
}

pub fn run(config: Option<&Path>, action: KvAction) -> Result<()> {
    let req = match action.clone() {
        KvAction::List {
            plugin,
            prefix,
            limit,
        } => Request::KvList {
            plugin,
            prefix: prefix.unwrap_or_default(),
            limit,
        },
        KvAction::Get { plugin, key } => Request::KvGet { plugin, key },
        KvAction::Delete { plugin, key } => Request::KvDelete { plugin, key },
    };
    let config = Config::load(config)?;
    let (data, _) = crate::queue_cmd::request(&config, req)?;
    match action {
        KvAction::List { plugin, .. } => {
            let empty = Vec::new();
            let entries = data.as_array().unwrap_or(&empty);
            for e in entries {
                let expires = e["expires"].as_str().unwrap_or("never");
                println!(
                    "{} = {}  (expires {expires})",
                    e["key"].as_str().unwrap_or(""),
                    e["value"].as_str().unwrap_or("")
                );
            }
            println!("{} key(s) shown for plugin {plugin}", entries.len());
        }
        KvAction::Get { .. } => println!("{}", data["value"].as_str().unwrap_or("")),
        KvAction::Delete { key, .. } => println!("deleted {key}"),
    }
    Ok(())
}

/// Runs a kv request on the store (server side, or offline). It blocks (disk or Redis).
pub fn handle(kv: &AdminKv, req: Request) -> Result<Value> {
    let entry = |key: &[u8], value: &[u8], expires: Option<u64>| json!({ "key": escaped(key), "value": escaped(value), "expires": expires.map(expiry_text) });
    let store = kv.store();
    Ok(match req {
        Request::KvList {
            plugin,
            prefix,
            limit,
        } => {
            let rows: Vec<Value> = match kv {
                AdminKv::Sled(kv) => kv
                    .list(&plugin, prefix.as_bytes(), limit)?
                    .iter()
                    .map(|e| entry(&e.key, &e.value, e.expires_ms))
                    .collect(),
                AdminKv::Redis(kv) => kv
                    .list(&plugin, prefix.as_bytes(), limit)?
                    .iter()
                    .map(|e| entry(&e.key, &e.value, e.expires_ms))
                    .collect(),
            };
            json!(rows)
        }
        Request::KvGet { plugin, key } => match store.get(&plugin, key.as_bytes())? {
            Some(v) => json!({ "value": escaped(&v) }),
            None => bail!("no key {} for plugin {plugin}", escaped(key.as_bytes())),
        },
        Request::KvDelete { plugin, key } => {
            if !store.delete(&plugin, key.as_bytes())? {
                bail!("no key {} for plugin {plugin}", escaped(key.as_bytes()));
            }
            json!({ "deleted": escaped(key.as_bytes()) })
        }
        _ => bail!("not a kv request"),
    })
}

/// Printable ASCII as is; everything else (controls, escape sequences, non-ASCII octets) as
/// `\n`, `\x1b`, `\xc3`: safe for a terminal and unambiguous.
pub fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn expiry_text(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    chrono_like(secs)
}

/// RFC 3339 in UTC without a date library: days since the epoch to a civil date (Howard
/// Hinnant's algorithm).
fn chrono_like(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_printed_safely() {
        assert_eq!(escaped(b"192.0.2.1|a@b"), "192.0.2.1|a@b");
        assert_eq!(escaped(b"\x1b[2J\r\n\xc3\xa9"), "\\x1b[2J\\r\\n\\xc3\\xa9");
    }

    #[test]
    fn list_get_delete_on_a_real_store() {
        let dir = tempfile::tempdir().unwrap();
        let spool = corvid_queue::SledSpool::open(dir.path()).unwrap();
        let kv = spool.kv();
        kv.set("greylist", b"1.2.3.4|\x1b[2J", b"first\r\n", None)
            .unwrap();
        kv.set(
            "greylist",
            b"k2",
            b"v2",
            Some(std::time::Duration::from_secs(60)),
        )
        .unwrap();
        kv.set("other", b"k2", b"not listed", None).unwrap();
        let kv = AdminKv::Sled(kv);
        let req = |r| handle(&kv, r).unwrap();
        let list = req(Request::KvList {
            plugin: "greylist".into(),
            prefix: String::new(),
            limit: 10,
        });
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["key"], "1.2.3.4|\\x1b[2J");
        assert_eq!(list[0]["value"], "first\\r\\n");
        assert!(list[0]["expires"].is_null() && list[1]["expires"].is_string());
        let got = req(Request::KvGet {
            plugin: "greylist".into(),
            key: "k2".into(),
        });
        assert_eq!(got["value"], "v2");
        req(Request::KvDelete {
            plugin: "greylist".into(),
            key: "k2".into(),
        });
        assert!(handle(
            &kv,
            Request::KvGet {
                plugin: "greylist".into(),
                key: "k2".into()
            }
        )
        .is_err());
        assert_eq!(
            kv.store().get("other", b"k2").unwrap().as_deref(),
            Some(&b"not listed"[..])
        );
    }

    #[test]
    fn expiry_dates() {
        assert_eq!(expiry_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(expiry_text(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }
}
