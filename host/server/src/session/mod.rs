//! One SMTP session: the state machine and its I/O. Each verb has its handler in a sibling
//! module; this file owns reading, writing, deadlines and the command loop.

mod auth;
mod data;
mod ehlo;
mod envelope;
mod envelope_mods;
mod from_check;
mod gate;
mod header_limits;
mod io;
mod modify;
mod rate;
mod verbs;

use crate::auth::{AuthThrottle, Credentials};
use crate::config::{AuthSettings, ListenerConfig, ServerConfig};
use crate::tls::TlsHandle;
use crate::Limits;
use corvid_smtp::{parse_command, Command, Input, LineError};
use corvid_types::{ConnectionInfo, Directory, Envelope, Intake, Policy, PolicySession, Reply};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF.
const MAX_COMMAND_LINE: usize = 512;
/// RFC 4954 4: AUTH lines (the command with its initial response, and SASL responses) may be
/// up to 12288 octets.
const MAX_AUTH_LINE: usize = 12288;
const READ_CHUNK: usize = 16 * 1024;

/// The services a server is built from.
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

/// What every session of a server shares.
pub struct Shared {
    pub hostname: String,
    pub limits: Limits,
    pub auth: AuthSettings,
    pub relay_networks: Vec<ipnet::IpNet>,
    pub etrn_networks: Vec<ipnet::IpNet>,
    pub services: Services,
    pub throttle: AuthThrottle,
    /// Password hashes that may run at once (`auth.max_concurrent_hashes`).
    pub hash_permits: Arc<tokio::sync::Semaphore>,
    /// Message bytes held in memory by all sessions (`limits.max_inflight_bytes`).
    pub memory: Arc<crate::memory::MemoryBudget>,
    /// Cancelled when shutdown starts: idle sessions say 421 and close.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: every session closes at once.
    pub abort: CancellationToken,
    next_session: AtomicU64,
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
            throttle: AuthThrottle::new(config.auth.failure_window),
            memory: crate::memory::MemoryBudget::new(config.limits.max_inflight_bytes),
            hash_permits: Arc::new(tokio::sync::Semaphore::new(hash_permits(&config.auth))),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            next_session: AtomicU64::new(1),
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

/// Whether the command loop goes on after a handler.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
    /// 220 to STARTTLS was sent: hand the connection to the TLS handshake.
    StartTls,
}

fn is_auth(line: &[u8]) -> bool {
    line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ")
}

/// Why a session ended early; carried out of handlers with `?`.
#[derive(Debug)]
enum Closed {
    Eof,
    Timeout,
    Shutdown,
    /// `limits.max_session_time` is over.
    SessionTime,
    Io(std::io::Error),
}

type Step = Result<Flow, Closed>;

/// Per-transaction state between MAIL and the end of DATA/BDAT.
struct Transaction {
    envelope: Envelope,
    started: Instant,
    /// Set by a `discard` or `quarantine` verdict before DATA.
    disposition: Option<Disposition>,
    /// BDAT chunks received so far; `None` until the first BDAT.
    bdat: Option<corvid_smtp::BdatReader>,
    /// RCPT commands and recipients added by policy, towards `limits.max_recipients`.
    counted: usize,
    /// The content received so far, charged to `limits.max_inflight_bytes`.
    charge: Option<crate::memory::Charge>,
}

impl Transaction {
    fn new(envelope: Envelope) -> Self {
        Transaction {
            envelope,
            started: Instant::now(),
            disposition: None,
            bdat: None,
            counted: 0,
            charge: None,
        }
    }
}

#[derive(Clone, Debug)]
enum Disposition {
    Discard,
    Quarantine(String),
}

struct Session<S> {
    io: S,
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    conn: ConnectionInfo,
    policy: Box<dyn PolicySession>,
    input: Input,
    out: Vec<u8>,
    rbuf: Box<[u8]>,
    tx: Option<Transaction>,
    errors: u32,
    messages: u32,
    auth_failures: u32,
    /// Non-mail commands so far (`limits.max_junk_commands`).
    junk: u32,
    /// When the session must end, whatever it is doing (`limits.max_session_time`).
    session_deadline: tokio::time::Instant,
    /// When the command being received must be complete (RFC 5321 4.5.3.2.7); kept across
    /// partial reads so a client trickling bytes cannot hold the session forever.
    command_deadline: Option<tokio::time::Instant>,
}

/// Runs one session to its end over any byte stream (a TCP socket, or a duplex pipe in tests).
/// After STARTTLS the session goes on over TLS with all SMTP state forgotten (RFC 3207 4.2).
pub async fn run_session<S>(
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    io: S,
    conn: ConnectionInfo,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + shared.limits.max_session_time;
    let mut conn = conn;
    if let (None, Some(dns)) = (&conn.peer_rdns, &shared.services.dns) {
        let ip = conn.peer_addr.ip();
        conn.peer_rdns =
            crate::rdns::confirmed_name(dns.as_ref(), ip, shared.limits.rdns_timeout).await;
    }
    let policy = shared.services.policy.session(&conn);
    let mut s = Session::new(io, shared, listener, conn, policy, deadline);
    let end = s.run().await;
    if end != "starttls" {
        return log_close(&s.conn, s.messages, s.errors, started, end);
    }
    let Session {
        io,
        shared,
        listener,
        mut conn,
        policy,
        messages,
        errors,
        junk,
        ..
    } = s;
    let Some(tls_io) = handshake(&shared, io, &mut conn).await else {
        return log_close(&conn, messages, errors, started, "tls-handshake-failed");
    };
    conn.helo = None;
    conn.esmtp = false;
    conn.auth_user = None;
    let mut t = Session::new(tls_io, shared, listener, conn, policy, deadline);
    t.junk = junk;
    let end = t.run().await;
    log_close(
        &t.conn,
        messages + t.messages,
        errors + t.errors,
        started,
        end,
    );
}

/// The TLS handshake after STARTTLS (or first thing on an implicit-TLS listener), bounded by
/// the command timeout; records the negotiated parameters in `conn`.
pub(crate) async fn handshake<S>(
    shared: &Shared,
    io: S,
    conn: &mut ConnectionInfo,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let tls = shared.services.tls.as_ref()?;
    let accept = tls.acceptor().accept(io);
    match tokio::time::timeout(shared.limits.command_timeout, accept).await {
        Ok(Ok(stream)) => {
            conn.tls = Some(crate::tls::tls_info(stream.get_ref().1));
            Some(stream)
        }
        Ok(Err(e)) => {
            info!(session = conn.session_id, client = %conn.peer_addr.ip(), error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            info!(session = conn.session_id, client = %conn.peer_addr.ip(), "TLS handshake timed out");
            None
        }
    }
}

fn log_close(conn: &ConnectionInfo, messages: u32, errors: u32, started: Instant, end: &str) {
    info!(
        session = conn.session_id,
        client = %conn.peer_addr.ip(),
        helo = conn.helo.as_deref().unwrap_or(""),
        tls = conn.tls.as_ref().map(|t| t.version.as_str()).unwrap_or("no"),
        user = conn.auth_user.as_deref().unwrap_or(""),
        messages,
        errors,
        duration_ms = started.elapsed().as_millis() as u64,
        end,
        "connection closed"
    );
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn new(
        io: S,
        shared: Arc<Shared>,
        listener: Arc<ListenerConfig>,
        conn: ConnectionInfo,
        policy: Box<dyn PolicySession>,
        session_deadline: tokio::time::Instant,
    ) -> Self {
        Session {
            io,
            shared,
            listener,
            conn,
            policy,
            input: Input::new(),
            out: Vec::with_capacity(1024),
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            tx: None,
            errors: 0,
            messages: 0,
            auth_failures: 0,
            junk: 0,
            session_deadline,
            command_deadline: None,
        }
    }

    /// Runs the session; returns why it ended (`"starttls"` hands it to the TLS handshake).
    async fn run(&mut self) -> &'static str {
        let result = self.command_loop().await;
        let reason = match &result {
            Ok(Flow::StartTls) => "starttls",
            Ok(_) => "quit",
            Err(Closed::Eof) => "eof",
            Err(Closed::Timeout) => "timeout",
            Err(Closed::Shutdown) => "shutdown",
            Err(Closed::SessionTime) => "session-time",
            Err(Closed::Io(_)) => "io-error",
        };
        match result {
            Err(Closed::Timeout) => {
                let text = format!(
                    "{} Timeout exceeded, closing connection",
                    self.shared.hostname
                );
                self.push(&Reply::new(421, "4.4.2", text));
            }
            Err(Closed::Shutdown) => {
                let text = format!(
                    "{} Service shutting down, try again later",
                    self.shared.hostname
                );
                self.push(&Reply::new(421, "4.3.2", text));
            }
            Err(Closed::SessionTime) => {
                let text = format!(
                    "{} Session time limit exceeded, closing connection",
                    self.shared.hostname
                );
                self.push(&Reply::new(421, "4.7.0", text));
            }
            Err(Closed::Io(e)) => debug!(session = self.conn.session_id, error = %e, "i/o error"),
            _ => {}
        }
        let _ = self.flush().await;
        if reason != "starttls" {
            let _ = self.io.shutdown().await;
        }
        reason
    }

    async fn command_loop(&mut self) -> Result<Flow, Closed> {
        // After STARTTLS the client speaks first (EHLO again, RFC 3207 4.2); on a new
        // connection, plain or implicit TLS, the server greets.
        let after_starttls =
            self.conn.tls.is_some() && self.listener.mode != crate::ListenerMode::Submissions;
        if !after_starttls && self.greet().await? == Flow::Close {
            return Ok(Flow::Close);
        }
        loop {
            let line = match self.input.next_line(MAX_AUTH_LINE) {
                Some(line) => line,
                None => {
                    self.flush().await?;
                    self.fill_command().await?;
                    continue;
                }
            };
            self.command_deadline = None;
            let flow = match line {
                Ok(line) if line.len() + 2 > MAX_COMMAND_LINE && !is_auth(&line) => self.too_long(),
                Ok(line) => self.dispatch(&line).await?,
                Err(LineError::TooLong) => self.too_long(),
            };
            if flow != Flow::Continue {
                return Ok(flow);
            }
        }
    }

    fn too_long(&mut self) -> Flow {
        self.fail(Reply::new(
            500,
            "5.5.2",
            "Line too long (RFC 5321 4.5.3.1.4: 512 octets at most)",
        ))
    }

    async fn dispatch(&mut self, line: &[u8]) -> Step {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => return Ok(self.fail(e.reply)),
        };
        if let Some(flow) = self.junk_or_bdat_sequence(&cmd) {
            return Ok(flow);
        }
        if self.needs_tls_first(&cmd) {
            // RFC 3207 4: a server that requires TLS answers 530 until STARTTLS.
            return Ok(self.fail(Reply::new(
                530,
                "5.7.0",
                "Must issue a STARTTLS command first",
            )));
        }
        match cmd {
            Command::Ehlo(name) => self.ehlo(name, true).await,
            Command::Helo(name) => self.ehlo(name, false).await,
            Command::Mail { sender, params } => self.mail(sender, params).await,
            Command::Rcpt { recipient, params } => self.rcpt(recipient, params).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => Ok(self.rset()),
            Command::Noop => Ok(self.reply(Reply::new(250, "2.0.0", "Ok"))),
            Command::Quit => Ok(self.quit()),
            Command::Help(_) => Ok(self.help()),
            Command::Vrfy(_) => Ok(self.vrfy()),
            Command::Expn(_) => Ok(self.fail(Reply::new(502, "5.5.1", "EXPN is disabled"))),
            Command::StartTls => Ok(self.starttls()),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
            Command::Etrn(node) => Ok(self.etrn(&node)),
            Command::NotImplemented(verb) => Ok(self.not_offered(&verb)),
        }
    }

    /// Queues a reply for the next flush. Replies to pipelined commands go out together when
    /// the input runs dry (RFC 2920 3.2).
    fn push(&mut self, reply: &Reply) {
        reply.write_to(&mut self.out);
    }

    fn reply(&mut self, reply: Reply) -> Flow {
        self.push(&reply);
        Flow::Continue
    }

    /// A negative reply; counts towards the error limit, past which the session is closed.
    fn fail(&mut self, reply: Reply) -> Flow {
        let closes = reply.code == 421;
        self.push(&reply);
        self.errors += 1;
        if closes {
            return Flow::Close;
        }
        if self.errors >= self.shared.limits.max_errors {
            self.push(&Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} Too many errors, closing connection",
                    self.shared.hostname
                ),
            ));
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Ends the transaction, if any, and tells the policy so.
    fn reset_transaction(&mut self) {
        if self.tx.take().is_some() {
            self.policy.end_transaction();
        }
    }
}
