//! The queue runner: finds due messages and attempts them, a bounded number at a time.

use crate::attempt::{self, Pipeline};
use crate::client::tls;
use crate::config::DeliveryConfig;
use crate::deliver::{Couriers, Local};
use crate::dns::Dns;
use crate::loops::DEFAULT_MAX_HOPS;
use crate::notify::Notifier;
use crate::remote::Remote;
use crate::route::Router;
use corvid_queue::{RetrySchedule, Spool};
use corvid_types::{DeliveryPolicy, Directory, Intake};
use running::{log_panic, Running};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod running;
#[cfg(test)]
mod tests;

/// Messages attempted at the same time, by default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The longest the runner sleeps without looking at the queue, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Messages in progress at once (reading, routing, waiting for a slot or delivering), like
/// Postfix's `qmgr_message_active_limit`. The content is read only under a permit, so a
/// waiting message costs its envelope and state only.
const MAX_ACTIVE: usize = 10_000;
/// Messages taken from the spool in one pass at most. A full batch is followed by another
/// pass at once (after a yield), so a long due queue fills the free slots in short steps and
/// each pass stays O(batch + log n) (`Spool::take_due`).
const PASS_BATCH: usize = 256;
/// Deliveries at intake ([`crate::DirectIntake`]) per local permit of the runner.
const DIRECT_SLOTS_PER_PERMIT: usize = 8;
/// How long a stopping runner waits for attempts in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    spool: Arc<dyn Spool>,
    directory: Arc<Directory>,
    maildir_root: PathBuf,
    schedule: RetrySchedule,
    config: DeliveryConfig,
    hostname: String,
    intake: Option<Arc<dyn Intake>>,
    policy: Option<Arc<dyn DeliveryPolicy>>,
    dns: Option<Arc<dyn Dns>>,
    concurrency: usize,
    poll_interval: Duration,
    listening: Vec<SocketAddr>,
    max_hops: usize,
    /// `config.routes`, swappable by a reload (`route_table`).
    routes: Arc<crate::route::RouteTable>,
    /// Given the pipeline, for delivery at intake ([`crate::DirectIntake`]).
    direct: Option<crate::DirectHandle>,
}

impl Dispatcher {
    pub fn new(
        spool: Arc<dyn Spool>,
        directory: Arc<Directory>,
        maildir_root: PathBuf,
        schedule: RetrySchedule,
    ) -> Self {
        Dispatcher {
            spool,
            directory,
            maildir_root,
            schedule,
            config: DeliveryConfig::default(),
            hostname: "localhost".into(),
            intake: None,
            policy: None,
            dns: None,
            concurrency: DEFAULT_CONCURRENCY,
            poll_interval: DEFAULT_POLL_INTERVAL,
            listening: Vec::new(),
            max_hops: DEFAULT_MAX_HOPS,
            routes: Arc::default(),
            direct: None,
        }
    }

    /// The `[delivery]` settings: routes, DNS, client timeouts and limits.
    pub fn with_config(mut self, config: DeliveryConfig) -> Self {
        self.routes.replace(config.routes.clone());
        self.config = config;
        self
    }

    /// The static routes in use: a config reload replaces them for the next lookups.
    pub fn route_table(&self) -> Arc<crate::route::RouteTable> {
        Arc::clone(&self.routes)
    }

    /// This server's name: `Reporting-MTA:` of DSNs, and EHLO unless `helo_name` is set.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Where DSNs to senders are queued (normally the spool itself). Without it, failures
    /// are recorded and logged but nobody is notified.
    pub fn with_intake(mut self, intake: Arc<dyn Intake>) -> Self {
        self.intake = Some(intake);
        self
    }

    /// Delivery policy: a route decision consulted before the static table, and the
    /// `deferred`, `bounced` and `delivered` notifications (the plugins' delivery stages).
    /// Lets `handle`'s [`crate::DirectIntake`] deliver local-only messages at intake through
    /// this dispatcher's pipeline, once [`Dispatcher::run`] has built it.
    pub fn with_direct(mut self, handle: crate::DirectHandle) -> Self {
        self.direct = Some(handle);
        self
    }

    pub fn with_policy(mut self, policy: Arc<dyn DeliveryPolicy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// A DNS implementation instead of hickory on `nameservers` (for tests).
    pub fn with_dns(mut self, dns: Arc<dyn Dns>) -> Self {
        self.dns = Some(dns);
        self
    }

    /// How many deliveries may run at once (at least 1): local delivery has this many permits,
    /// and remote delivery as many of its own.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The addresses this server's listeners are bound to: an MX resolving to one of them is a
    /// mail loop and is never connected to.
    pub fn with_listening_addrs(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.listening = addrs.into_iter().collect();
        self
    }

    /// A message with more `Received:` fields than this (not counting the one this server
    /// added at intake) bounces (5.4.6) instead of being delivered (default
    /// [`DEFAULT_MAX_HOPS`]; `limits.max_hops` in the binary, as at the end of DATA).
    pub fn with_max_hops(mut self, n: usize) -> Self {
        self.max_hops = n;
        self
    }

    /// The longest sleep between two looks at the queue.
    pub fn with_poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    fn pipeline(self) -> Option<(Arc<Pipeline>, usize, Duration)> {
        let tls_configs = match tls::TlsConfigs::new(self.config.tls.ca_file.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up TLS for delivery");
                return None;
            }
        };
        let helo = self
            .config
            .helo_name
            .clone()
            .unwrap_or_else(|| self.hostname.clone());
        let delay_warning = Some(self.config.delay_warning).filter(|d| !d.is_zero());
        let router = Router::new(Vec::new(), Arc::clone(&self.directory))
            .with_table(self.routes)
            .with_domain_tls(&self.config.tls.domains);
        let remote = Remote::new(
            self.config,
            helo,
            tls_configs,
            self.dns,
            self.concurrency,
            self.listening,
            Some(Arc::clone(&self.spool)),
        );
        let couriers = Couriers {
            local: Arc::new(Local {
                directory: self.directory,
                root: self.maildir_root,
                permits: Arc::new(Semaphore::new(self.concurrency)),
            }),
            remote: Arc::new(remote),
        };
        let ctx = Pipeline {
            router,
            couriers: Arc::new(couriers),
            spool: Arc::clone(&self.spool),
            notifier: Notifier {
                intake: self.intake,
                hostname: self.hostname,
                max_age: self.schedule.max_age,
                delay_warning,
                spool: self.spool,
            },
            schedule: self.schedule,
            policy: self.policy,
            max_hops: self.max_hops,
        };
        Some((Arc::new(ctx), self.concurrency, self.poll_interval))
    }

    /// Runs until `shutdown` is cancelled, then waits for the attempts in progress so that
    /// their outcomes are recorded. The queue is looked at on start, when the spool signals
    /// new or flushed messages, when an attempt ends, when the next message falls due, and at
    /// least every poll interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let direct = self.direct.clone();
        let Some((ctx, concurrency, poll_interval)) = self.pipeline() else {
            return;
        };
        if let Some(handle) = direct {
            // Maildir writes at intake: a message finding all taken is queued first. Eight per
            // runner permit: sessions deliver one message each, on blocking threads.
            handle.set(&ctx, concurrency.saturating_mul(DIRECT_SLOTS_PER_PERMIT));
        }
        let rpt = &ctx.couriers.remote.config.tls_rpt;
        if let (true, Some(intake)) = (rpt.enabled, ctx.notifier.intake.clone()) {
            let period = rpt.interval.max(Duration::from_secs(1));
            tokio::spawn(crate::tlsrpt_mail::run(
                Arc::clone(&ctx.couriers.remote),
                ctx.notifier.hostname.clone(),
                intake,
                period,
                shutdown.clone(),
            ));
        }
        let runner = Runner { ctx, poll_interval };
        let mut wake = runner.ctx.spool.subscribe();
        let mut wake_open = true;
        let permits = Arc::new(Semaphore::new(MAX_ACTIVE));
        let mut running = Running::new(Arc::clone(&runner.ctx.spool));
        tracing::info!(concurrency, "delivery dispatcher started");
        while !shutdown.is_cancelled() {
            running.reap();
            let Some(full) = runner.start_due(&permits, &mut running, &shutdown).await else {
                break;
            };
            if full {
                // More may be due: the next batch after the tasks just started had a turn.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = wake.changed(), if wake_open => wake_open = changed.is_ok(),
                _ = tokio::time::sleep(runner.nap()) => {}
                Some(joined) = running.tasks.join_next() => log_panic(joined),
            }
        }
        // Attempts in progress get a grace period to record their outcomes; a network
        // attempt can wait minutes on a slow peer (RFC 5321 timeouts), so the rest are
        // abandoned and retried after restart (a duplicate at worst, never a loss).
        let drain = async {
            while let Some(joined) = running.tasks.join_next().await {
                log_panic(joined);
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!(
                left = running.tasks.len(),
                "abandoning delivery attempts still running"
            );
            running.tasks.abort_all();
            while running.tasks.join_next().await.is_some() {}
        }
        tracing::info!("delivery dispatcher stopped");
    }
}

struct Runner {
    ctx: Arc<Pipeline>,
    poll_interval: Duration,
}

impl Runner {
    /// Claims due messages, as many as there are free slots (at most [`PASS_BATCH`]), and
    /// starts an attempt for each. Returns whether the batch was full (more may be due), or
    /// `None` when shutdown came while waiting for a free slot.
    async fn start_due(
        &self,
        permits: &Arc<Semaphore>,
        running: &mut Running,
        shutdown: &CancellationToken,
    ) -> Option<bool> {
        let limit = permits.available_permits().min(PASS_BATCH);
        if limit == 0 {
            // Every slot is taken: the end of an attempt wakes the runner.
            return Some(false);
        }
        let taken = match self.ctx.spool.take_due(SystemTime::now(), limit) {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!(error = %e, "cannot take due messages");
                return Some(false);
            }
        };
        let claims = running.claim_all(taken);
        let full = claims.len() >= limit;
        // A claim not started (shutdown while waiting) is released when the rest are dropped.
        for claim in claims {
            let permit = tokio::select! {
                p = Arc::clone(permits).acquire_owned() => p,
                _ = shutdown.cancelled() => return None,
            };
            // The semaphore is never closed.
            let Ok(permit) = permit else { return None };
            let ctx = Arc::clone(&self.ctx);
            let id = claim.id().clone();
            // Every line of this attempt (delivery hooks included) carries the queue id.
            let span = tracing::info_span!("delivery", queue_id = %id);
            let attempt = async move {
                let _slot = (permit, claim);
                attempt::process(ctx, id).await;
            };
            running
                .tasks
                .spawn(tracing::Instrument::instrument(attempt, span));
        }
        Some(full)
    }

    /// Until the next message falls due, bounded by the poll interval. A due time in the past
    /// belongs to a message waiting for a free slot; the end of an attempt wakes the runner.
    fn nap(&self) -> Duration {
        let now = SystemTime::now();
        match self.ctx.spool.next_wakeup() {
            Some(at) if at > now => at
                .duration_since(now)
                .unwrap_or(self.poll_interval)
                .min(self.poll_interval),
            _ => self.poll_interval,
        }
    }
}
