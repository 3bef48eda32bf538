//! Library round trips without a network: keys and DMARC records come from the cache, the
//! configured nameserver answers nothing.

use corvid_auth::keys::DkimPrivateKey;
use corvid_auth::*;
use std::path::PathBuf;
use std::time::Duration;

const MSG: &[u8] =
    b"From: Alice <alice@rt.test>\r\nTo: bob@corvid.test\r\nSubject: hi\r\n\r\nbody\r\n";

fn setup(alg: KeyAlgorithm) -> (Signer, Authenticator) {
    let key = DkimPrivateKey::generate(alg).expect("key");
    let pem = key.to_pkcs8_pem();
    let cfg = DkimConfig {
        key: vec![DkimKeyConfig {
            domain: "rt.test".into(),
            selector: "k".into(),
            algorithm: alg,
            key_file: PathBuf::from("k.pem"),
            generate: false,
            start: None,
            stop: None,
        }],
        ..Default::default()
    };
    let signer = Signer::new(&cfg, |p| {
        assert_eq!(p, std::path::Path::new("k.pem"));
        Ok(pem.clone().into_bytes())
    })
    .expect("signer");
    let auth = Authenticator::new(AuthChecksConfig {
        nameservers: vec!["127.0.0.1:9".parse().expect("addr")],
        dns_timeout: Duration::from_millis(200),
        max_dkim_signatures: 3,
        ..Default::default()
    })
    .expect("auth");
    auth.seed_dkim_key("rt.test", "k", &key.dns_record())
        .expect("seed");
    auth.seed_dmarc_record("rt.test", "v=DMARC1; p=reject")
        .expect("seed");
    (signer, auth)
}

fn signed(signer: &Signer, msg: &[u8]) -> Vec<u8> {
    let out = signer
        .sign(msg, &SigningChoice::default(), Utc::now())
        .expect("sign");
    assert_eq!(out.domain.as_deref(), Some("rt.test"));
    let mut m = out.headers.into_bytes();
    m.extend_from_slice(msg);
    m
}

#[tokio::test]
async fn sign_then_verify_pass_dmarc_pass_and_tampering_fails_to_reject() {
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::Rsa] {
        let (signer, auth) = setup(alg);
        let m = signed(&signer, MSG);
        let r = auth.check_message(&m, None).await;
        assert_eq!(r.dkim.len(), 1);
        assert_eq!(r.dkim[0].result, DkimVerdict::Pass, "{r:?}");
        assert_eq!(r.dmarc.result, DmarcVerdict::Pass);
        assert!(r.dmarc.dkim_aligned);
        assert_eq!(decide(&r, DmarcEnforcement::Enforce, 0), AuthAction::Accept);

        let tampered: Vec<u8> = String::from_utf8(m.clone())
            .expect("utf8")
            .replace("body", "BODY")
            .into_bytes();
        let r = auth.check_message(&tampered, None).await;
        assert_eq!(r.dkim[0].result, DkimVerdict::Fail);
        assert_eq!(r.dmarc.result, DmarcVerdict::Fail);
        assert_eq!(r.dmarc.policy, DmarcPolicy::Reject);
        assert!(matches!(
            decide(&r, DmarcEnforcement::Enforce, 0),
            AuthAction::Reject { code: 550, .. }
        ));
        let h = authentication_results("mx.corvid.test", &r);
        assert!(h.contains("dkim=fail"), "{h}");
    }
}

#[tokio::test]
async fn signatures_over_the_limit_are_not_checked() {
    let (signer, auth) = setup(KeyAlgorithm::Ed25519);
    let mut m = MSG.to_vec();
    for _ in 0..5 {
        m = signed(&signer, &m);
    }
    let r = auth.check_dkim(&m).await;
    let v: Vec<DkimVerdict> = r.iter().map(|c| c.result).collect();
    assert_eq!(
        v,
        vec![
            DkimVerdict::Pass,
            DkimVerdict::Pass,
            DkimVerdict::Pass,
            DkimVerdict::NotChecked,
            DkimVerdict::NotChecked
        ]
    );
}

#[tokio::test]
async fn dns_silence_is_temperror_and_garbage_is_not_a_panic() {
    let (_, auth) = setup(KeyAlgorithm::Ed25519);
    let other = b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=silent.test; s=x; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\nFrom: a@silent.test\r\n\r\n";
    let t = std::time::Instant::now();
    let r = auth.check_message(other, None).await;
    eprintln!("message checks with silent DNS: {:?}", t.elapsed());
    assert_eq!(r.dkim[0].result, DkimVerdict::Temperror, "{r:?}");
    assert_eq!(r.dmarc.result, DmarcVerdict::Temperror, "{r:?}");
    let spf = auth
        .check_spf(
            "192.0.2.1".parse().expect("ip"),
            "h.test",
            "a@silent.test",
            "mx",
        )
        .await;
    eprintln!("spf with silent DNS: {:?}", t.elapsed());
    assert_eq!(spf.result, SpfVerdict::Temperror);
    for junk in [
        &b""[..],
        b"\0\0\0",
        b"DKIM-Signature: ;;;\r\n\r\n",
        b":\r\n\r\n",
    ] {
        let _ = auth.check_message(junk, None).await;
    }
}

#[test]
fn rotation_dates_and_wrong_algorithm_are_checked_at_load() {
    let key = DkimPrivateKey::generate(KeyAlgorithm::Ed25519).expect("key");
    let pem = key.to_pkcs8_pem();
    let entry = |sel: &str, start: Option<&str>, stop: Option<&str>| DkimKeyConfig {
        domain: "rt.test".into(),
        selector: sel.into(),
        algorithm: KeyAlgorithm::Ed25519,
        key_file: PathBuf::from("k.pem"),
        generate: false,
        start: start.map(str::to_string),
        stop: stop.map(str::to_string),
    };
    let cfg = DkimConfig {
        key: vec![
            entry("a", None, Some("2030-01-01")),
            entry("b", Some("2029-06-01T00:00:00Z"), None),
        ],
        ..Default::default()
    };
    let signer = Signer::new(&cfg, |_| Ok(pem.clone().into_bytes())).expect("signer");
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("date")
            .with_timezone(&Utc)
    };
    let sels = |t| {
        signer
            .sign(MSG, &SigningChoice::default(), t)
            .expect("sign")
            .selectors
    };
    assert_eq!(sels(at("2029-01-01T00:00:00Z")), vec!["a"]);
    assert_eq!(sels(at("2029-07-01T00:00:00Z")), vec!["a", "b"]);
    assert_eq!(sels(at("2030-01-01T00:00:00Z")), vec!["b"]);

    let bad_date = DkimConfig {
        key: vec![entry("a", Some("soon"), None)],
        ..Default::default()
    };
    assert!(matches!(
        Signer::new(&bad_date, |_| Ok(pem.clone().into_bytes())),
        Err(AuthError::Date { .. })
    ));
    let mut wrong = entry("a", None, None);
    wrong.algorithm = KeyAlgorithm::Rsa;
    let wrong = DkimConfig {
        key: vec![wrong],
        ..Default::default()
    };
    assert!(matches!(
        Signer::new(&wrong, |_| Ok(pem.clone().into_bytes())),
        Err(AuthError::Key { .. })
    ));
}

/// Polls `f` once: its output when it finished without waiting, `None` when it would wait.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// With every record in the cache (a busy server), SPF at MAIL and the checks at the end of
/// DATA neither query DNS, nor wait on a timer, nor hand work to another thread: each finishes
/// on its first poll, so what they cost is their CPU, the same per message at any concurrency
/// (tests/bench/auth_load.py --latency, --callgrind). A change that made a cached check wait
/// (a resolver or cache per call, a cache key that misses, a spawn_blocking) fails here.
#[tokio::test]
async fn cached_checks_finish_on_their_first_poll() {
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::Rsa] {
        let (signer, auth) = setup(alg);
        let ip: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let check_spf = || auth.check_spf(ip, "client.rt.test", "alice@rt.test", "mx.corvid.test");
        // Not cached: SPF asks the (silent) nameserver, and waits.
        assert!(poll_once(check_spf()).is_none());
        auth.seed_spf_record("rt.test", "v=spf1 ip4:192.0.2.1 -all")
            .expect("seed");
        let spf = poll_once(check_spf()).expect("cached SPF waited");
        assert_eq!(spf.result, SpfVerdict::Pass);
        let m = signed(&signer, MSG);
        let r = poll_once(auth.check_message(&m, Some(&spf))).expect("cached checks waited");
        assert_eq!(r.dkim[0].result, DkimVerdict::Pass, "{r:?}");
        assert_eq!(r.dmarc.result, DmarcVerdict::Pass);
        assert!(r.dmarc.spf_aligned && r.dmarc.dkim_aligned);
        assert_eq!(r.arc.result, ArcVerdict::None);
    }
}
