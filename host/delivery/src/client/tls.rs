//! The TLS client configurations for STARTTLS (RFC 3207) to next hops.
//!
//! Two configurations, chosen per destination by its TLS policy (see `remote.rs`):
//! - **verified**: the certificate chain must lead to a trust anchor (the Mozilla roots of
//!   `webpki-roots`, plus `delivery.tls.ca_file`) and name the host connected to. That name
//!   is the MX host name for MX delivery (RFC 7672 3.2.2, RFC 8461 4.1: never the recipient
//!   domain), the route's host for a smart host. A failed check fails the handshake;
//! - **opportunistic**: any certificate is accepted (RFC 7435: MX names come from
//!   unauthenticated DNS, and refusing an unverifiable certificate would only turn encrypted
//!   delivery into clear text). The chain is still checked after the handshake, so that the
//!   session can record whether it was verified; credentials go only over verified sessions.
//!
//! The handshake signatures are always checked, with ring as the crypto provider.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;

/// Both client configurations and the verifier that checks an opportunistic session.
#[derive(Clone)]
pub struct TlsConfigs {
    pub opportunistic: Arc<ClientConfig>,
    pub verified: Arc<ClientConfig>,
    pub verifier: Arc<WebPkiServerVerifier>,
    /// The name a session sends in SNI instead of the endpoint's host: DANE's TLSA base
    /// domain (RFC 7672 8.1), set on one session's copy together with the DANE verifier,
    /// which decides the accepted names itself (`dane::verify`).
    pub sni: Option<String>,
}

impl TlsConfigs {
    /// The configurations, trusting the Mozilla roots and the PEM certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<TlsConfigs, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            for cert in load_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| format!("TLS verifier: {e}"))?;
        let verified = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(Arc::clone(&verifier))
            .with_no_client_auth();
        let opportunistic = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        Ok(TlsConfigs {
            opportunistic: Arc::new(opportunistic),
            verified: Arc::new(verified),
            verifier,
            sni: None,
        })
    }

    /// Whether the chain a peer presented verifies for `name` (for the record of an
    /// opportunistic session); the reason when it does not.
    pub fn check(&self, chain: &[CertificateDer<'_>], name: &ServerName<'_>) -> Result<(), String> {
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no certificate".to_string())?;
        self.verifier
            .verify_server_cert(end_entity, intermediates, name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The certificates of a PEM file; at least one.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The name sent in SNI and checked against the certificate: the host name when it is one,
/// else the address.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.trim_end_matches('.').to_string()).ok()
}

/// Whether a handshake error is a certificate verification failure (RFC 8461 4.2 and the
/// TLS-RPT failure types: 4.7.5 rather than "TLS unavailable").
pub fn is_certificate_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
