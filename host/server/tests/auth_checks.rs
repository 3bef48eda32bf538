//! Mail authentication in the session (`session/auth_checks.rs`), against a fake `MailAuth`:
//! who is checked and who is signed, the default DMARC verdict and how a policy overrides it,
//! what the policy is told, and that signing comes after the policy's modifications.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use async_trait::async_trait;
use common::*;
use corvid_types::*;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const TX: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n";
const BODY: &[u8] = b"From: a@b.test\r\nSubject: s\r\n\r\nhi\r\n.\r\n";

/// A checker whose DMARC result is a `p=reject` failure, and a signer that records its input.
#[derive(Default)]
struct FakeAuth {
    calls: Mutex<Vec<String>>,
    /// ARC sealing configured, and the (local) domain a route sends away.
    seal: bool,
    routed: Option<&'static str>,
}

fn results() -> AuthResults {
    AuthResults {
        spf: None,
        dkim: vec![],
        dmarc: DmarcCheck {
            result: DmarcVerdict::Fail,
            from_domain: "b.test".into(),
            policy: DmarcPolicy::Reject,
            pct: 100,
            spf_aligned: false,
            dkim_aligned: false,
            reason: None,
        },
        arc: ArcCheck {
            result: ArcVerdict::None,
            sets: 0,
            reason: None,
        },
    }
}

#[async_trait]
impl MailAuth for FakeAuth {
    fn checks(&self, trusted: bool) -> bool {
        !trusted
    }
    fn signs(&self) -> bool {
        true
    }
    async fn check_spf(&self, conn: &ConnectionInfo, sender: Option<&Address>) -> SpfCheck {
        let from = sender.map(|a| a.to_string()).unwrap_or_default();
        self.calls.lock().unwrap().push(format!("spf {from}"));
        SpfCheck {
            result: SpfVerdict::Fail,
            identity: SpfIdentity::Mailfrom,
            domain: "b.test".into(),
            mail_from: from,
            helo: conn.helo.clone().unwrap_or_default(),
            client_ip: conn.peer_addr.ip(),
            explanation: None,
        }
    }
    async fn check_message(&self, content: &[u8], spf: Option<&SpfCheck>) -> AuthResults {
        let first = String::from_utf8_lossy(content.split(|&b| b == b'\n').next().unwrap_or(b""))
            .trim_end()
            .to_string();
        self.calls.lock().unwrap().push(format!(
            "message spf={} first={first}",
            spf.map_or("-", |s| s.result.as_str())
        ));
        AuthResults {
            spf: spf.cloned(),
            ..results()
        }
    }
    fn default_verdict(&self, _results: &AuthResults) -> Verdict {
        Verdict::Reject(Reply::new(550, "5.7.1", "DMARC policy of b.test"))
    }
    fn stamp(&self, content: &[u8], _results: &AuthResults) -> Vec<u8> {
        [
            b"Authentication-Results: mx.test; dmarc=fail\r\n".as_slice(),
            content,
        ]
        .concat()
    }
    fn strip_forged(&self, content: &mut Vec<u8>) {
        let forged = b"Authentication-Results: mx.test; forged\r\n";
        if content.starts_with(forged) {
            content.drain(..forged.len());
        }
    }
    fn sign(&self, content: &[u8], choice: &SigningChoice) -> String {
        let subject = String::from_utf8_lossy(content).contains("Subject: changed");
        self.calls.lock().unwrap().push(format!(
            "sign domain={:?} sees_modification={subject}",
            choice.domain
        ));
        "DKIM-Signature: fake\r\n".into()
    }
    fn seals(&self) -> bool {
        self.seal
    }
    fn routes_away(&self, domain: &str) -> bool {
        self.routed == Some(domain)
    }
    async fn arc_seal(&self, content: &[u8], results: &AuthResults, ip: IpAddr) -> String {
        let text = String::from_utf8_lossy(content);
        self.calls.lock().unwrap().push(format!(
            "seal arc={} ip={ip} sees_modification={} ar_first={}",
            results.arc.result.as_str(),
            text.contains("Subject: changed"),
            text.starts_with("Authentication-Results: mx.test;")
        ));
        "ARC-Seal: fake\r\n".into()
    }
}

/// A policy with a fixed data verdict and signing request, recording what it is told.
#[derive(Clone)]
struct Told {
    data: Verdict,
    rcpt: Verdict,
    signing: SigningRequest,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Policy for Told {
    fn session(&self, _conn: &ConnectionInfo) -> Box<dyn PolicySession> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl PolicySession for Told {
    async fn rcpt(&mut self, _c: &ConnectionInfo, _e: &Envelope, _r: &Recipient) -> Decision {
        decision(self.rcpt.clone(), vec![])
    }
    async fn data(&mut self, _c: &ConnectionInfo, _e: &Envelope, m: MessageView<'_>) -> Decision {
        let ar = m.content.starts_with(b"Authentication-Results: mx.test;");
        self.seen
            .lock()
            .unwrap()
            .push(format!("data sees A-R={ar}"));
        let change = Modification::ChangeHeader {
            name: "Subject".into(),
            index: 0,
            value: "changed".into(),
        };
        decision(self.data.clone(), vec![change])
    }
    fn auth_results(&mut self, spf: Option<&SpfCheck>, message: Option<&AuthResults>) {
        self.seen.lock().unwrap().push(format!(
            "results spf={} message={}",
            spf.map_or("-", |s| s.result.as_str()),
            message.map_or("-", |m| m.dmarc.result.as_str())
        ));
    }
    fn signing(&mut self) -> SigningRequest {
        self.signing.clone()
    }
}

async fn run(h: &Harness, told: &Told, auth: &Arc<FakeAuth>) -> String {
    run_tx(h, told, auth, TX).await
}

async fn run_tx(h: &Harness, told: &Told, auth: &Arc<FakeAuth>, tx: &[u8]) -> String {
    let fake: Arc<dyn MailAuth> = auth.clone();
    run_with(h, told, Some(fake), tx).await
}

async fn run_with(h: &Harness, told: &Told, auth: Option<Arc<dyn MailAuth>>, tx: &[u8]) -> String {
    let mut h2 = Harness {
        policy: Arc::new(told.clone()),
        relay_networks: h.relay_networks.clone(),
        intake: h.intake.clone(),
        limits: h.limits.clone(),
        ..Harness::default()
    };
    h2.peer = h.peer;
    let mut shared = Arc::into_inner(h2.shared()).expect("one owner");
    shared.mail_auth = auth;
    h2.run_on(Arc::new(shared), &[tx, BODY]).await
}

fn told(data: Verdict, signing: SigningRequest) -> Told {
    Told {
        data,
        rcpt: Verdict::Continue,
        signing,
        seen: Arc::default(),
    }
}

#[tokio::test]
async fn untrusted_client_is_checked_and_the_default_dmarc_reject_applies() {
    let h = Harness::default();
    let auth = Arc::new(FakeAuth::default());
    let t = told(Verdict::Continue, SigningRequest::Default);
    let out = run(&h, &t, &auth).await;
    assert_eq!(codes(&out), ["220", "250", "250", "250", "354", "550"]);
    assert!(out.contains("550 5.7.1 DMARC policy of b.test"), "{out}");
    assert!(h.intake.messages().is_empty());
    // SPF at MAIL, then the checks on the content as received (no A-R of ours yet).
    let calls = auth.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        ["spf a@b.test", "message spf=fail first=From: a@b.test"]
    );
    // The policy hears SPF before MAIL and everything before DATA, and sees our A-R field.
    let seen = t.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "results spf=fail message=-",
            "results spf=fail message=fail",
            "data sees A-R=true"
        ]
    );
}

#[tokio::test]
async fn an_explicit_accept_at_data_overrides_the_default_and_mail_is_stamped_not_signed() {
    let h = Harness::default();
    let auth = Arc::new(FakeAuth::default());
    let out = run(&h, &told(Verdict::Accept, SigningRequest::Default), &auth).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
    let stored = h.intake.messages();
    let content = String::from_utf8_lossy(&stored[0].1).into_owned();
    let after_received = content.split_once("Authentication-Results:").map(|x| x.1);
    assert!(after_received.is_some(), "{content}");
    assert!(!content.contains("DKIM-Signature"), "{content}");
    assert!(!auth
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.starts_with("sign")));
}

#[tokio::test]
async fn a_quarantine_or_reject_of_the_policy_wins_over_the_default() {
    let h = Harness::default();
    let auth = Arc::new(FakeAuth::default());
    let t = told(
        Verdict::Quarantine("p: look".into()),
        SigningRequest::Default,
    );
    let out = run(&h, &t, &auth).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
    assert_eq!(h.intake.messages()[0].2.hold.as_deref(), Some("p: look"));
}

#[tokio::test]
async fn trusted_client_is_signed_after_the_modifications_and_never_checked() {
    let mut h = Harness::default();
    h.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let auth = Arc::new(FakeAuth::default());
    let t = told(Verdict::Continue, SigningRequest::Default);
    let out = run(&h, &t, &auth).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
    let content = String::from_utf8_lossy(&h.intake.messages()[0].1).into_owned();
    let (trace, rest) = content
        .split_once("\r\nDKIM-Signature: fake\r\n")
        .expect("signed");
    assert!(trace.starts_with("Received:"), "{content}");
    assert!(rest.contains("Subject: changed") && !content.contains("Authentication-Results"));
    assert_eq!(
        auth.calls.lock().unwrap().clone(),
        ["sign domain=None sees_modification=true"]
    );
    assert!(t
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|s| !s.starts_with("results")));
}

#[tokio::test]
async fn a_policy_may_choose_the_signing_domain_or_suppress_signing() {
    let mut h = Harness::default();
    h.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let auth = Arc::new(FakeAuth::default());
    let choice = SigningChoice {
        domain: Some("other.test".into()),
        selector: None,
    };
    let t = told(Verdict::Continue, SigningRequest::Choose(choice));
    run(&h, &t, &auth).await;
    let t = told(Verdict::Continue, SigningRequest::Suppress);
    run(&h, &t, &auth).await;
    let stored = h.intake.messages();
    assert!(String::from_utf8_lossy(&stored[0].1).contains("DKIM-Signature: fake"));
    assert!(!String::from_utf8_lossy(&stored[1].1).contains("DKIM-Signature"));
    assert_eq!(
        auth.calls.lock().unwrap().clone(),
        ["sign domain=Some(\"other.test\") sees_modification=true"]
    );
}

fn sealing(routed: Option<&'static str>) -> Arc<FakeAuth> {
    Arc::new(FakeAuth {
        seal: true,
        routed,
        ..FakeAuth::default()
    })
}

fn seal_calls(auth: &FakeAuth) -> Vec<String> {
    let calls = auth.calls.lock().unwrap();
    calls
        .iter()
        .filter(|c| c.starts_with("seal"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn forwarded_mail_is_arc_sealed_last_and_local_or_trusted_mail_is_not() {
    let h = Harness::default();
    let accept = told(Verdict::Accept, SigningRequest::Default);
    // alice@local.test is a local mailbox, delivered here: not forwarded.
    let auth = sealing(None);
    run(&h, &accept, &auth).await;
    assert!(seal_calls(&auth).is_empty());

    // The same local domain with a route to another host: forwarded, sealed after the
    // policy's modification, with the chain result of the end of DATA, over our A-R field.
    let auth = sealing(Some("local.test"));
    let out = run(&h, &accept, &auth).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
    assert_eq!(
        seal_calls(&auth),
        ["seal arc=none ip=127.0.0.2 sees_modification=true ar_first=true"]
    );
    let content = String::from_utf8_lossy(&h.intake.messages()[1].1).into_owned();
    let (trace, rest) = content
        .split_once("\r\nARC-Seal: fake\r\n")
        .expect("sealed");
    assert!(trace.starts_with("Received:"), "{content}");
    assert!(
        rest.starts_with("Authentication-Results: mx.test;"),
        "{content}"
    );

    // A recipient of another domain that a policy accepted: forwarded.
    let mut remote = told(Verdict::Accept, SigningRequest::Default);
    remote.rcpt = Verdict::Accept;
    let far = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@far.test>\r\nDATA\r\n";
    let auth = sealing(None);
    let out = run_tx(&h, &remote, &auth, far).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
    assert_eq!(seal_calls(&auth).len(), 1);

    // A trusted client's mail to another domain is signed, never checked nor sealed.
    let mut trusted = Harness::default();
    trusted.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let auth = sealing(None);
    let out = run_tx(&trusted, &accept, &auth, far).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
    assert!(seal_calls(&auth).is_empty());
    let content = String::from_utf8_lossy(&trusted.intake.messages()[0].1).into_owned();
    assert!(content.contains("DKIM-Signature: fake") && !content.contains("ARC-Seal"));
}

#[tokio::test]
async fn the_copy_for_the_authentication_fields_is_charged_to_the_memory_budget() {
    // Room for the message as received, not for a second copy with our fields: 452 4.3.1.
    let mut h = Harness::default();
    h.limits.max_inflight_bytes = 4096;
    let auth = Arc::new(FakeAuth::default());
    let t = told(Verdict::Accept, SigningRequest::Default);
    let out = run(&h, &t, &auth).await;
    assert_eq!(codes(&out).last(), Some(&"452"), "{out}");
    assert!(out.contains("452 4.3.1"), "{out}");
    assert!(h.intake.messages().is_empty());
    // The same budget holds the message when nothing copies it (no mail authentication).
    let out = run_with(&h, &t, None, TX).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
    // And with room for the copy, the checked message is taken.
    let mut roomy = Harness::default();
    roomy.limits.max_inflight_bytes = 16 * 1024;
    let out = run(&roomy, &t, &auth).await;
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
}
