//! DKIM sign and verify per message, 1 KB and 100 KB, ed25519 and RSA-2048; the key record
//! comes from the cache (no DNS), as for a busy server.

use corvid_auth::keys::DkimPrivateKey;
use corvid_auth::{
    AuthChecksConfig, Authenticator, DkimConfig, DkimKeyConfig, KeyAlgorithm, Signer,
    SigningChoice, Utc,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::PathBuf;

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: Alice <alice@bench.test>\r\nTo: bob@corvid.test\r\nSubject: bench\r\nDate: Mon, 07 Dec 2026 00:00:00 +0000\r\nMessage-ID: <1@bench.test>\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

fn setup(alg: KeyAlgorithm) -> (Signer, Authenticator) {
    let key = DkimPrivateKey::generate(alg).expect("key");
    let pem = key.to_pkcs8_pem();
    let cfg = DkimConfig {
        key: vec![DkimKeyConfig {
            domain: "bench.test".into(),
            selector: "b".into(),
            algorithm: alg,
            key_file: PathBuf::from("unused"),
            generate: false,
            start: None,
            stop: None,
        }],
        ..Default::default()
    };
    let signer = Signer::new(&cfg, |_| Ok(pem.clone().into_bytes())).expect("signer");
    let auth = Authenticator::new(AuthChecksConfig {
        // Nothing answers here: only the cached key record is used by DKIM.
        nameservers: vec!["127.0.0.1:9".parse().expect("addr")],
        ..Default::default()
    })
    .expect("auth");
    auth.seed_dkim_key("bench.test", "b", &key.dns_record())
        .expect("seed");
    auth.seed_dmarc_record("bench.test", "v=DMARC1; p=reject")
        .expect("seed");
    (signer, auth)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    for (name, alg) in [
        ("ed25519", KeyAlgorithm::Ed25519),
        ("rsa2048", KeyAlgorithm::Rsa),
    ] {
        let (signer, auth) = setup(alg);
        let mut g = c.benchmark_group(format!("dkim_{name}"));
        for size in [1024usize, 100 * 1024] {
            let msg = message(size);
            g.throughput(Throughput::Bytes(msg.len() as u64));
            g.bench_with_input(BenchmarkId::new("sign", size), &msg, |b, m| {
                b.iter(|| {
                    signer
                        .sign(m, &SigningChoice::default(), Utc::now())
                        .expect("sign")
                })
            });
            let out = signer
                .sign(&msg, &SigningChoice::default(), Utc::now())
                .expect("sign");
            let mut signed = out.headers.into_bytes();
            signed.extend_from_slice(&msg);
            g.bench_with_input(BenchmarkId::new("verify", size), &signed, |b, m| {
                b.iter(|| {
                    let r = rt.block_on(auth.check_dkim(m));
                    assert_eq!(r[0].result, corvid_auth::DkimVerdict::Pass);
                })
            });
            // Everything of end of DATA: DKIM, ARC, DMARC (records from the cache).
            g.bench_with_input(BenchmarkId::new("check_message", size), &signed, |b, m| {
                b.iter(|| {
                    let r = rt.block_on(auth.check_message(m, None));
                    assert_eq!(r.dmarc.result, corvid_auth::DmarcVerdict::Pass);
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
