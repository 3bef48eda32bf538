//! `corvid dkim`: generate a DKIM key and the DNS record to publish, check a published
//! record against a key; hidden helpers (verify, sign, arc-seal, spf) drive the
//! `corvid-auth` library from the interop tests without a server.

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use corvid_auth::keys::DkimPrivateKey;
use corvid_auth::{AuthChecksConfig, Authenticator, DkimConfig, KeyAlgorithm, Signer};
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
pub enum Algorithm {
    Ed25519,
    Rsa,
}

#[derive(Subcommand, Clone)]
pub enum DkimAction {
    /// Generate a signing key (written 0600, never printed) and print the DNS TXT record.
    Keygen {
        /// The signing domain (d=), e.g. example.org.
        domain: String,
        /// The selector (s=): the record goes to SELECTOR._domainkey.DOMAIN.
        selector: String,
        /// ed25519 (RFC 8463) or rsa (RSA-2048, rsa-sha256).
        #[arg(long, value_enum, default_value = "ed25519")]
        algorithm: Algorithm,
        /// Directory for the key file DOMAIN.SELECTOR.pem (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Look up SELECTOR._domainkey.DOMAIN and compare it with a key file.
    Check {
        domain: String,
        selector: String,
        /// The private key file (PEM). Default: DOMAIN.SELECTOR.pem in the current directory.
        #[arg(long)]
        key: Option<PathBuf>,
        /// DNS server to ask (IP:PORT, repeatable). Default: the system's resolvers.
        #[arg(long = "nameserver")]
        nameservers: Vec<SocketAddr>,
    },
    /// Print the DNS TXT record of every [[dkim.key]] of the config (default: the built-in
    /// development config), generating missing keys marked `generate = true` first.
    Record {
        /// The config file; without it, the built-in config/dev.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Verify a message read on standard input; print the results as JSON.
    #[command(hide = true)]
    Verify {
        #[command(flatten)]
        env: Envelope,
        #[arg(long, default_value = "corvid.test")]
        authserv_id: String,
        #[arg(long, default_value_t = 10)]
        max_signatures: usize,
    },
    /// SPF only; print the result as JSON.
    #[command(hide = true)]
    Spf {
        #[command(flatten)]
        env: Envelope,
    },
    /// DKIM-sign standard input with the [dkim] keys of --config; print the signed message.
    #[command(hide = true)]
    Sign {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        selector: Option<String>,
    },
    /// ARC-seal standard input (forwarding); print the sealed message.
    #[command(hide = true)]
    ArcSeal {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        env: Envelope,
    },
}

#[derive(clap::Args, Clone)]
pub struct Envelope {
    #[arg(long = "nameserver")]
    nameservers: Vec<SocketAddr>,
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: IpAddr,
    #[arg(long, default_value = "client.test")]
    helo: String,
    /// MAIL FROM address; empty for <> (SPF then checks the HELO name).
    #[arg(long)]
    mail_from: Option<String>,
}

/// The tables of a config file these helpers read.
#[derive(Deserialize, Default)]
struct Tables {
    #[serde(default)]
    auth_checks: AuthChecksConfig,
    #[serde(default)]
    dkim: DkimConfig,
}

pub fn run(action: DkimAction) -> anyhow::Result<()> {
    match action {
        DkimAction::Keygen {
            domain,
            selector,
            algorithm,
            out,
        } => keygen(&domain, &selector, algorithm, &out),
        DkimAction::Check {
            domain,
            selector,
            key,
            nameservers,
        } => check(&domain, &selector, key, nameservers),
        DkimAction::Verify {
            env,
            authserv_id,
            max_signatures,
        } => verify(env, authserv_id, max_signatures),
        DkimAction::Record { config } => crate::mail_auth::print_records(config.as_deref()),
        DkimAction::Spf { env } => spf(env),
        DkimAction::Sign {
            config,
            domain,
            selector,
        } => sign(&config, domain, selector),
        DkimAction::ArcSeal { config, env } => arc_seal(&config, env),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn key_file_name(domain: &str, selector: &str) -> String {
    format!("{}.{selector}.pem", domain.trim_end_matches('.'))
}

fn keygen(domain: &str, selector: &str, alg: Algorithm, out: &Path) -> anyhow::Result<()> {
    let algorithm = match alg {
        Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
        Algorithm::Rsa => KeyAlgorithm::Rsa,
    };
    let key = DkimPrivateKey::generate(algorithm)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(key_file_name(domain, selector));
    write_private(&path, key.to_pkcs8_pem().as_bytes())?;
    println!(
        "# private key: {} (mode 0600; keep it secret)",
        path.display()
    );
    println!("# publish this TXT record, then run `corvid dkim check {domain} {selector}`:");
    println!("{}", key.zone_line(domain, selector));
    Ok(())
}

/// Creates the key file owner-only from the start (never world-readable, even briefly) and
/// refuses to overwrite an existing key.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn check(
    domain: &str,
    selector: &str,
    key: Option<PathBuf>,
    nameservers: Vec<SocketAddr>,
) -> anyhow::Result<()> {
    let path = key.unwrap_or_else(|| PathBuf::from(key_file_name(domain, selector)));
    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let key = DkimPrivateKey::from_pem(&pem).with_context(|| path.display().to_string())?;
    let cfg = AuthChecksConfig {
        nameservers,
        ..Default::default()
    };
    let name = format!("{selector}._domainkey.{domain}");
    let record = runtime()?.block_on(corvid_auth::lookup_dkim_record(&cfg, domain, selector))?;
    let Some(record) = record else {
        bail!(
            "{name}: no TXT record published; publish:\n{}",
            key.zone_line(domain, selector)
        );
    };
    match key.matches_record(&record) {
        Ok(()) => {
            println!(
                "{name}: ok, the published record matches {}",
                path.display()
            );
            Ok(())
        }
        Err(why) => bail!(
            "{name}: MISMATCH: {why}\npublished: {}\nexpected:  {}",
            sanitize(&record),
            key.dns_record()
        ),
    }
}

/// DNS text is peer data: printable ASCII only.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn stdin_bytes() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    Ok(buf)
}

fn verify(env: Envelope, authserv_id: String, max_signatures: usize) -> anyhow::Result<()> {
    let message = stdin_bytes()?;
    let cfg = AuthChecksConfig {
        nameservers: env.nameservers.clone(),
        authserv_id: authserv_id.clone(),
        max_dkim_signatures: max_signatures,
        ..Default::default()
    };
    let auth = Authenticator::new(cfg)?;
    let rt = runtime()?;
    let results = rt.block_on(async {
        let spf = match &env.mail_from {
            Some(m) => Some(
                auth.check_spf(env.client_ip, &env.helo, m, "mx.corvid.test")
                    .await,
            ),
            None => None,
        };
        auth.check_message(&message, spf.as_ref()).await
    });
    let action = corvid_auth::decide(&results, auth.config().dmarc_policy, 0);
    let header = corvid_auth::authentication_results(&authserv_id, &results);
    let out = serde_json::json!({ "results": results, "header": header, "action": action });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn spf(env: Envelope) -> anyhow::Result<()> {
    let cfg = AuthChecksConfig {
        nameservers: env.nameservers.clone(),
        ..Default::default()
    };
    let auth = Authenticator::new(cfg)?;
    let mail_from = env.mail_from.clone().unwrap_or_default();
    let r =
        runtime()?.block_on(auth.check_spf(env.client_ip, &env.helo, &mail_from, "mx.corvid.test"));
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn load_tables(config: &Path) -> anyhow::Result<Tables> {
    let text = std::fs::read_to_string(config).with_context(|| config.display().to_string())?;
    toml::from_str(&text).with_context(|| config.display().to_string())
}

fn sign(config: &Path, domain: Option<String>, selector: Option<String>) -> anyhow::Result<()> {
    let t = load_tables(config)?;
    let signer = Signer::new(&t.dkim, |p| std::fs::read(p))?;
    let message = stdin_bytes()?;
    let choice = corvid_auth::SigningChoice { domain, selector };
    let out = signer.sign(&message, &choice, corvid_auth::Utc::now())?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.headers.as_bytes())?;
    stdout.write_all(&message)?;
    Ok(())
}

fn arc_seal(config: &Path, env: Envelope) -> anyhow::Result<()> {
    let t = load_tables(config)?;
    let signer = Signer::new(&t.dkim, |p| std::fs::read(p))?;
    let mut cfg = t.auth_checks;
    if !env.nameservers.is_empty() {
        cfg.nameservers = env.nameservers.clone();
    }
    if cfg.authserv_id.is_empty() {
        cfg.authserv_id = "mx.corvid.test".into();
    }
    let auth = Authenticator::new(cfg)?;
    let message = stdin_bytes()?;
    let rt = runtime()?;
    let sealed = rt.block_on(async {
        let spf = match &env.mail_from {
            Some(m) => Some(
                auth.check_spf(env.client_ip, &env.helo, m, "mx.corvid.test")
                    .await,
            ),
            None => None,
        };
        // The checks of this hop, on the message as given; the seal carries them.
        let results = auth.check_message(&message, spf.as_ref()).await;
        auth.arc_seal(
            &signer,
            &message,
            &results,
            env.client_ip,
            corvid_auth::Utc::now(),
        )
        .await
    })?;
    let Some(set) = sealed else {
        bail!("not sealed: no active RSA key for dkim.arc_seal_domains, or the chain failed");
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(set.as_bytes())?;
    stdout.write_all(&message)?;
    Ok(())
}
