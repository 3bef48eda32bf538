//! The configuration file: TOML read into typed settings, with errors that name the key.

use anyhow::{bail, Context, Result};
use corvid_queue::RetrySchedule;
use corvid_server::{AuthSettings, Limits, ListenerConfig, ServerConfig};
use corvid_types::{Address, Directory, DomainEntry};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The development default, compiled in: `corvid serve` with no `--config` runs on it.
mod rules;

pub const DEV_CONFIG: &str = include_str!("../../../config/dev.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub auth: AuthSettings,
    pub local: LocalSection,
    #[serde(default)]
    pub queue: QueueSection,
    /// Delivery status notifications: who gets success reports, how much goes back.
    #[serde(default)]
    pub dsn: corvid_queue::dsn::DsnPolicy,
    /// The plugins' key-value store: backend (sled or Redis) and per-plugin quotas.
    #[serde(default)]
    pub kv: crate::kv_backend::KvSection,
    /// Outbound delivery: routes, DNS, SMTP/LMTP client settings (all optional).
    #[serde(default)]
    pub delivery: corvid_delivery::DeliveryConfig,
    #[serde(default)]
    pub log: LogSection,
    /// The plugin chain: one `[[plugin]]` table per plugin (see corvid_plugin_host::Manifest).
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<corvid_plugin_host::Manifest>,
    /// Limits of the plugin engine (instances, memory); defaults sized from `limits`.
    #[serde(default)]
    pub plugin_engine: corvid_plugin_host::EngineConfig,
    /// Inbound SPF, DKIM, DMARC and ARC checks (corvid-auth); see config/corvid.toml.
    #[serde(default)]
    pub auth_checks: corvid_auth::AuthChecksConfig,
    /// Outbound DKIM signing keys (`[[dkim.key]]`) and ARC sealing.
    #[serde(default)]
    pub dkim: corvid_auth::DkimConfig,
    /// The Prometheus endpoint (`/metrics`, `/healthz`); off unless `listen` is set.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Sampled sessions written as capture files for `corvid plugin replay`; off when absent.
    pub record: Option<crate::record::RecordSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the HTTP endpoint serving `GET /metrics` (OpenMetrics text) and
    /// `GET /healthz`; none (the default) serves neither. It is unauthenticated: keep it on
    /// loopback or a management network.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub hostname: String,
    /// Queue, mail and the admin socket live here; relative paths are relative to the
    /// directory the server is started from.
    pub data_dir: PathBuf,
    /// Client networks that may relay without authenticating (CIDR); none by default.
    #[serde(default)]
    pub relay_networks: Vec<ipnet::IpNet>,
    /// Clients that may start queue runs with ETRN (RFC 1985); none by default.
    #[serde(default)]
    pub etrn_networks: Vec<ipnet::IpNet>,
    /// Compiled plugin code, cached by content hash; default `<data_dir>/plugin-cache`.
    pub plugin_cache: Option<PathBuf>,
    /// Started as root, run as this user once the listeners are bound (see privdrop.rs).
    #[serde(default)]
    pub user: Option<String>,
    /// ... and this group; default the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// Keep running as root when started as root without `user` (refused otherwise).
    #[serde(default)]
    pub allow_root: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chains and keys; the first is the default, the others are chosen by
    /// SNI. Empty: a self-signed certificate is made in `<data_dir>/tls` at first start.
    pub certificates: Vec<CertificateEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// Where Maildirs are written; default `<data_dir>/mail`.
    pub maildir_root: Option<PathBuf>,
    pub postmaster: String,
    #[serde(default)]
    pub recipient_delimiter: Option<char>,
    #[serde(rename = "domain")]
    pub domains: Vec<DomainSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSection {
    pub name: String,
    #[serde(default)]
    pub mailboxes: Vec<String>,
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    pub catch_all: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSection {
    pub retry: RetrySchedule,
    /// Deliveries in progress at once.
    pub delivery_concurrency: Option<usize>,
    /// How long held (quarantined) mail is kept; default 30 days.
    #[serde(with = "humantime_serde::option")]
    pub quarantine_max_age: Option<std::time::Duration>,
    /// What becomes of held mail then: `bounce` (default) or `discard`.
    pub quarantine_expiry: corvid_queue::QuarantineExpiry,
    /// Flow control: messages still to deliver beyond which MAIL replies wait `flow_delay`.
    pub flow_delay_backlog: Option<u64>,
    /// How long each MAIL reply waits then (Postfix's `in_flow_delay`); default 1s.
    #[serde(with = "humantime_serde::option")]
    pub flow_delay: Option<std::time::Duration>,
    /// Messages still to deliver beyond which MAIL gets 451 4.3.1.
    pub flow_hard_backlog: Option<u64>,
    /// sled's page cache in MiB; default 16 (corvid_queue::DEFAULT_CACHE_BYTES).
    pub cache_mb: Option<u64>,
}

impl QueueSection {
    /// `cache_mb` in bytes, the default where unset.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb
            .map_or(corvid_queue::DEFAULT_CACHE_BYTES, |mb| {
                mb.saturating_mul(1 << 20)
            })
    }

    /// The `flow_*` keys, defaults where unset.
    pub fn flow(&self) -> corvid_server::FlowControl {
        let d = corvid_server::FlowControl::default();
        corvid_server::FlowControl {
            delay_backlog: self.flow_delay_backlog.unwrap_or(d.delay_backlog),
            delay: self.flow_delay.unwrap_or(d.delay),
            hard_backlog: self.flow_hard_backlog.unwrap_or(d.hard_backlog),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `corvid_server=debug,info`, ...
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Config {
    /// Reads and checks a config file; `None` means the built-in development default.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (DEV_CONFIG.to_string(), "built-in dev config".to_string()),
        };
        Self::parse(&text).with_context(|| format!("in {origin}"))
    }

    pub fn parse(text: &str) -> Result<Config> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("key `{path}`: {}", e.into_inner().message().trim())
        })?;
        config.check()?;
        Ok(config)
    }

    pub fn directory(&self) -> Result<Directory> {
        let pm = &self.local.postmaster;
        let postmaster = match pm.rsplit_once('@') {
            Some((l, d)) if !l.is_empty() && !d.is_empty() => Address::new(l, d),
            _ => bail!(
                "key `local.postmaster`: `{pm}` is not an address like postmaster@example.org"
            ),
        };
        let mut dir = Directory::new(Some(postmaster), self.local.recipient_delimiter);
        for d in &self.local.domains {
            let entry = DomainEntry {
                mailboxes: d.mailboxes.iter().map(|m| m.to_lowercase()).collect(),
                aliases: d
                    .aliases
                    .iter()
                    .map(|(k, v)| (k.to_lowercase(), v.clone()))
                    .collect(),
                catch_all: d.catch_all.clone(),
            };
            dir.add_domain(&d.name, entry);
        }
        Ok(dir)
    }

    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            hostname: self.server.hostname.clone(),
            limits: self.limits.clone(),
            listeners: self.listeners.clone(),
            relay_networks: self.server.relay_networks.clone(),
            etrn_networks: self.server.etrn_networks.clone(),
            auth: self.auth.clone(),
            flow: self.queue.flow(),
        }
    }

    pub fn users_file(&self) -> PathBuf {
        self.auth
            .users_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("users"))
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.server.data_dir.join("tls")
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.server.data_dir.join("queue")
    }

    pub fn maildir_root(&self) -> PathBuf {
        self.local
            .maildir_root
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("mail"))
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.server.data_dir.join("admin.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_config_is_valid() {
        let c = Config::parse(DEV_CONFIG).unwrap();
        assert_eq!(c.listeners[0].address.port(), 2525);
    }

    #[test]
    fn reference_config_is_valid() {
        Config::parse(include_str!("../../../config/corvid.toml")).unwrap();
    }

    #[test]
    fn flow_control_keys_reach_the_server_with_documented_defaults() {
        let reference = Config::parse(include_str!("../../../config/corvid.toml")).unwrap();
        let dev = Config::parse(DEV_CONFIG).unwrap();
        // The reference config spells out the defaults; an unset key gets them too.
        assert_eq!(reference.server_config().flow, dev.server_config().flow);
        let d = dev.server_config().flow;
        assert_eq!((d.delay_backlog, d.hard_backlog), (10_000, 50_000));
        assert_eq!(d.delay, std::time::Duration::from_secs(1));
        let set = DEV_CONFIG.replace(
            "[queue]",
            "[queue]\nflow_delay_backlog = 5\nflow_delay = \"250ms\"\nflow_hard_backlog = 9",
        );
        let f = Config::parse(&set).unwrap().server_config().flow;
        assert_eq!((f.delay_backlog, f.hard_backlog), (5, 9));
        assert_eq!(f.delay, std::time::Duration::from_millis(250));
    }

    #[test]
    fn cache_mb_reaches_the_queue_with_the_documented_default() {
        let reference = Config::parse(include_str!("../../../config/corvid.toml")).unwrap();
        let dev = Config::parse(DEV_CONFIG).unwrap();
        assert_eq!(reference.queue.cache_bytes(), dev.queue.cache_bytes());
        assert_eq!(dev.queue.cache_bytes(), 16 << 20);
        let set = DEV_CONFIG.replace("[queue]", "[queue]\ncache_mb = 4");
        assert_eq!(Config::parse(&set).unwrap().queue.cache_bytes(), 4 << 20);
        let zero = DEV_CONFIG.replace("[queue]", "[queue]\ncache_mb = 0");
        let err = format!("{:#}", Config::parse(&zero).unwrap_err());
        assert!(err.contains("queue.cache_mb"), "{err}");
    }

    #[test]
    fn a_proxy_listener_needs_proxy_from() {
        let bad = DEV_CONFIG.replace("mode = \"smtp\"", "mode = \"smtp\"\nproxy_protocol = true");
        let err = format!("{:#}", Config::parse(&bad).unwrap_err());
        assert!(err.contains("key `listener[0].proxy_from`"), "{err}");
        let good = bad.replace(
            "proxy_protocol = true",
            "proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\"]",
        );
        assert!(Config::parse(&good).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let bad = DEV_CONFIG.replace("max_recipients = 100", "max_recipients = \"many\"");
        let err = format!("{:#}", Config::parse(&bad).unwrap_err());
        assert!(err.contains("limits.max_recipients"), "{err}");
        let bad = DEV_CONFIG.replace("[limits]", "[limits]\nbogus = 1");
        let err = format!("{:#}", Config::parse(&bad).unwrap_err());
        assert!(err.contains("bogus"), "{err}");
    }
}
