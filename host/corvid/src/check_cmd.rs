//! `corvid check-config FILE`: everything `serve` would refuse at start, without starting. The
//! file is parsed and checked (`Config::load`), each TLS certificate and key is loaded, and
//! each `[[plugin]]` is compiled (through the plugin cache, as `serve` does) and has its
//! `configure` run on its `config` table. The first problem is reported with its key path
//! (`tls.certificates[0].key: ...`, `plugin[2].config: ...`) and the command exits 1.
//!
//! Not checked here: that the listeners' ports are free, and the users file (read at start,
//! and again whenever it changes).

use crate::config::Config;
use anyhow::{bail, Context, Result};
use corvid_plugin_host::{PluginEngine, PluginHost, Services};
use corvid_server::tls::{CertPair, TlsError, TlsHandle};
use std::path::Path;

pub fn run(file: &Path) -> Result<()> {
    let c = Config::load(Some(file))?;
    check_tls(&c)?;
    let plugins = check_plugins(&c)?;
    let domains: Vec<&str> = c.local.domains.iter().map(|d| d.name.as_str()).collect();
    println!(
        "{}: ok ({} listener(s), {} certificate(s), {} plugin(s), local domains: {})",
        file.display(),
        c.listeners.len(),
        c.tls.certificates.len(),
        plugins,
        domains.join(", ")
    );
    Ok(())
}

/// Loads each configured certificate and key pair on its own, so that the error names the one.
/// No certificates is fine: `serve` makes a self-signed one (development).
fn check_tls(c: &Config) -> Result<()> {
    for (i, entry) in c.tls.certificates.iter().enumerate() {
        let pair = CertPair {
            cert: entry.cert.clone(),
            key: entry.key.clone(),
        };
        if let Err(e) = TlsHandle::load(vec![pair]) {
            let key = match &e {
                TlsError::File { path, .. } if *path == entry.cert => ".cert",
                TlsError::File { path, .. } if *path == entry.key => ".key",
                _ => "",
            };
            bail!("key `tls.certificates[{i}]{key}`: {e}");
        }
    }
    Ok(())
}

/// Loads each plugin alone, in config order, as `serve` would: compile or cache, link,
/// `describe`, `configure`. Returns how many were checked.
fn check_plugins(c: &Config) -> Result<usize> {
    if c.plugins.is_empty() {
        return Ok(0);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let options = c.plugin_engine.options(c.limits.max_connections);
        let engine = PluginEngine::new(options).context("starting the WebAssembly engine")?;
        let cache = c
            .server
            .plugin_cache
            .clone()
            .unwrap_or_else(|| c.server.data_dir.join("plugin-cache"));
        // `configure` gets no kv or DNS answers here: a plugin that needs them at configure
        // time is checked only by `serve`.
        let host = PluginHost::new(&engine, Services::in_memory(), Some(cache));
        for (i, m) in c.plugins.iter().enumerate() {
            if let Err(e) = std::fs::metadata(&m.path) {
                bail!(
                    "key `plugin[{i}].path`: cannot read {}: {e}",
                    m.path.display()
                );
            }
            let generation = match host.load(vec![m.clone()]).await {
                Ok(g) => g,
                Err(e) => bail!("key `plugin[{i}]` ({}): {e}", m.name),
            };
            if let Some((_, error)) = generation.errors().into_iter().next() {
                bail!("key `plugin[{i}]{}` ({}): {error}", key_of(&error), m.name);
            }
        }
        Ok(c.plugins.len())
    })
}

/// Which key of a `[[plugin]]` table a load error is about, from the plugin host's message
/// (`corvid_plugin_host::Error`'s display): `configure` judges `config`, the rest is the
/// component file.
fn key_of(error: &str) -> &'static str {
    if error.contains("configure failed") {
        ".config"
    } else if error.contains("invalid manifest") {
        ""
    } else {
        ".path"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEV_CONFIG;

    #[test]
    fn a_missing_certificate_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = DEV_CONFIG.replace(
            "[tls]\n",
            &format!(
                "[tls]\ncertificates = [{{ cert = \"{0}/c.pem\", key = \"{0}/k.pem\" }}]\n",
                dir.path().display()
            ),
        );
        let c = Config::parse(&text).unwrap();
        let err = check_tls(&c).unwrap_err().to_string();
        assert!(err.starts_with("key `tls.certificates[0].cert`"), "{err}");
        assert!(check_tls(&Config::parse(DEV_CONFIG).unwrap()).is_ok());
    }

    #[test]
    fn load_errors_map_to_keys() {
        assert_eq!(key_of("plugin x: configure failed: no"), ".config");
        assert_eq!(key_of("plugin x: compile failed: bad"), ".path");
        assert_eq!(key_of("plugin x: invalid manifest: dup"), "");
    }
}
