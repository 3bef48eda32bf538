//! A session harness for transcript tests: an in-memory pipe, a scriptable policy, an
//! in-memory intake that records what it was given, and settings each test may change.
#![allow(dead_code)]

use async_trait::async_trait;
use corvid_server::auth::Credentials;
use corvid_server::tls::{CertPair, TlsHandle};
use corvid_server::{
    run_session, AuthSettings, FlowControl, Limits, ListenerConfig, ListenerMode, ServerConfig,
    Services, Shared,
};
use corvid_types::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One stored message: envelope, content (with the trace header) and the submit options.
pub type Stored = (Envelope, Vec<u8>, SubmitOptions);

#[derive(Default)]
pub struct MemIntake {
    pub stored: Mutex<Vec<Stored>>,
    /// What `Intake::backlog` answers (flow control); `None` by default, as an intake that
    /// does not know.
    pub backlog: Mutex<Option<u64>>,
}

impl MemIntake {
    pub fn messages(&self) -> Vec<Stored> {
        self.stored.lock().unwrap().clone()
    }
}

#[async_trait]
impl Intake for MemIntake {
    fn next_id(&self) -> QueueId {
        QueueId("Q1".into())
    }
    async fn submit_with(
        &self,
        _id: &QueueId,
        env: &Envelope,
        content: &[u8],
        options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        self.stored
            .lock()
            .unwrap()
            .push((env.clone(), content.to_vec(), options.clone()));
        Ok(())
    }
    fn backlog(&self) -> Option<u64> {
        *self.backlog.lock().unwrap()
    }
}

type MailFn = dyn Fn(&Envelope) -> Decision + Send + Sync;
type RcptFn = dyn Fn(&Envelope, &Recipient) -> Decision + Send + Sync;
type DataFn = dyn Fn(&Envelope, &[u8]) -> Decision + Send + Sync;

/// A policy answering with closures; `continue` where none is given.
#[derive(Clone, Default)]
pub struct Script {
    pub mail: Option<Arc<MailFn>>,
    pub rcpt: Option<Arc<RcptFn>>,
    pub data: Option<Arc<DataFn>>,
}

impl Policy for Script {
    fn session(&self, _conn: &ConnectionInfo) -> Box<dyn PolicySession> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl PolicySession for Script {
    async fn mail(&mut self, _c: &ConnectionInfo, env: &Envelope) -> Decision {
        self.mail
            .as_ref()
            .map_or_else(Decision::proceed, |f| f(env))
    }
    async fn rcpt(&mut self, _c: &ConnectionInfo, env: &Envelope, r: &Recipient) -> Decision {
        self.rcpt
            .as_ref()
            .map_or_else(Decision::proceed, |f| f(env, r))
    }
    async fn data(&mut self, _c: &ConnectionInfo, env: &Envelope, m: MessageView<'_>) -> Decision {
        self.data
            .as_ref()
            .map_or_else(Decision::proceed, |f| f(env, m.content))
    }
}

/// Everything a transcript runs with.
pub struct Harness {
    pub limits: Limits,
    pub auth: AuthSettings,
    pub relay_networks: Vec<ipnet::IpNet>,
    pub policy: Arc<dyn Policy>,
    pub credentials: Option<Arc<dyn Credentials>>,
    pub dns: Option<Arc<dyn DnsResolver>>,
    pub listener: ListenerConfig,
    pub peer: std::net::SocketAddr,
    pub intake: Arc<MemIntake>,
    /// Wait for the 220 before sending (false: talk first, a pregreet).
    pub wait_for_greeting: bool,
    /// Certificates for STARTTLS and implicit TLS (see [`test_tls`]); none by default.
    pub tls: Option<Arc<TlsHandle>>,
    /// Flow control (`[queue] flow_*`); the backlog it reads is `intake.backlog`.
    pub flow: FlowControl,
}

impl Default for Harness {
    fn default() -> Self {
        Harness {
            limits: Limits {
                max_errors: 50,
                ..Limits::default()
            },
            auth: AuthSettings {
                failure_delay: std::time::Duration::ZERO,
                ..AuthSettings::default()
            },
            relay_networks: Vec::new(),
            policy: Arc::new(Script::default()),
            credentials: None,
            dns: None,
            listener: ListenerConfig {
                name: "test".into(),
                address: "127.0.0.1:0".parse().unwrap(),
                mode: ListenerMode::Smtp,
                require_tls: Some(false),
                auth: None,
                allow_plaintext_auth: true,
                proxy_protocol: false,
                proxy_from: Vec::new(),
            },
            peer: "127.0.0.2:5000".parse().unwrap(),
            intake: Arc::new(MemIntake::default()),
            wait_for_greeting: true,
            tls: None,
            flow: FlowControl::default(),
        }
    }
}

/// `alice` and `postmaster` at `local.test`.
pub fn directory() -> Directory {
    let mut dir = Directory::new(Some(Address::new("postmaster", "local.test")), Some('+'));
    let mut d = DomainEntry::default();
    d.mailboxes
        .extend(["alice".to_string(), "postmaster".to_string()]);
    dir.add_domain("local.test", d);
    dir
}

impl Harness {
    pub fn shared(&self) -> Arc<Shared> {
        let config = ServerConfig {
            hostname: "mx.test".into(),
            limits: self.limits.clone(),
            listeners: Vec::new(),
            relay_networks: self.relay_networks.clone(),
            etrn_networks: Vec::new(),
            auth: self.auth.clone(),
            flow: self.flow.clone(),
        };
        let services = Services {
            policy: Arc::clone(&self.policy),
            intake: self.intake.clone(),
            directory: Arc::new(directory()),
            tls: self.tls.clone(),
            credentials: self.credentials.clone(),
            queue_control: None,
            dns: self.dns.clone(),
        };
        Arc::new(Shared::new(&config, services))
    }

    pub fn conn(&self) -> ConnectionInfo {
        ConnectionInfo {
            session_id: 1,
            listener: "smtp".into(),
            local_addr: "127.0.0.1:25".parse().unwrap(),
            peer_addr: self.peer,
            peer_rdns: None,
            helo: None,
            esmtp: false,
            tls: None,
            auth_user: None,
        }
    }

    /// Runs a session on `shared`: sends each segment in one write; after every segment but
    /// the last waits for a 354. Then closes the write side and returns all replies.
    pub async fn run_on(&self, shared: Arc<Shared>, segments: &[&[u8]]) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(run_session(
            shared,
            Arc::new(self.listener.clone()),
            server,
            self.conn(),
        ));
        let mut out = Vec::new();
        // A client waits for the greeting (RFC 5321 4.3.1); one that does not is refused.
        if self.wait_for_greeting {
            wait_for(&mut client, &mut out, "220 ", 1).await;
        }
        for (i, seg) in segments.iter().enumerate() {
            client.write_all(seg).await.unwrap();
            if i + 1 < segments.len() {
                wait_for(&mut client, &mut out, "354 ", i + 1).await;
            }
        }
        client.shutdown().await.unwrap();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    pub async fn run(&self, segments: &[&[u8]]) -> String {
        self.run_on(self.shared(), segments).await
    }
}

/// Reads until `count` lines starting with `prefix` have arrived.
pub async fn wait_for(
    client: &mut tokio::io::DuplexStream,
    out: &mut Vec<u8>,
    prefix: &str,
    count: usize,
) {
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
        < count
    {
        let n = client.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "session closed before {prefix:?}: {}",
            String::from_utf8_lossy(out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

/// The codes of the final lines of replies.
pub fn codes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect()
}

pub fn decision(verdict: Verdict, modifications: Vec<Modification>) -> Decision {
    Decision {
        verdict,
        modifications,
    }
}

pub fn addr(s: &str) -> Address {
    let (l, d) = s.split_once('@').unwrap();
    Address::new(l, d)
}

/// A self-signed certificate for `mx.test`, made at test time (no key is ever committed): the
/// server's TLS settings, and a client config that trusts exactly that certificate.
pub fn test_tls() -> (Arc<TlsHandle>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pair = CertPair {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&pair.cert, ck.cert.pem()).unwrap();
    std::fs::write(&pair.key, ck.key_pair.serialize_pem()).unwrap();
    let handle = TlsHandle::load(vec![pair]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (handle, Arc::new(client))
}

/// The client's side of a TLS handshake for `mx.test` over `io`.
pub async fn tls_connect<S>(
    config: Arc<rustls::ClientConfig>,
    io: S,
) -> tokio_rustls::client::TlsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = rustls_pki_types::ServerName::try_from("mx.test").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .unwrap()
}

/// Reads from any stream until `count` lines starting with `prefix` have arrived.
pub async fn read_until<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    prefix: &str,
    count: usize,
) {
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
        < count
    {
        let n = io.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "session closed before {prefix:?}: {}",
            String::from_utf8_lossy(out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}
