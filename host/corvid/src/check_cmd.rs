//! `corvid check-config FILE`: everything `serve` would refuse at start, without starting. The
//! file is parsed and checked (`Config::load`), each TLS certificate and key is loaded, and
//! each `[[plugin]]` is compiled (through the plugin cache, as `serve` does) and has its
//! `configure` run on its `config` table. The first problem is reported with its key path
//! (`tls.certificates[0].key: ...`, `plugin[2].config: ...`) and the command exits 1. It also
//! reads each `[[dkim.key]]` file (one with `generate = true` may be missing: `serve` makes
//! it) and looks up `server.user` and `server.group`.
//!
//! Not checked here: that the listeners' ports are free, that Redis (`kv.url`) or Dovecot's
//! socket (`auth.dovecot_socket`) answer (`serve` starts without them and retries), and the
//! users file (read at start, and again whenever it changes).

use crate::config::Config;
use anyhow::{bail, Context, Result};
use corvid_plugin_host::{PluginEngine, PluginHost, Services};
use corvid_server::tls::{CertPair, TlsError, TlsHandle};
use std::path::Path;

pub fn run(file: &Path) -> Result<()> {
    let c = Config::load(Some(file))?;
    check_tls(&c)?;
    check_dkim_keys(&c)?;
    check_user(&c)?;
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

/// Loads every `[[dkim.key]]` through the signer `serve` builds at start (key file, its
/// algorithm against the config's, start/stop dates); a key to be generated may be absent.
fn check_dkim_keys(c: &Config) -> Result<()> {
    let mut dkim = crate::mail_auth::resolved(c);
    dkim.key.retain(|k| !k.generate || k.key_file.exists());
    corvid_auth::Signer::new(&dkim, |p| std::fs::read(p)).context("key `dkim.key`")?;
    Ok(())
}

/// `server.user` and `server.group` must name accounts of this system (`serve` switches to
/// them after binding its ports).
fn check_user(c: &Config) -> Result<()> {
    if let Some(user) = &c.server.user {
        crate::privdrop::resolve(user, c.server.group.as_deref())?;
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

    /// What `serve` refuses at start, `check-config` refuses too (each used to pass it).
    #[test]
    fn start_time_refusals_are_found_without_starting() {
        let parse_err = |text: &str| Config::parse(text).unwrap_err().to_string();
        let redis = DEV_CONFIG.replace("[tls]\n", "[kv]\nbackend = \"redis\"\n\n[tls]\n");
        assert!(parse_err(&redis).contains("key `kv.url`"));
        let slow = redis.replace(
            "backend = \"redis\"",
            "backend = \"redis\"\nurl = \"redis://127.0.0.1/\"\ntimeout = \"5s\"",
        );
        assert!(parse_err(&slow).contains("key `kv.timeout`"));
        let dovecot = DEV_CONFIG.replace("[auth]\n", "[auth]\nbackend = \"dovecot\"\n");
        assert!(parse_err(&dovecot).contains("key `auth.dovecot_socket`"));
        let twice = DEV_CONFIG.replace("name = \"rate-limit\"", "name = \"dnsbl\"");
        assert!(parse_err(&twice).contains("`dnsbl` is already the name"));

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no.pem");
        let mut c = Config::parse(DEV_CONFIG).unwrap();
        for k in &mut c.dkim.key {
            k.generate = false;
            k.key_file = missing.clone();
        }
        assert!(!c.dkim.key.is_empty(), "dev.toml signs for corvid.test");
        let err = format!("{:#}", check_dkim_keys(&c).unwrap_err());
        assert!(
            err.starts_with("key `dkim.key`") && err.contains("no.pem"),
            "{err}"
        );
        std::fs::write(&missing, "not a key").unwrap();
        assert!(check_dkim_keys(&c).is_err());
        // A key of the other algorithm than the config says, as `serve` refuses it.
        let ed = corvid_auth::keys::DkimPrivateKey::generate(corvid_auth::KeyAlgorithm::Ed25519)
            .unwrap();
        std::fs::write(&missing, ed.to_pkcs8_pem()).unwrap();
        for k in &mut c.dkim.key {
            k.algorithm = corvid_auth::KeyAlgorithm::Rsa;
        }
        let err = format!("{:#}", check_dkim_keys(&c).unwrap_err());
        assert!(err.contains("the config says"), "{err}");

        c.server.user = Some("no-such-user-corvid-test".into());
        let err = format!("{:#}", check_user(&c).unwrap_err());
        assert!(err.contains("key `server.user`"), "{err}");
    }

    #[test]
    fn load_errors_map_to_keys() {
        assert_eq!(key_of("plugin x: configure failed: no"), ".config");
        assert_eq!(key_of("plugin x: compile failed: bad"), ".path");
        assert_eq!(key_of("plugin x: invalid manifest: dup"), "");
    }
}
