//! Certificates for the listeners: the configured PEM files, or a self-signed certificate made
//! at first start for development (never committed, kept in data_dir, key owner-only).

use crate::config::Config;
use anyhow::{Context, Result};
use corvid_server::tls::{CertPair, TlsHandle};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use tracing::{info, warn};

pub fn load(config: &Config) -> Result<Arc<TlsHandle>> {
    let pairs: Vec<CertPair> = if config.tls.certificates.is_empty() {
        vec![self_signed(config)?]
    } else {
        config
            .tls
            .certificates
            .iter()
            .map(|c| CertPair {
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .collect()
    };
    TlsHandle::load(pairs).context("loading TLS certificates")
}

fn self_signed(config: &Config) -> Result<CertPair> {
    let dir = config.tls_dir();
    let pair = CertPair {
        cert: dir.join("selfsigned-cert.pem"),
        key: dir.join("selfsigned-key.pem"),
    };
    if pair.cert.exists() && pair.key.exists() {
        return Ok(pair);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec![config.server.hostname.clone(), "localhost".to_string()];
    let cert = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    write_private(&pair.key, cert.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&pair.cert, cert.cert.pem())
        .with_context(|| format!("writing {}", pair.cert.display()))?;
    warn!(
        cert = %pair.cert.display(),
        "no [tls] certificates configured: generated a self-signed certificate for {}; clients will not trust it",
        config.server.hostname
    );
    Ok(pair)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// SIGHUP: read the certificate files again; new handshakes use them, running sessions keep
/// theirs. A broken file keeps the old certificates in use.
pub fn reload(tls: &TlsHandle) {
    match tls.reload() {
        Ok(()) => info!("TLS certificates reloaded"),
        Err(e) => warn!(error = %e, "TLS reload failed; keeping the certificates in use"),
    }
}
