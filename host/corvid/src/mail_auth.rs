//! Mail authentication wiring: `[auth_checks]` and `[dkim]` into the `MailAuth` service the
//! SMTP server calls (corvid-auth underneath), DKIM key files (default paths under the data
//! directory, generated at first start when `generate = true`), and `corvid dkim record`.

use crate::config::Config;
use anyhow::{Context, Result};
use corvid_auth::keys::DkimPrivateKey;
use corvid_auth::{AuthService, DkimConfig, Signer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};

/// `<data_dir>/dkim/DOMAIN.SELECTOR.pem`, the key file of an entry without `key_file`.
fn default_key_file(data_dir: &Path, domain: &str, selector: &str) -> PathBuf {
    data_dir
        .join("dkim")
        .join(format!("{}.{selector}.pem", domain.trim_end_matches('.')))
}

/// The `[dkim]` table with every key file path filled in.
pub(crate) fn resolved(config: &Config) -> DkimConfig {
    let mut dkim = config.dkim.clone();
    for k in &mut dkim.key {
        if k.key_file.as_os_str().is_empty() {
            k.key_file = default_key_file(&config.server.data_dir, &k.domain, &k.selector);
        }
    }
    dkim
}

/// Writes a new key owner-only from the start (never world-readable, even briefly) and
/// never over an existing file.
fn write_new_key(path: &Path, key: &DkimPrivateKey) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(key.to_pkcs8_pem().as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Generates the missing key files of entries with `generate = true`; returns the DNS zone
/// lines of every configured key (`SELECTOR._domainkey.DOMAIN. IN TXT "..."`).
fn ensure_keys(dkim: &DkimConfig) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for k in &dkim.key {
        let key = if k.generate && !k.key_file.exists() {
            let key = DkimPrivateKey::generate(k.algorithm)?;
            write_new_key(&k.key_file, &key)?;
            info!(
                domain = %k.domain,
                selector = %k.selector,
                key_file = %k.key_file.display(),
                "DKIM key generated (dkim.key.generate); publish its TXT record"
            );
            key
        } else {
            let pem = std::fs::read(&k.key_file)
                .with_context(|| format!("dkim.key: reading {}", k.key_file.display()))?;
            DkimPrivateKey::from_pem(&pem).with_context(|| k.key_file.display().to_string())?
        };
        lines.push(key.zone_line(&k.domain, &k.selector));
    }
    Ok(lines)
}

/// Builds the service for `corvid serve`: the checker (resolver and DNS cache) and the
/// signer. Logs the TXT record of every key, so the operator sees what to publish.
pub fn build(config: &Config) -> Result<Arc<AuthService>> {
    let dkim = resolved(config);
    for line in ensure_keys(&dkim)? {
        info!(record = %line, "DKIM signing key; the DNS TXT record to publish");
    }
    let signer = Signer::new(&dkim, |p| std::fs::read(p)).context("loading [[dkim.key]]")?;
    if !config.auth_checks.enabled {
        warn!("auth_checks.enabled = false: inbound mail is not checked (no SPF, DKIM, DMARC)");
    }
    let service = AuthService::new(
        &config.auth_checks,
        &config.server.hostname,
        Some(Arc::new(signer)),
    )
    .context("setting up [auth_checks]")?
    .with_forward_routes(forward_routes(config));
    Ok(Arc::new(service))
}

/// The domains of `[[delivery.route]]` entries that send mail away (an MX or a relay host;
/// not `local` nor LMTP, which deliver to a mailbox store): mail for them is forwarded, and
/// ARC-sealed with `dkim.arc_seal_domains`. `*` only covers domains that are not local,
/// which count as forwarded anyway.
fn forward_routes(config: &Config) -> impl Iterator<Item = &str> {
    use corvid_delivery::route::Target;
    config
        .delivery
        .routes
        .iter()
        .filter(|r| r.domain != "*" && matches!(r.to, Target::Mx | Target::Smtp(_)))
        .map(|r| r.domain.as_str())
}

/// `corvid dkim record [--config FILE]`: prints the TXT record of every `[[dkim.key]]`,
/// generating missing keys marked `generate = true` first (what `make serve` shows).
pub fn print_records(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let dkim = resolved(&config);
    if dkim.key.is_empty() {
        println!("# no [[dkim.key]] configured: nothing is signed");
    }
    for (k, line) in dkim.key.iter().zip(ensure_keys(&dkim)?) {
        println!(
            "# DKIM key {} ({}); publish this TXT record:",
            k.key_file.display(),
            k.algorithm.dns_k()
        );
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_0600_once_and_keeps_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"{}\"\n[[listener]]\nname = \"smtp\"\naddress = \"127.0.0.1:0\"\n[local]\npostmaster = \"postmaster@a.test\"\n[[local.domain]]\nname = \"a.test\"\nmailboxes = [\"postmaster\"]\n[[dkim.key]]\ndomain = \"a.test\"\nselector = \"s1\"\ngenerate = true\n",
            dir.path().display()
        );
        let config = Config::parse(&text).expect("config");
        let dkim = resolved(&config);
        let path = dir.path().join("dkim/a.test.s1.pem");
        assert_eq!(dkim.key[0].key_file, path);
        let first = ensure_keys(&dkim).expect("generate");
        let mode = std::fs::metadata(&path).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ensure_keys(&dkim).expect("reuse");
        assert_eq!(first, again, "an existing key is used, never replaced");
        assert!(first[0].starts_with("s1._domainkey.a.test. IN TXT ( \"v=DKIM1; k=ed25519; p="));
    }
}
