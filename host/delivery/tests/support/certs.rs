//! A test CA and server certificates made at run time (no key is ever committed).

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

pub struct Ca {
    cert: Certificate,
    key: KeyPair,
    /// The CA certificate as a PEM file, for `delivery.tls.ca_file`.
    pub pem_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Which certificate a test peer presents.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Issued by the test CA for the name.
    Valid,
    /// Issued by the test CA, expired in 2020.
    Expired,
    /// Self-signed for the name.
    SelfSigned,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Corvid test CA");
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            pem_file,
            _dir: dir,
        }
    }

    /// A server config presenting a certificate of `kind` for `name`.
    pub fn server(&self, kind: Kind, name: &str) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = match kind {
            Kind::Valid => params.signed_by(&key, &self.cert, &self.key).unwrap(),
            Kind::Expired => {
                params.not_before = rcgen::date_time_ymd(2019, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 1, 1);
                params.signed_by(&key, &self.cert, &self.key).unwrap()
            }
            Kind::SelfSigned => params.self_signed(&key).unwrap(),
        };
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}
