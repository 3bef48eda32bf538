//! DKIM keys: generation (ed25519, RSA-2048), reading PEM, the DNS TXT record to publish
//! (RFC 6376 section 3.6.1, RFC 8463 for ed25519) and comparing a published record with a key.

use crate::{AuthError, KeyAlgorithm};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// RSA keys shorter than this are refused for signing (RFC 8301 section 3.2: at least 1024,
/// SHOULD be 2048; ring signs with 2048 and up).
pub const MIN_RSA_BITS: usize = 2048;

/// A private DKIM key. Its bytes are never printed or logged (no `Debug` of the key).
pub struct DkimPrivateKey {
    algorithm: KeyAlgorithm,
    /// PKCS#8 DER.
    pkcs8: Vec<u8>,
    /// The `p=` bytes: the raw 32-byte key for ed25519, SubjectPublicKeyInfo DER for RSA.
    public: Vec<u8>,
}

impl std::fmt::Debug for DkimPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DkimPrivateKey({}, <secret>)", self.algorithm.dns_k())
    }
}

impl DkimPrivateKey {
    /// A new key: ed25519, or RSA-2048.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, AuthError> {
        let pkcs8 = match algorithm {
            KeyAlgorithm::Ed25519 => {
                Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|e| AuthError::InvalidKey(e.to_string()))?
                    .as_ref()
                    .to_vec()
            }
            KeyAlgorithm::Rsa => {
                let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), MIN_RSA_BITS)
                    .map_err(|e| AuthError::InvalidKey(e.to_string()))?;
                key.to_pkcs8_der()
                    .map_err(|e| AuthError::InvalidKey(e.to_string()))?
                    .as_bytes()
                    .to_vec()
            }
        };
        Self::from_pkcs8(algorithm, pkcs8)
    }

    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, ed25519 or RSA) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, AuthError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| AuthError::InvalidKey(format!("no PEM private key: {e}")))?;
        match der {
            PrivateKeyDer::Pkcs8(k) => {
                let bytes = k.secret_pkcs8_der().to_vec();
                if Ed25519KeyPair::from_pkcs8_maybe_unchecked(&bytes).is_ok() {
                    Self::from_pkcs8(KeyAlgorithm::Ed25519, bytes)
                } else {
                    Self::from_pkcs8(KeyAlgorithm::Rsa, bytes)
                }
            }
            PrivateKeyDer::Pkcs1(k) => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                    .map_err(|e| AuthError::InvalidKey(e.to_string()))?;
                let pkcs8 = key
                    .to_pkcs8_der()
                    .map_err(|e| AuthError::InvalidKey(e.to_string()))?;
                Self::from_pkcs8(KeyAlgorithm::Rsa, pkcs8.as_bytes().to_vec())
            }
            _ => Err(AuthError::InvalidKey(
                "unsupported key type (use ed25519 or RSA)".into(),
            )),
        }
    }

    fn from_pkcs8(algorithm: KeyAlgorithm, pkcs8: Vec<u8>) -> Result<Self, AuthError> {
        let public = match algorithm {
            KeyAlgorithm::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
                .map_err(|e| AuthError::InvalidKey(e.to_string()))?
                .public_key()
                .as_ref()
                .to_vec(),
            KeyAlgorithm::Rsa => {
                let key = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8)
                    .map_err(|e| AuthError::InvalidKey(e.to_string()))?;
                if key.size() * 8 < MIN_RSA_BITS {
                    return Err(AuthError::InvalidKey(format!(
                        "RSA key of {} bits; at least {MIN_RSA_BITS} needed",
                        key.size() * 8
                    )));
                }
                key.to_public_key()
                    .to_public_key_der()
                    .map_err(|e| AuthError::InvalidKey(e.to_string()))?
                    .as_bytes()
                    .to_vec()
            }
        };
        Ok(DkimPrivateKey {
            algorithm,
            pkcs8,
            public,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key as PEM (PKCS#8), for writing to a 0600 file. Never print it.
    pub fn to_pkcs8_pem(&self) -> String {
        let b64 = B64.encode(&self.pkcs8);
        let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END PRIVATE KEY-----\n");
        out
    }

    /// The TXT record's text, `v=DKIM1; k=...; p=...`.
    pub fn dns_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.dns_k(),
            B64.encode(&self.public)
        )
    }

    /// A zone-file line for `SELECTOR._domainkey.DOMAIN`, the text split into strings of at
    /// most 255 octets (RFC 1035 section 3.3.14: one character-string is at most 255).
    pub fn zone_line(&self, domain: &str, selector: &str) -> String {
        let rec = self.dns_record();
        let parts: Vec<String> = rec
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!(
            "{selector}._domainkey.{domain}. IN TXT ( {} )",
            parts.join(" ")
        )
    }

    /// Does the published record `txt` (the TXT strings joined) carry this key's public key?
    /// `Err` says why not.
    pub fn matches_record(&self, txt: &str) -> Result<(), String> {
        let tags = parse_tags(txt);
        let get = |name: &str| {
            tags.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if let Some(v) = get("v") {
            if v != "DKIM1" {
                return Err(format!("v={v}, expected DKIM1"));
            }
        }
        // RFC 6376 section 3.6.1: k= defaults to rsa.
        let k = get("k").unwrap_or("rsa").to_ascii_lowercase();
        if k != self.algorithm.dns_k() {
            return Err(format!(
                "the record has k={k}, the key is {}",
                self.algorithm.dns_k()
            ));
        }
        let p = get("p").ok_or("the record has no p= tag")?;
        if p.is_empty() {
            return Err("the record's p= is empty: the key is revoked".into());
        }
        let published = B64
            .decode(p)
            .map_err(|_| "the record's p= is not base64".to_string())?;
        let same = match self.algorithm {
            KeyAlgorithm::Ed25519 => published == self.public,
            KeyAlgorithm::Rsa => {
                let ours = rsa::RsaPublicKey::from_public_key_der(&self.public)
                    .map_err(|e| e.to_string())?;
                let theirs = rsa::RsaPublicKey::from_public_key_der(&published)
                    .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&published))
                    .map_err(|_| "the record's p= is not an RSA public key".to_string())?;
                ours.n() == theirs.n() && ours.e() == theirs.e()
            }
        };
        if same {
            Ok(())
        } else {
            Err("the record's public key is not this key's".into())
        }
    }
}

/// `tag=value` pairs of a DKIM key record (RFC 6376 section 3.2), whitespace removed.
fn parse_tags(txt: &str) -> Vec<(String, String)> {
    txt.split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            Some((k.trim().to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_round_trip_through_pem_and_record() {
        let k = DkimPrivateKey::generate(KeyAlgorithm::Ed25519).expect("gen");
        let pem = k.to_pkcs8_pem();
        let back = DkimPrivateKey::from_pem(pem.as_bytes()).expect("pem");
        assert_eq!(back.algorithm(), KeyAlgorithm::Ed25519);
        let rec = k.dns_record();
        assert!(rec.starts_with("v=DKIM1; k=ed25519; p="), "{rec}");
        back.matches_record(&rec).expect("same key");
        // Folded whitespace inside p= is allowed.
        let folded = rec.replacen("p=", "p= ", 1);
        back.matches_record(&folded).expect("folded");
        let other = DkimPrivateKey::generate(KeyAlgorithm::Ed25519).expect("gen");
        assert!(other.matches_record(&rec).is_err());
        assert!(k.matches_record("v=DKIM1; k=ed25519; p=").is_err());
        assert!(
            k.matches_record("v=DKIM1; p=AAAA").is_err(),
            "k defaults to rsa"
        );
        assert!(!format!("{k:?}").contains(&pem[30..40]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(DkimPrivateKey::from_pem(b"nothing").is_err());
        assert!(DkimPrivateKey::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
