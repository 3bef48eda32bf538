use super::verify::{matches, spki_of, DaneVerifier};
use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::atomic::{AtomicUsize, Ordering};

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

fn sha512(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA512, b)
        .as_ref()
        .to_vec()
}

fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

/// An expired self-signed certificate for another name, and its key.
fn odd_cert() -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["elsewhere.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), key)
}

fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).unwrap()
}

#[test]
fn spki_is_found_in_a_certificate() {
    let (cert, key) = odd_cert();
    assert_eq!(spki_of(&cert), Some(key.public_key_der().as_slice()));
    assert_eq!(spki_of(&cert[..40]), None);
    assert_eq!(spki_of(b"\x30\x84\xff\xff\xff\xff"), None);
}

#[test]
fn every_selector_and_matching_type_matches() {
    let (cert, key) = odd_cert();
    let spki = key.public_key_der();
    for r in [
        rec(3, 0, 0, cert.to_vec()),
        rec(3, 0, 1, sha256(&cert)),
        rec(3, 0, 2, sha512(&cert)),
        rec(3, 1, 0, spki.clone()),
        rec(3, 1, 1, sha256(&spki)),
        rec(3, 1, 2, sha512(&spki)),
    ] {
        assert!(matches(&r, &cert), "{r:?}");
        let mut wrong = r.clone();
        wrong.data[5] ^= 1;
        assert!(!matches(&wrong, &cert), "{wrong:?}");
    }
    assert!(!matches(&rec(3, 2, 1, sha256(&cert)), &cert));
    assert!(!matches(&rec(3, 0, 3, sha256(&cert)), &cert));
}

#[test]
fn dane_ee_ignores_name_and_expiry_and_a_mismatch_fails() {
    let (cert, _) = odd_cert();
    let ok = DaneVerifier::new(
        Arc::new(vec![rec(3, 0, 1, sha256(&cert))]),
        &["mx.dane.test"],
    );
    assert!(ok
        .verify_server_cert(&cert, &[], &name("mx.dane.test"), &[], UnixTime::now())
        .is_ok());
    let (other, _) = odd_cert();
    let bad = DaneVerifier::new(
        Arc::new(vec![rec(3, 0, 1, sha256(&other))]),
        &["mx.dane.test"],
    );
    let err = bad
        .verify_server_cert(&cert, &[], &name("mx.dane.test"), &[], UnixTime::now())
        .unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
    // A DANE-EE record does not make a chain anchor (usage 2 needs the chain to verify).
    let ta_only = DaneVerifier::new(
        Arc::new(vec![rec(2, 0, 1, sha256(&cert))]),
        &["mx.dane.test"],
    );
    assert!(ta_only
        .verify_server_cert(&cert, &[], &name("mx.dane.test"), &[], UnixTime::now())
        .is_err());
}

#[test]
fn dane_ta_verifies_the_chain_and_the_name() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["mx.dane.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let chain = [ca.der().clone()];
    let spki = ca_key.public_key_der();
    let records = Arc::new(vec![rec(2, 1, 1, sha256(&spki))]);
    let v = DaneVerifier::new(Arc::clone(&records), &["mx.dane.test"]);
    let now = UnixTime::now();
    assert!(v
        .verify_server_cert(leaf.der(), &chain, &name("mx.dane.test"), &[], now)
        .is_ok());
    // The name is checked for DANE-TA (RFC 7672 3.2.3), against the verifier's reference
    // identifiers, whatever the session sent in SNI.
    let other = DaneVerifier::new(records, &["mx.other.test"]);
    assert!(other
        .verify_server_cert(leaf.der(), &chain, &name("mx.dane.test"), &[], now)
        .is_err());
    // The anchor must be in the chain the server sent.
    assert!(v
        .verify_server_cert(leaf.der(), &[], &name("mx.dane.test"), &[], now)
        .is_err());
}

struct Fake {
    answer: Result<TlsaAnswer, DnssecError>,
    mx: Result<MxAnswer, DnssecError>,
    addresses: Result<Option<String>, DnssecError>,
    calls: AtomicUsize,
    other_calls: AtomicUsize,
}

impl Fake {
    fn new(answer: Result<TlsaAnswer, DnssecError>) -> Arc<Self> {
        Arc::new(Fake {
            answer,
            mx: Ok(MxAnswer {
                hosts: vec!["mx.dane.test".into()],
                secure: true,
            }),
            addresses: Ok(Some("mx.dane.test".into())),
            calls: AtomicUsize::new(0),
            other_calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl SecureDns for Fake {
    async fn tlsa(&self, name: &str) -> Result<TlsaAnswer, DnssecError> {
        assert_eq!(name, "_25._tcp.mx.dane.test");
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answer.clone()
    }

    async fn mx(&self, domain: &str) -> Result<MxAnswer, DnssecError> {
        assert_eq!(domain, "dane.test");
        self.other_calls.fetch_add(1, Ordering::SeqCst);
        self.mx.clone()
    }

    async fn address_name(&self, host: &str) -> Result<Option<String>, DnssecError> {
        assert!(
            host.trim_end_matches('.')
                .eq_ignore_ascii_case("mx.dane.test"),
            "{host}"
        );
        self.other_calls.fetch_add(1, Ordering::SeqCst);
        self.addresses.clone()
    }
}

async fn state_twice(answer: Result<TlsaAnswer, DnssecError>) -> (DaneState, usize) {
    let fake = Fake::new(answer);
    let dane = Dane::new(Arc::clone(&fake) as Arc<dyn SecureDns>);
    let first = dane.state("mx.dane.test.", 25).await;
    let second = dane.state("MX.dane.test", 25).await;
    assert_eq!(first, second);
    (first, fake.calls.load(Ordering::SeqCst))
}

/// Usable records found under `_25._tcp.mx.dane.test`.
fn usable(records: Vec<Tlsa>) -> DaneState {
    DaneState::Usable {
        records: Arc::new(records),
        base: "mx.dane.test".into(),
    }
}

fn records(records: Vec<Tlsa>, secure: bool, ttl: u64) -> Result<TlsaAnswer, DnssecError> {
    Ok(TlsaAnswer::Records {
        records,
        secure,
        ttl: Duration::from_secs(ttl),
    })
}

#[tokio::test]
async fn states_follow_rfc_7672_and_answers_are_cached_by_ttl() {
    let ee = rec(3, 1, 1, vec![1; 32]);
    let pkix = rec(1, 1, 1, vec![1; 32]);
    let (s, calls) = state_twice(records(vec![ee.clone(), pkix.clone()], true, 300)).await;
    assert_eq!(s, usable(vec![ee.clone()]));
    assert_eq!(calls, 1, "a secure answer is cached for its TTL");
    let (s, calls) = state_twice(records(vec![pkix, rec(3, 1, 9, vec![])], true, 300)).await;
    assert_eq!((s, calls), (DaneState::Unusable, 1));
    let (s, _) = state_twice(records(vec![ee.clone()], false, 300)).await;
    assert_eq!(s, DaneState::None, "insecure records are not used");
    let (s, calls) = state_twice(records(vec![ee], true, 0)).await;
    assert!(matches!(s, DaneState::Usable { .. }));
    assert_eq!(calls, 2, "a zero TTL is not cached");
    let none = Ok(TlsaAnswer::NoRecords {
        ttl: Duration::from_secs(60),
    });
    assert_eq!(state_twice(none).await, (DaneState::None, 1));
    let (s, calls) = state_twice(Err(DnssecError("bogus".into()))).await;
    assert!(
        matches!(s, DaneState::Failed(ref w) if w.contains("bogus")),
        "{s:?}"
    );
    assert_eq!(calls, 2, "failures are not cached");
}

#[test]
fn trust_anchor_files_are_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anchor.key");
    std::fs::write(
        &path,
        "; a comment\ndane.test.\t3600\tIN\tDNSKEY\t257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0d xCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ== ;{id = 1}\n",
    )
    .unwrap();
    let (anchors, zones) = super::lookup::load_trust_anchor(&path).unwrap();
    assert_eq!((anchors.len(), zones), (1, vec!["dane.test".to_string()]));
    std::fs::write(&path, "; nothing\n").unwrap();
    assert!(super::lookup::load_trust_anchor(&path).is_err());
    std::fs::write(&path, "x. IN DNSKEY 257 3\n").unwrap();
    assert!(super::lookup::load_trust_anchor(&path).is_err());
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dnssec {
    Secure,
    Insecure,
    Bogus,
}

fn mx_answer(d: Dnssec) -> Result<MxAnswer, DnssecError> {
    match d {
        Dnssec::Bogus => Err(DnssecError("MX RRSIG does not verify".into())),
        _ => Ok(MxAnswer {
            hosts: vec!["mx.dane.test".into()],
            secure: d == Dnssec::Secure,
        }),
    }
}

/// RFC 7672 2.2.1 and 2.2.2: MX RRset × address records × TLSA records.
#[tokio::test]
async fn tlsa_counts_only_under_a_secure_mx_and_secure_addresses() {
    use Dnssec::*;
    let ee = rec(3, 1, 1, vec![1; 32]);
    for mx in [Secure, Insecure, Bogus] {
        for addr in [Secure, Insecure, Bogus] {
            for tlsa in [true, false] {
                let answer = match tlsa {
                    true => records(vec![ee.clone()], true, 300),
                    false => Ok(TlsaAnswer::NoRecords {
                        ttl: Duration::from_secs(60),
                    }),
                };
                let fake = Arc::new(Fake {
                    mx: mx_answer(mx),
                    addresses: match addr {
                        Bogus => Err(DnssecError("A RRSIG expired".into())),
                        Secure => Ok(Some("mx.dane.test".into())),
                        Insecure => Ok(None),
                    },
                    ..Arc::into_inner(Fake::new(answer)).unwrap()
                });
                let dane = Dane::new(Arc::clone(&fake) as Arc<dyn SecureDns>);
                let status = dane.mx_status("dane.test").await;
                let state = dane
                    .host_state(&status, "dane.test", "MX.dane.test", 25)
                    .await;
                let case = format!("MX {mx:?}, addresses {addr:?}, TLSA {tlsa}: {state:?}");
                let looked_up = fake.calls.load(Ordering::SeqCst) > 0;
                match (mx, addr) {
                    (Bogus, _) => assert!(
                        matches!(&state, DaneState::Failed(w) if w.contains("MX lookup for dane.test")),
                        "{case}"
                    ),
                    (Insecure, _) => assert_eq!(state, DaneState::None, "{case}"),
                    (Secure, Bogus) => assert!(
                        matches!(&state, DaneState::Failed(w) if w.contains("address lookup")),
                        "{case}"
                    ),
                    (Secure, Insecure) => assert_eq!(state, DaneState::None, "{case}"),
                    (Secure, Secure) if tlsa => {
                        assert_eq!(state, usable(vec![ee.clone()]), "{case}")
                    }
                    (Secure, Secure) => assert_eq!(state, DaneState::None, "{case}"),
                }
                // TLSA records are looked up only for a secure name with secure addresses.
                assert_eq!(looked_up, (mx, addr) == (Secure, Secure), "{case}");
            }
        }
    }
}

#[tokio::test]
async fn mx_hosts_must_be_in_the_secure_rrset() {
    let fake = Fake::new(records(vec![rec(3, 1, 1, vec![1; 32])], true, 300));
    let dane = Dane::new(Arc::clone(&fake) as Arc<dyn SecureDns>);
    let secure = MxStatus::Secure(vec!["mx.dane.test".into()]);
    // A host the unvalidated lookup gave but the secure RRset does not name.
    let s = dane.host_state(&secure, "dane.test", "evil.test", 25).await;
    assert!(
        matches!(&s, DaneState::Failed(w) if w.contains("not in the DNSSEC-validated MX RRset")),
        "{s:?}"
    );
    // No MX records, securely: the domain itself is the host (RFC 7672 2.2.2).
    let none = MxStatus::Secure(Vec::new());
    let s = dane
        .host_state(&none, "mx.dane.test", "mx.dane.test.", 25)
        .await;
    assert!(matches!(s, DaneState::Usable { .. }), "{s:?}");
    let s = dane
        .host_state(&none, "dane.test", "mx.dane.test", 25)
        .await;
    assert!(matches!(s, DaneState::Failed(_)), "{s:?}");
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        1,
        "only the trusted host's TLSA"
    );
    let failed = MxStatus::Failed("SERVFAIL".into());
    let s = dane
        .host_state(&failed, "dane.test", "mx.dane.test", 25)
        .await;
    assert_eq!(s, DaneState::Failed("SERVFAIL".into()));
}
