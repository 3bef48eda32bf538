//! The Prometheus endpoint's registry: the server-wide counters (fed through
//! `corvid_types::metrics::Observer` by the other crates, and by the intake wrapper below), the
//! queue gauges (sampled in the background), and the plugin host's per-plugin numbers (read at
//! each scrape). docs/metrics.md lists every family and label; tests/e2e/test_metrics.py holds
//! the two together.

mod http;
mod plugins;

pub use http::serve as serve_http;

use async_trait::async_trait;
use corvid_queue::SledSpool;
use corvid_types::{Envelope, Intake, IntakeError, QueueId, Reply, SubmitOptions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the queue gauges are sampled (`SledSpool::depth`: the due index's counts and the
/// oldest record, no scan of the queue).
const QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];

/// The counters other crates report to (see `corvid_types::metrics::Observer`).
#[derive(Default)]
struct Server {
    connections: Family<Labels1, Counter>,
    transactions: Family<Labels3, Counter>,
    messages_accepted: Counter,
    bytes_accepted: Counter,
    tls_handshakes: Family<Labels2, Counter>,
    auth_failures: Family<Labels1, Counter>,
    deliveries: Family<Labels2, Counter>,
    dsns: Counter,
    queue_messages: Family<Labels1, Gauge>,
    queue_oldest: Gauge,
    ready: AtomicBool,
}

/// The process's metrics: the registry the endpoint encodes, and the readiness `/healthz`
/// reports.
pub struct Metrics {
    registry: Registry,
    server: Arc<Server>,
    plugins: Arc<plugins::Collector>,
}

/// The observer installed process-wide; it holds the same counters as [`Metrics`].
struct Observer(Arc<Server>);

impl corvid_types::metrics::Observer for Observer {
    fn connection(&self, listener: &str) {
        self.0
            .connections
            .get_or_create(&[("listener", listener.to_string())])
            .inc();
    }

    fn transaction(&self, listener: &str, reply: &Reply) {
        let class = format!("{}xx", reply.code / 100);
        let enhanced = reply
            .enhanced
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none".into());
        self.0
            .transactions
            .get_or_create(&[
                ("listener", listener.to_string()),
                ("class", class),
                ("enhanced", enhanced),
            ])
            .inc();
    }

    fn tls_handshake(&self, listener: &str, version: &str) {
        self.0
            .tls_handshakes
            .get_or_create(&[
                ("listener", listener.to_string()),
                ("version", version.to_string()),
            ])
            .inc();
    }

    fn auth_failure(&self, listener: &str) {
        self.0
            .auth_failures
            .get_or_create(&[("listener", listener.to_string())])
            .inc();
    }

    fn delivery(&self, outcome: &str, destination: &str) {
        // The kind only: a label per MX domain would grow without bound.
        let kind = destination.split(':').next().unwrap_or_default();
        let kind = if kind.is_empty() { "none" } else { kind };
        self.0
            .deliveries
            .get_or_create(&[
                ("outcome", outcome.to_string()),
                ("destination", kind.to_string()),
            ])
            .inc();
    }
}

impl Metrics {
    /// Builds the registry and installs the process-wide observer. It exists before the
    /// plugins are loaded (so that `/healthz` can say "starting"); [`Metrics::set_plugins`]
    /// adds them.
    pub fn new() -> Arc<Metrics> {
        let server = Arc::new(Server::default());
        let mut r = Registry::default();
        let s = &server;
        r.register(
            "corvid_smtp_connections",
            "SMTP connections accepted, by listener",
            s.connections.clone(),
        );
        r.register(
            "corvid_smtp_transactions",
            "Message transactions (end of DATA/BDAT), by listener, reply class and enhanced code",
            s.transactions.clone(),
        );
        r.register(
            "corvid_messages_accepted",
            "Messages accepted (answered 250): queued, or delivered at intake",
            s.messages_accepted.clone(),
        );
        r.register(
            "corvid_message_bytes_accepted",
            "Octets of the messages accepted",
            s.bytes_accepted.clone(),
        );
        r.register(
            "corvid_tls_handshakes",
            "TLS handshakes, by listener and negotiated version (or failed)",
            s.tls_handshakes.clone(),
        );
        r.register(
            "corvid_auth_failures",
            "AUTH attempts refused for bad credentials (535), by listener",
            s.auth_failures.clone(),
        );
        r.register(
            "corvid_deliveries",
            "Delivery attempts per recipient, by outcome and destination type",
            s.deliveries.clone(),
        );
        r.register(
            "corvid_dsns",
            "Delivery status notifications queued for senders",
            s.dsns.clone(),
        );
        r.register(
            "corvid_queue_messages",
            "Messages in the queue, by state (active or held)",
            s.queue_messages.clone(),
        );
        r.register(
            "corvid_queue_oldest_message_age_seconds",
            "Age of the oldest message in the queue",
            s.queue_oldest.clone(),
        );
        let plugins = Arc::new(plugins::Collector::default());
        r.register_collector(Box::new(Arc::clone(&plugins)));
        // A second registry (a second `serve` in one process, a test) keeps its own counters;
        // only the first one receives the other crates' reports.
        corvid_types::metrics::install(Box::new(Observer(Arc::clone(&server))));
        Arc::new(Metrics {
            registry: r,
            server,
            plugins,
        })
    }

    /// The plugin host and engine whose numbers each scrape reads.
    pub fn set_plugins(
        &self,
        host: corvid_plugin_host::PluginHost,
        engine: corvid_plugin_host::PluginEngine,
    ) {
        self.plugins.set(host, engine);
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `/healthz` answers 200 from now on (the queue is open, the listeners are bound).
    pub fn set_ready(&self, ready: bool) {
        self.server.ready.store(ready, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.server.ready.load(Ordering::Relaxed)
    }

    /// Counts accepted messages and their octets on their way into the queue.
    pub fn intake(&self, inner: Arc<dyn Intake>) -> Arc<dyn Intake> {
        Arc::new(CountingIntake {
            inner,
            server: Arc::clone(&self.server),
            dsn: false,
        })
    }

    /// Counts DSNs on their way into the queue (the delivery side's intake).
    pub fn dsn_intake(&self, inner: Arc<dyn Intake>) -> Arc<dyn Intake> {
        Arc::new(CountingIntake {
            inner,
            server: Arc::clone(&self.server),
            dsn: true,
        })
    }

    /// Samples the queue gauges until `stop`.
    pub async fn sample_queue(
        self: Arc<Self>,
        spool: Arc<SledSpool>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let s = Arc::clone(&spool);
            if let Ok(Ok(depth)) = tokio::task::spawn_blocking(move || s.depth()).await {
                let now = corvid_queue::unix_secs(SystemTime::now());
                let age = depth
                    .oldest_arrived_at
                    .map(|t| now.saturating_sub(t))
                    .unwrap_or(0);
                let q = &self.server.queue_messages;
                q.get_or_create(&[("state", "active".into())])
                    .set(i64::try_from(depth.active).unwrap_or(i64::MAX));
                q.get_or_create(&[("state", "held".into())])
                    .set(i64::try_from(depth.held).unwrap_or(i64::MAX));
                self.server
                    .queue_oldest
                    .set(i64::try_from(age).unwrap_or(i64::MAX));
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(QUEUE_SAMPLE_INTERVAL) => {}
            }
        }
    }
}

struct CountingIntake {
    inner: Arc<dyn Intake>,
    server: Arc<Server>,
    dsn: bool,
}

impl CountingIntake {
    /// One message accepted (a DSN counted apart).
    fn count(&self, len: usize) {
        if self.dsn {
            self.server.dsns.inc();
        } else {
            self.server.messages_accepted.inc();
            let n = u64::try_from(len).unwrap_or(u64::MAX);
            self.server.bytes_accepted.inc_by(n);
        }
    }
}

#[async_trait]
impl Intake for CountingIntake {
    fn next_id(&self) -> QueueId {
        self.inner.next_id()
    }

    async fn submit_with(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: &[u8],
        options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        self.inner
            .submit_with(id, envelope, content, options)
            .await?;
        self.count(content.len());
        Ok(())
    }

    async fn submit_owned(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        content: Arc<Vec<u8>>,
        options: &SubmitOptions,
    ) -> Result<(), IntakeError> {
        let len = content.len();
        self.inner
            .submit_owned(id, envelope, content, options)
            .await?;
        self.count(len);
        Ok(())
    }

    // Flow control reads the queue's backlog through this wrapper.
    fn backlog(&self) -> Option<u64> {
        self.inner.backlog()
    }
}
