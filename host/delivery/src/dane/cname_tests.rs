//! The TLSA base domain of an MX host that is an alias (RFC 7672 2.2.3) and the names a
//! DANE-TA(2) chain may be issued for (RFC 7672 3.2.2).

use super::verify::DaneVerifier;
use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

const MX: &str = "mx.dane.test";
const TARGET: &str = "target.hosting.test";

/// A validated DNS where `mx.dane.test` is a secure alias of `address_name`, with the TLSA
/// answers of `tlsa` by TLSA name (any other name: a lookup the test did not expect).
struct Fake {
    address_name: Option<String>,
    tlsa: HashMap<String, Result<TlsaAnswer, DnssecError>>,
    looked_up: Mutex<Vec<String>>,
}

#[async_trait]
impl SecureDns for Fake {
    async fn tlsa(&self, name: &str) -> Result<TlsaAnswer, DnssecError> {
        self.looked_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
        match self.tlsa.get(name) {
            Some(answer) => answer.clone(),
            None => panic!("unexpected TLSA lookup of {name}"),
        }
    }

    async fn mx(&self, _domain: &str) -> Result<MxAnswer, DnssecError> {
        Ok(MxAnswer {
            hosts: vec![MX.into()],
            secure: true,
        })
    }

    async fn address_name(&self, host: &str) -> Result<Option<String>, DnssecError> {
        assert_eq!(host, MX);
        Ok(self.address_name.clone())
    }
}

fn ee(byte: u8) -> Tlsa {
    Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![byte; 32],
    }
}

fn found(records: Vec<Tlsa>, secure: bool) -> Result<TlsaAnswer, DnssecError> {
    Ok(TlsaAnswer::Records {
        records,
        secure,
        ttl: Duration::from_secs(300),
    })
}

fn nothing() -> Result<TlsaAnswer, DnssecError> {
    Ok(TlsaAnswer::NoRecords {
        ttl: Duration::from_secs(60),
    })
}

/// The state of MX host `mx.dane.test`, its addresses at `address_name`, with these TLSA
/// answers at the target and at the MX host name (`None`: not expected to be asked); and the
/// TLSA names looked up, in order.
async fn host_state(
    address_name: &str,
    at_target: Option<Result<TlsaAnswer, DnssecError>>,
    at_mx: Option<Result<TlsaAnswer, DnssecError>>,
) -> (DaneState, Vec<String>) {
    let mut tlsa = HashMap::new();
    if let Some(a) = at_target {
        tlsa.insert(format!("_25._tcp.{TARGET}"), a);
    }
    if let Some(a) = at_mx {
        tlsa.insert(format!("_25._tcp.{MX}"), a);
    }
    let fake = Arc::new(Fake {
        address_name: Some(address_name.into()),
        tlsa,
        looked_up: Mutex::default(),
    });
    let dane = Dane::new(Arc::clone(&fake) as Arc<dyn SecureDns>);
    let mx = MxStatus::Secure(vec![MX.into()]);
    let state = dane.host_state(&mx, "dane.test", MX, 25).await;
    let looked_up = fake.looked_up.lock().unwrap().clone();
    (state, looked_up)
}

fn usable(records: Vec<Tlsa>, base: &str) -> DaneState {
    DaneState::Usable {
        records: Arc::new(records),
        base: base.into(),
    }
}

#[tokio::test]
async fn the_cname_target_is_looked_up_first() {
    let at_target = format!("_25._tcp.{TARGET}");
    let at_mx = format!("_25._tcp.{MX}");
    // Records at the target decide; the MX host name's are not asked for.
    let (s, names) = host_state(TARGET, Some(found(vec![ee(1)], true)), None).await;
    assert_eq!(s, usable(vec![ee(1)], TARGET));
    assert_eq!(names, std::slice::from_ref(&at_target));
    // None at the target (NXDOMAIN or NODATA): the MX host name's, which is then the base.
    let (s, names) = host_state(TARGET, Some(nothing()), Some(found(vec![ee(2)], true))).await;
    assert_eq!(s, usable(vec![ee(2)], MX));
    assert_eq!(names, [at_target.clone(), at_mx.clone()]);
    // Insecure records at the target count as none there.
    let (s, _) = host_state(
        TARGET,
        Some(found(vec![ee(1)], false)),
        Some(found(vec![ee(2)], true)),
    )
    .await;
    assert_eq!(s, usable(vec![ee(2)], MX));
    // None at either: DANE does not apply.
    let (s, names) = host_state(TARGET, Some(nothing()), Some(nothing())).await;
    assert_eq!((s, names.len()), (DaneState::None, 2));
    // Only unusable records at the target: they are records, TLS without authentication.
    let pkix = Tlsa { usage: 1, ..ee(1) };
    let (s, names) = host_state(TARGET, Some(found(vec![pkix], true)), None).await;
    assert_eq!((s, names), (DaneState::Unusable, vec![at_target.clone()]));
    // A failed lookup at the target is a failure, not "no records" (RFC 7672 2.2).
    let bogus = Err(DnssecError("TLSA RRSIG expired".into()));
    let (s, names) = host_state(TARGET, Some(bogus), None).await;
    assert!(
        matches!(&s, DaneState::Failed(w) if w.contains(&at_target)),
        "{s:?}"
    );
    assert_eq!(names, [at_target]);
    // No alias (the addresses are at the MX host name itself): one lookup there.
    let (s, names) = host_state("MX.dane.test", None, Some(found(vec![ee(3)], true))).await;
    assert_eq!((s, names), (usable(vec![ee(3)], MX), vec![at_mx]));
}

#[tokio::test]
async fn an_insecure_chain_gets_no_tlsa_lookup() {
    let fake = Arc::new(Fake {
        address_name: None,
        tlsa: HashMap::new(),
        looked_up: Mutex::default(),
    });
    let dane = Dane::new(Arc::clone(&fake) as Arc<dyn SecureDns>);
    let mx = MxStatus::Secure(vec![MX.into()]);
    assert_eq!(
        dane.host_state(&mx, "dane.test", MX, 25).await,
        DaneState::None
    );
    assert!(fake.looked_up.lock().unwrap().is_empty());
}

/// A CA, and a leaf it issued for `names`: (leaf, the chain the server sends after it, the
/// DANE-TA `2 1 1` record of the CA).
fn issued(names: &[&str]) -> (CertificateDer<'static>, Vec<CertificateDer<'static>>, Tlsa) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &ca_key.public_key_der());
    let record = Tlsa {
        usage: 2,
        selector: 1,
        matching: 1,
        data: digest.as_ref().to_vec(),
    };
    (leaf.der().clone(), vec![ca.der().clone()], record)
}

/// Whether a verifier with reference identifiers `refs` accepts a DANE-TA chain for `names`.
fn accepts(refs: &[&str], names: &[&str]) -> bool {
    let (leaf, chain, record) = issued(names);
    let v = DaneVerifier::new(Arc::new(vec![record]), refs);
    // The SNI name the session used does not matter: the verifier's names do.
    let sni = ServerName::try_from("sni.elsewhere.test").unwrap();
    v.verify_server_cert(&leaf, &chain, &sni, &[], UnixTime::now())
        .is_ok()
}

/// RFC 7672 3.2.2: the TLSA base domain, and the MX host name it was expanded from.
#[test]
fn dane_ta_accepts_the_base_domain_and_the_mx_host_name() {
    let refs = [TARGET, MX];
    assert!(accepts(&refs, &[TARGET]));
    assert!(accepts(&refs, &[MX]));
    assert!(accepts(&refs, &["other.test", "MX.dane.test"]));
    // A wildcard matches the first label only.
    assert!(accepts(&refs, &["*.hosting.test"]));
    assert!(!accepts(&refs, &["*.test"]));
    // Not the recipient domain, nor any other name.
    assert!(!accepts(&refs, &["dane.test"]));
    assert!(!accepts(&refs, &["other.test"]));
    // Without an alias the MX host name is the base domain and the only name.
    assert!(accepts(&[MX, MX], &[MX]));
    assert!(!accepts(&[MX, MX], &[TARGET]));
    // Names that are not DNS names are no reference identifiers.
    assert!(!accepts(&["127.0.0.1"], &["127.0.0.1"]));
}
