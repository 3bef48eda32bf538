//! Listeners: bind, admit connections within the limits, spawn sessions, shut down gracefully.

use crate::config::{ListenerConfig, ListenerMode, ServerConfig};
use crate::limiter::ConnLimiter;
use crate::session::run_session;
use crate::shared::{Services, Shared};
use corvid_types::ConnectionInfo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument as _};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address} (listener {name}): {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener {0} needs TLS but no certificate is configured")]
    NoTls(String),
}

/// Listeners bound and ready; `run` serves them until shutdown.
pub struct BoundServer {
    shared: Arc<Shared>,
    listeners: Vec<(Arc<ListenerConfig>, TcpListener)>,
    limiter: Arc<ConnLimiter>,
}

impl BoundServer {
    /// Binds every listener first, so a port in use is reported before anything is served.
    pub async fn bind(config: ServerConfig, services: Services) -> Result<Self, ServerError> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let needs_tls = l.mode == ListenerMode::Submissions || l.requires_tls();
            if needs_tls && services.tls.is_none() {
                return Err(ServerError::NoTls(l.name.clone()));
            }
            let sock = TcpListener::bind(l.address)
                .await
                .map_err(|source| ServerError::Bind {
                    name: l.name.clone(),
                    address: l.address,
                    source,
                })?;
            listeners.push((Arc::new(l.clone()), sock));
        }
        let limits = &config.limits;
        let limiter = ConnLimiter::new(limits.max_connections, limits.max_connections_per_ip);
        let shared = Arc::new(Shared::new(&config, services));
        Ok(BoundServer {
            shared,
            listeners,
            limiter,
        })
    }

    /// Checks inbound mail and signs outbound mail through `mail_auth` (see
    /// `session/auth_checks.rs`). Call before `run`.
    pub fn with_mail_auth(mut self, mail_auth: Arc<dyn corvid_types::MailAuth>) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.mail_auth = Some(mail_auth),
            None => warn!("mail authentication not set: the server is already running"),
        }
        self
    }

    /// Where new sessions take their settings from; a config reload replaces them.
    pub fn live_settings(&self) -> crate::LiveHandle {
        self.shared.live().with_limiter(Arc::clone(&self.limiter))
    }

    /// The actual addresses (with the port chosen when the config said 0).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(c, l)| l.local_addr().ok().map(|a| (c.name.clone(), a)))
            .collect()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets sessions finish within
    /// the grace period, and closes the rest.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        for (config, listener) in self.listeners {
            let ctx = AcceptLoop {
                shared: Arc::clone(&self.shared),
                limiter: Arc::clone(&self.limiter),
                tracker: tracker.clone(),
                config,
            };
            tracker.spawn(ctx.run(listener));
        }
        shutdown.cancelled().await;
        let active = self.limiter.active();
        info!(
            active,
            "shutdown: no longer accepting; waiting for sessions"
        );
        self.shared.shutdown.cancel();
        tracker.close();
        let grace = self.shared.limits.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                remaining = self.limiter.active(),
                "shutdown grace over; closing sessions"
            );
            self.shared.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
    }
}

#[derive(Clone)]
struct AcceptLoop {
    shared: Arc<Shared>,
    limiter: Arc<ConnLimiter>,
    tracker: TaskTracker,
    config: Arc<ListenerConfig>,
}

impl AcceptLoop {
    async fn run(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((mut stream, peer)) if self.config.proxy_protocol => {
                    // The header names the client that limits and the session then see.
                    let this = self.clone();
                    self.tracker.spawn(async move {
                        let from = &this.config.proxy_from;
                        let client = crate::proxy::client_of(&mut stream, peer, from).await;
                        if let Some(client) = client {
                            this.admit(stream, client);
                        }
                    });
                }
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(listener = %self.config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn admit(&self, mut stream: TcpStream, peer: SocketAddr) {
        corvid_types::metrics::observer().connection(&self.config.name);
        let _ = stream.set_nodelay(true);
        let Some(permit) = self.limiter.try_admit(peer.ip()) else {
            info!(client = %peer.ip(), "connection refused: too many connections");
            // RFC 5321 3.8 and 4.2.3: 421 when the service cannot take the connection now.
            self.tracker.spawn(async move {
                let msg = b"421 4.7.0 Too many connections, try again later\r\n";
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(msg)).await;
            });
            return;
        };
        let Ok(local_addr) = stream.local_addr() else {
            return;
        };
        let conn = ConnectionInfo {
            session_id: self.shared.next_session_id(),
            listener: self.config.name.clone(),
            local_addr,
            peer_addr: peer,
            peer_rdns: None,
            helo: None,
            esmtp: false,
            tls: None,
            auth_user: None,
        };
        debug!(session = conn.session_id, client = %peer.ip(), listener = %conn.listener, "connect");
        let shared = Arc::clone(&self.shared);
        let listener = Arc::clone(&self.config);
        // Every line logged inside the session (plugin hooks included) carries this span, so a
        // log search by session id finds the whole conversation (docs/operations.md, "Logs").
        let span = info_span!("session", session = conn.session_id, client = %peer.ip());
        let session = async move {
            // The session does the TLS handshake first on an implicit-TLS listener.
            run_session(shared, listener, stream, conn).await;
            drop(permit);
        };
        self.tracker.spawn(session.instrument(span));
    }
}
