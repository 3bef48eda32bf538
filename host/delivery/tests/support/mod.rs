//! Shared helpers of the delivery integration tests: a scripted next hop, a DNS responder,
//! a spool with a running dispatcher, and waits.
#![allow(dead_code)]

pub mod certs;
pub mod dns;
pub mod peer;
pub mod sts;

use corvid_delivery::{DeliveryConfig, Dispatcher};
use corvid_queue::{QueuedMessage, RetrySchedule, SledSpool, Spool};
use corvid_types::{
    Address, Directory, DomainEntry, Envelope, Intake, QueueId, RcptParams, Recipient,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const LOCAL: &str = "corvid.test";

pub fn directory() -> Arc<Directory> {
    let mut d = Directory::new(Some(Address::new("postmaster", LOCAL)), Some('+'));
    let mut e = DomainEntry::default();
    e.mailboxes
        .extend(["alice".into(), "bob".into(), "postmaster".into()]);
    d.add_domain(LOCAL, e);
    Arc::new(d)
}

pub fn addr(s: &str) -> Address {
    let (l, d) = s.rsplit_once('@').unwrap();
    Address::new(l, d)
}

pub fn envelope(sender: Option<&str>, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender.map(addr),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: addr(r),
                params: RcptParams::default(),
            })
            .collect(),
        ..Envelope::default()
    }
}

/// Retries after one second, no jitter.
pub fn fast_retry() -> RetrySchedule {
    RetrySchedule {
        delays: vec![Duration::from_secs(1)],
        jitter: 0.0,
        ..RetrySchedule::default()
    }
}

/// A spool in a temporary directory with a dispatcher running on it.
pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub spool: Arc<SledSpool>,
    pub token: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub fn start(config: DeliveryConfig) -> Harness {
        Self::start_with(config, fast_retry())
    }

    pub fn start_with(config: DeliveryConfig, retry: RetrySchedule) -> Harness {
        Self::start_full(config, retry, corvid_delivery::DEFAULT_CONCURRENCY)
    }

    pub fn start_full(config: DeliveryConfig, retry: RetrySchedule, concurrency: usize) -> Harness {
        Self::start_custom(config, retry, |d| d.with_concurrency(concurrency))
    }

    /// With the dispatcher adjusted by `adjust` before it starts.
    pub fn start_custom(
        config: DeliveryConfig,
        retry: RetrySchedule,
        adjust: impl FnOnce(Dispatcher) -> Dispatcher,
    ) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let spool = SledSpool::open(&tmp.path().join("spool")).unwrap();
        let token = CancellationToken::new();
        let intake: Arc<dyn Intake> = spool.clone();
        let dispatcher =
            Dispatcher::new(spool.clone(), directory(), tmp.path().join("mail"), retry)
                .with_config(config)
                .with_hostname("mx.corvid.test")
                .with_intake(intake)
                .with_poll_interval(Duration::from_millis(100));
        let dispatcher = adjust(dispatcher);
        let handle = tokio::spawn(dispatcher.run(token.clone()));
        Harness {
            tmp,
            spool,
            token,
            handle: Some(handle),
        }
    }

    pub fn mail_root(&self) -> PathBuf {
        self.tmp.path().join("mail")
    }

    pub async fn submit(&self, env: &Envelope, content: &[u8]) -> QueueId {
        let id = self.spool.next_id();
        self.spool.submit(&id, env, content).await.unwrap();
        id
    }

    pub fn get(&self, id: &QueueId) -> Option<QueuedMessage> {
        self.spool.get(id).unwrap()
    }

    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

/// The files in `local@corvid.test`'s Maildir `new/`.
pub fn maildir(root: &Path, local: &str) -> Vec<Vec<u8>> {
    let dir = root.join(LOCAL).join(local).join("Maildir/new");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

/// Waits (at most `secs`) until `cond` holds.
pub async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A config that routes `domain` to the scripted peer at `peer`.
pub fn route_to(domain: &str, to: String) -> DeliveryConfig {
    let text = format!(
        "connection_reuse_time = \"1s\"\ntimeouts = {{ connect = \"2s\", greeting = \"5s\", command = \"5s\", envelope = \"5s\", data_init = \"5s\", data_block = \"5s\", data_end = \"5s\" }}\n[[route]]\ndomain = \"{domain}\"\nto = \"{to}\"\n"
    );
    toml::from_str(&text).unwrap()
}

/// True when every LF is preceded by CR and every CR followed by LF.
pub fn crlf_only(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}
