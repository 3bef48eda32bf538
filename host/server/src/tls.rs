//! TLS for the listeners: certificates from PEM files, SNI across several certificates, TLS 1.2
//! and 1.3 only (RFC 8996 retires 1.0 and 1.1), and a swap on reload so that a renewed
//! certificate is served without a restart and without dropping sessions.

use arc_swap::ArcSwap;
use corvid_types::TlsInfo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("no certificate configured")]
    NoCertificate,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS settings every listener uses; `reload` swaps them atomically.
pub struct TlsHandle {
    current: ArcSwap<rustls::ServerConfig>,
    pairs: Vec<CertPair>,
}

impl TlsHandle {
    pub fn load(pairs: Vec<CertPair>) -> Result<Arc<TlsHandle>, TlsError> {
        let config = build_config(&pairs)?;
        Ok(Arc::new(TlsHandle {
            current: ArcSwap::from_pointee(config),
            pairs,
        }))
    }

    /// Reads the certificate files again. On error the certificates in use stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_config(&self.pairs)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }
}

/// What the session records about the negotiated TLS (for `Received:` and policy).
pub(crate) fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    TlsInfo {
        version,
        cipher,
        sni: conn.server_name().map(str::to_string),
    }
}

fn build_config(pairs: &[CertPair]) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut resolver = SniResolver {
        by_name: HashMap::new(),
        default: None,
    };
    for pair in pairs {
        let (key, names) = load_pair(pair, &provider)?;
        for name in names {
            resolver
                .by_name
                .entry(name.to_ascii_lowercase())
                .or_insert_with(|| Arc::clone(&key));
        }
        resolver.default.get_or_insert(key);
    }
    if resolver.default.is_none() {
        return Err(TlsError::NoCertificate);
    }
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    Ok(config)
}

fn load_pair(
    pair: &CertPair,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsError> {
    let file_err = |path: &Path, reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .map_err(|e| file_err(&pair.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&pair.cert, e.to_string()))?;
    let Some(leaf) = certs.first() else {
        return Err(file_err(&pair.cert, "no certificate in the file".into()));
    };
    let names = webpki::EndEntityCert::try_from(leaf)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .map_err(|e| file_err(&pair.cert, format!("unreadable certificate: {e:?}")))?;
    let key =
        PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| file_err(&pair.key, e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_err(&pair.key, e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| file_err(&pair.key, format!("does not match the certificate: {e}")))?;
    Ok((Arc::new(certified), names))
}

/// Picks the certificate by the name the client asked for (SNI), including `*.` wildcards;
/// the first configured certificate otherwise.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            self.by_name
                .get(&name)
                .or_else(|| wildcard.and_then(|w| self.by_name.get(&w)))
        });
        found.or(self.default.as_ref()).cloned()
    }
}
