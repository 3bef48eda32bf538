//! One SMTP session: the state machine. Each verb has its handler in a sibling module; this
//! file owns the command loop and the session's state. The bytes themselves go through a
//! [`Connection`] (`crate::connection`), which the session owns for its whole life, STARTTLS
//! included.

mod auth;
mod auth_checks;
mod data;
mod ehlo;
mod envelope;
mod envelope_mods;
mod flow;
mod from_check;
mod gate;
mod header_limits;
mod io;
mod modify;
mod rate;
mod starttls;
mod transfer;
mod verbs;

use crate::config::ListenerConfig;
use crate::connection::Connection;
use crate::shared::Shared;
use corvid_smtp::{parse_command, Command, LineError};
use corvid_types::{ConnectionInfo, Envelope, PolicySession, Reply};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF.
const MAX_COMMAND_LINE: usize = 512;
/// RFC 4954 4: AUTH lines (the command with its initial response, and SASL responses) may be
/// up to 12288 octets.
const MAX_AUTH_LINE: usize = 12288;

/// Whether the command loop goes on after a handler.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
    /// 220 to STARTTLS is queued: upgrade the connection, then go on with the SMTP state
    /// reset (RFC 3207 4.2).
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
    /// The TLS handshake (STARTTLS or implicit TLS) failed or timed out.
    Handshake,
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
    /// SPF from MAIL, for DMARC at the end of DATA (`auth_checks.rs`).
    spf: Option<corvid_types::SpfCheck>,
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
            spf: None,
        }
    }
}

#[derive(Clone, Debug)]
enum Disposition {
    Discard,
    Quarantine(String),
}

pub(crate) struct Session {
    /// The stream, its buffered input and the replies not yet written.
    io: Connection,
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    conn: ConnectionInfo,
    policy: Box<dyn PolicySession>,
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
/// On an implicit-TLS listener (`submissions`) the TLS handshake comes first (RFC 8314 3.3).
/// The counters (errors, messages, junk commands, AUTH failures) are per connection: STARTTLS
/// does not reset them.
pub async fn run_session<S>(
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    io: S,
    conn: ConnectionInfo,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The settings of this moment, kept to the end even if a reload changes them meanwhile.
    let shared = Arc::new(shared.for_session());
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + shared.limits.max_session_time;
    let mut conn = conn;
    if let (None, Some(dns)) = (&conn.peer_rdns, &shared.services.dns) {
        let ip = conn.peer_addr.ip();
        conn.peer_rdns =
            crate::rdns::confirmed_name(dns.as_ref(), ip, shared.limits.rdns_timeout).await;
    }
    let policy = shared.services.policy.session(&conn);
    let mut s = Session {
        io: Connection::new(io),
        shared,
        listener,
        conn,
        policy,
        tx: None,
        errors: 0,
        messages: 0,
        auth_failures: 0,
        junk: 0,
        session_deadline: deadline,
        command_deadline: None,
    };
    let end = s.run().await;
    info!(
        session = s.conn.session_id,
        client = %s.conn.peer_addr.ip(),
        helo = s.conn.helo.as_deref().unwrap_or(""),
        tls = s.conn.tls.as_ref().map(|t| t.version.as_str()).unwrap_or("no"),
        user = s.conn.auth_user.as_deref().unwrap_or(""),
        messages = s.messages,
        errors = s.errors,
        duration_ms = started.elapsed().as_millis() as u64,
        end,
        "connection closed"
    );
}

impl Session {
    /// Runs the session; returns why it ended.
    async fn run(&mut self) -> &'static str {
        let result = self.command_loop().await;
        let reason = match &result {
            Ok(_) => "quit",
            Err(Closed::Eof) => "eof",
            Err(Closed::Timeout) => "timeout",
            Err(Closed::Shutdown) => "shutdown",
            Err(Closed::SessionTime) => "session-time",
            Err(Closed::Handshake) => "tls-handshake-failed",
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
        self.io.shutdown().await;
        reason
    }

    async fn command_loop(&mut self) -> Result<Flow, Closed> {
        if self.listener.mode == crate::ListenerMode::Submissions {
            // RFC 8314 3.3: TLS from the first byte, then the usual greeting.
            self.start_tls().await?;
        }
        if self.greet().await? == Flow::Close {
            return Ok(Flow::Close);
        }
        loop {
            let line = match self.io.input.next_line(MAX_AUTH_LINE) {
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
            match flow {
                Flow::Continue => {}
                Flow::Close => return Ok(flow),
                Flow::StartTls => {
                    // The 220 goes out in plaintext; then the same session goes on over TLS.
                    self.flush().await?;
                    self.start_tls().await?;
                    self.forget_after_starttls();
                }
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
            Command::Etrn(node) => Ok(self.etrn(&node).await),
            Command::NotImplemented(verb) => Ok(self.not_offered(&verb)),
        }
    }

    /// Queues a reply for the next flush. Replies to pipelined commands go out together when
    /// the input runs dry (RFC 2920 3.2).
    fn push(&mut self, reply: &Reply) {
        self.io.push(reply);
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
