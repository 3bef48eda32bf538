//! Checking a server's certificate chain against TLSA records (RFC 7672 3.1, RFC 7671).

use super::Tlsa;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// Whether `cert` (DER) matches `record`: the selected part (the whole certificate, or its
/// SubjectPublicKeyInfo) compared in full or by SHA2-256/SHA2-512 (RFC 6698 2.1.2, 2.1.3).
pub fn matches(record: &Tlsa, cert: &[u8]) -> bool {
    let selected = match record.selector {
        0 => cert,
        1 => match spki_of(cert) {
            Some(s) => s,
            None => return false,
        },
        _ => return false,
    };
    let digest = |alg| ring::digest::digest(alg, selected).as_ref().to_vec();
    match record.matching {
        0 => selected == record.data.as_slice(),
        1 => digest(&ring::digest::SHA256) == record.data,
        2 => digest(&ring::digest::SHA512) == record.data,
        _ => false,
    }
}

/// The DER SubjectPublicKeyInfo (tag and length included) of a DER X.509 certificate
/// (RFC 5280 4.1): the seventh field of the TBSCertificate, the sixth without a version.
pub fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert_body, _) = der_item(cert)?;
    let (_, tbs, _) = der_item(cert_body)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xa0) {
        rest = der_item(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = der_item(rest)?.2;
    }
    let (whole, _, _) = der_item(rest)?;
    (whole.first() == Some(&0x30)).then_some(whole)
}

/// One DER item at the start of `input`: (the whole item, its contents, what follows).
fn der_item(input: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let first_len = *input.get(1)?;
    let (len, header) = if first_len < 0x80 {
        (usize::from(first_len), 2)
    } else {
        let n = usize::from(first_len & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let whole = input.get(..end)?;
    Some((whole, &whole[header..], &input[end..]))
}

/// A rustls verifier that accepts a chain when one usable TLSA record matches it:
/// - DANE-EE(3): the server's own certificate matches; its names and dates are not
///   checked (RFC 7672 3.1.1);
/// - DANE-TA(2): a certificate the server sent matches (RFC 7672 3.1.2: the server must send
///   its trust anchor), and the chain from it verifies, dates checked (RFC 7672 3.2.3), for
///   one of the reference identifiers the verifier was made with (RFC 7672 3.2.2): the TLSA
///   base domain, and the MX host name when the base domain is the target of its CNAME
///   chain (Postfix accepts the same two). The name the session sent in SNI plays no part;
///   the recipient domain is never one of them.
///
/// Handshake signatures are always checked.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Arc<Vec<Tlsa>>,
    /// The reference identifiers for DANE-TA(2), the TLSA base domain first.
    names: Vec<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    /// A verifier for `records`; `names` are the reference identifiers for DANE-TA(2)
    /// (the TLSA base domain and the MX host name; duplicates and names that are not DNS
    /// names are left out).
    pub fn new(records: Arc<Vec<Tlsa>>, names: &[&str]) -> Self {
        let mut refs: Vec<ServerName<'static>> = Vec::new();
        for n in names {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            match ServerName::try_from(n) {
                Ok(name @ ServerName::DnsName(_)) if !refs.contains(&name) => refs.push(name),
                _ => {}
            }
        }
        DaneVerifier {
            records,
            names: refs,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// A client configuration checking certificates against `records`, DANE-TA(2) chains
    /// for `names` ([`DaneVerifier::new`]).
    pub fn client_config(
        records: Arc<Vec<Tlsa>>,
        names: &[&str],
    ) -> Result<Arc<ClientConfig>, String> {
        let verifier = Arc::new(DaneVerifier::new(records, names));
        let config = ClientConfig::builder_with_provider(Arc::clone(&verifier.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn trust_anchor_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let mut last = "no DANE-TA record matches a certificate in the chain".to_string();
        if self.names.is_empty() {
            return Err("no reference identifier for DANE-TA".into());
        }
        for record in self.records.iter().filter(|r| r.usage == 2) {
            for ta in intermediates.iter().filter(|c| matches(record, c)) {
                let mut roots = RootCertStore::empty();
                if let Err(e) = roots.add(ta.clone()) {
                    last = format!("DANE-TA certificate unusable as an anchor: {e}");
                    continue;
                }
                let chain = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .map_err(|e| e.to_string())?;
                // The certificate matches when it is valid for any reference identifier.
                for name in &self.names {
                    match chain.verify_server_cert(end_entity, intermediates, name, &[], now) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = format!("chain from the DANE-TA certificate: {e}"),
                    }
                }
            }
        }
        Err(last)
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let ee = self
            .records
            .iter()
            .any(|r| r.usage == 3 && matches(r, end_entity));
        if ee {
            return Ok(ServerCertVerified::assertion());
        }
        match self.trust_anchor_chain(end_entity, intermediates, now) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(why) => {
                tracing::info!(server = ?server_name, reason = %why, "DANE: no TLSA record matches");
                Err(Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
