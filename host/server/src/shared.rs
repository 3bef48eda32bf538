//! What every session of a server shares: the services it calls, the settings, the
//! server-wide budgets (password hashes, message bytes in memory) and the shutdown signals.

use crate::auth::{AuthThrottle, Credentials};
use crate::config::{AuthSettings, ServerConfig};
use crate::tls::TlsHandle;
use crate::Limits;
use corvid_types::{Directory, Intake, Policy};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The services a server is built from.
#[derive(Clone)]
pub struct Services {
    pub policy: Arc<dyn Policy>,
    pub intake: Arc<dyn Intake>,
    pub directory: Arc<Directory>,
    /// Certificates for STARTTLS and implicit TLS; `None` offers no TLS.
    pub tls: Option<Arc<TlsHandle>>,
    /// The users file (or another password check); `None` leaves AUTH to policy plugins.
    pub credentials: Option<Arc<dyn Credentials>>,
    /// Queue runs on request (ETRN); `None` does not offer ETRN.
    pub queue_control: Option<Arc<dyn corvid_types::QueueControl>>,
    /// Finds the client's forward-confirmed reverse DNS name; `None` leaves it unknown.
    pub dns: Option<Arc<dyn corvid_types::DnsResolver>>,
}

/// The settings a config reload may change (SIGHUP in the binary). A session takes the
/// version current when it starts ([`Shared::for_session`]) and keeps it to its end, so a
/// lowered limit never changes the rules in the middle of a conversation.
#[derive(Clone, Debug)]
pub struct LiveSettings {
    pub hostname: String,
    pub limits: Limits,
    pub relay_networks: Vec<ipnet::IpNet>,
    pub etrn_networks: Vec<ipnet::IpNet>,
}

impl LiveSettings {
    pub fn from_config(config: &ServerConfig) -> Self {
        LiveSettings {
            hostname: config.hostname.clone(),
            limits: config.limits.clone(),
            relay_networks: config.relay_networks.clone(),
            etrn_networks: config.etrn_networks.clone(),
        }
    }
}

/// Where new sessions take their [`LiveSettings`] from; `replace` is the reload. It also sets
/// the listeners' connection caps (`limits.max_connections`, `max_connections_per_ip`) for new
/// connections. `max_inflight_bytes` and `shutdown_grace` are read once at start (the memory
/// budget and the shutdown).
#[derive(Clone)]
pub struct LiveHandle {
    settings: Arc<arc_swap::ArcSwap<LiveSettings>>,
    limiter: Option<Arc<crate::limiter::ConnLimiter>>,
}

impl LiveHandle {
    pub fn replace(&self, settings: LiveSettings) {
        if let Some(limiter) = &self.limiter {
            let l = &settings.limits;
            limiter.set_limits(l.max_connections, l.max_connections_per_ip);
        }
        self.settings.store(Arc::new(settings));
    }

    pub fn current(&self) -> Arc<LiveSettings> {
        self.settings.load_full()
    }

    /// The same handle, also setting `limiter`'s caps on `replace`.
    pub(crate) fn with_limiter(mut self, limiter: Arc<crate::limiter::ConnLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }
}

/// What every session of a server shares. The settings fields are one session's copy of the
/// [`LiveSettings`]; the services, budgets, counters and signals are one for the server.
#[derive(Clone)]
pub struct Shared {
    pub hostname: String,
    pub limits: Limits,
    pub auth: AuthSettings,
    pub relay_networks: Vec<ipnet::IpNet>,
    pub etrn_networks: Vec<ipnet::IpNet>,
    pub services: Services,
    /// SPF, DKIM, DMARC and ARC checks and DKIM signing (`session/auth_checks.rs`); `None`
    /// checks and signs nothing. Set with `BoundServer::with_mail_auth`.
    pub mail_auth: Option<Arc<dyn corvid_types::MailAuth>>,
    pub throttle: Arc<AuthThrottle>,
    /// Password hashes that may run at once (`auth.max_concurrent_hashes`).
    pub hash_permits: Arc<tokio::sync::Semaphore>,
    /// Message bytes held in memory by all sessions (`limits.max_inflight_bytes`).
    pub memory: Arc<crate::memory::MemoryBudget>,
    /// Flow control settings and the server-wide state (logged once per transition).
    pub flow: crate::FlowControl,
    pub flow_gate: Arc<crate::flow::FlowGate>,
    /// Cancelled when shutdown starts: idle sessions say 421 and close.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: every session closes at once.
    pub abort: CancellationToken,
    next_session: Arc<AtomicU64>,
    live: LiveHandle,
}

impl Shared {
    pub fn new(config: &ServerConfig, services: Services) -> Self {
        Shared {
            hostname: config.hostname.clone(),
            limits: config.limits.clone(),
            auth: config.auth.clone(),
            relay_networks: config.relay_networks.clone(),
            etrn_networks: config.etrn_networks.clone(),
            services,
            mail_auth: None,
            throttle: Arc::new(AuthThrottle::new(config.auth.failure_window)),
            memory: crate::memory::MemoryBudget::new(config.limits.max_inflight_bytes),
            flow: config.flow.clone(),
            flow_gate: Arc::default(),
            hash_permits: Arc::new(tokio::sync::Semaphore::new(hash_permits(&config.auth))),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            next_session: Arc::new(AtomicU64::new(1)),
            live: LiveHandle {
                settings: Arc::new(arc_swap::ArcSwap::from_pointee(LiveSettings::from_config(
                    config,
                ))),
                limiter: None,
            },
        }
    }

    /// The handle a reload stores new settings through.
    pub fn live(&self) -> LiveHandle {
        self.live.clone()
    }

    /// One session's view: the settings current now, everything else shared.
    pub fn for_session(&self) -> Shared {
        let now = self.live.current();
        Shared {
            hostname: now.hostname.clone(),
            limits: now.limits.clone(),
            relay_networks: now.relay_networks.clone(),
            etrn_networks: now.etrn_networks.clone(),
            ..self.clone()
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// `auth.max_concurrent_hashes`, 0 meaning twice the CPUs.
fn hash_permits(auth: &AuthSettings) -> usize {
    match auth.max_concurrent_hashes {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
        n => n,
    }
}
