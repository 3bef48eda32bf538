//! One SMTP session: the state machine and its I/O. Each verb has its handler in a sibling
//! module; this file owns reading, writing, deadlines and the command loop.

mod data;
mod ehlo;
mod envelope;
mod modify;
mod verbs;

use crate::config::Limits;
use corvid_smtp::{parse_command, Command, Input, LineError};
use corvid_types::{ConnectionInfo, Directory, Envelope, Intake, Policy, PolicySession, Reply};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF.
const MAX_COMMAND_LINE: usize = 512;
const READ_CHUNK: usize = 16 * 1024;

/// What every session of a server shares.
pub struct Shared {
    pub hostname: String,
    pub limits: Limits,
    pub policy: Arc<dyn Policy>,
    pub intake: Arc<dyn Intake>,
    pub directory: Arc<Directory>,
    /// Cancelled when shutdown starts: idle sessions say 421 and close.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: every session closes at once.
    pub abort: CancellationToken,
    next_session: AtomicU64,
}

impl Shared {
    pub fn new(
        hostname: String,
        limits: Limits,
        policy: Arc<dyn Policy>,
        intake: Arc<dyn Intake>,
        directory: Arc<Directory>,
    ) -> Self {
        Shared {
            hostname,
            limits,
            policy,
            intake,
            directory,
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            next_session: AtomicU64::new(1),
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// Whether the command loop goes on after a handler.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Why a session ended early; carried out of handlers with `?`.
#[derive(Debug)]
enum Closed {
    Eof,
    Timeout,
    Shutdown,
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
}

#[derive(Clone, Debug)]
enum Disposition {
    Discard,
    Quarantine(String),
}

struct Session<S> {
    io: S,
    shared: Arc<Shared>,
    conn: ConnectionInfo,
    policy: Box<dyn PolicySession>,
    input: Input,
    out: Vec<u8>,
    rbuf: Box<[u8]>,
    tx: Option<Transaction>,
    errors: u32,
    messages: u32,
    /// When the command being received must be complete (RFC 5321 4.5.3.2.7); kept across
    /// partial reads so a client trickling bytes cannot hold the session forever.
    command_deadline: Option<tokio::time::Instant>,
}

/// Runs one session to its end over any byte stream (a TCP socket, or a duplex pipe in tests).
pub async fn run_session<S>(shared: Arc<Shared>, io: S, conn: ConnectionInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let policy = shared.policy.session(&conn);
    let mut s = Session {
        io,
        shared,
        conn,
        policy,
        input: Input::new(),
        out: Vec::with_capacity(1024),
        rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
        tx: None,
        errors: 0,
        messages: 0,
        command_deadline: None,
    };
    let end = s.run().await;
    let _ = s.io.shutdown().await;
    info!(
        session = s.conn.session_id,
        client = %s.conn.peer_addr.ip(),
        helo = s.conn.helo.as_deref().unwrap_or(""),
        messages = s.messages,
        errors = s.errors,
        duration_ms = started.elapsed().as_millis() as u64,
        end = end,
        "connection closed"
    );
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    async fn run(&mut self) -> &'static str {
        let result = self.command_loop().await;
        let reason = match &result {
            Ok(_) => "quit",
            Err(Closed::Eof) => "eof",
            Err(Closed::Timeout) => "timeout",
            Err(Closed::Shutdown) => "shutdown",
            Err(Closed::Io(_)) => "io-error",
        };
        match result {
            Err(Closed::Timeout) => {
                let r = Reply::new(
                    421,
                    "4.4.2",
                    format!(
                        "{} Timeout exceeded, closing connection",
                        self.shared.hostname
                    ),
                );
                self.push(&r);
            }
            Err(Closed::Shutdown) => {
                let r = Reply::new(
                    421,
                    "4.3.2",
                    format!(
                        "{} Service shutting down, try again later",
                        self.shared.hostname
                    ),
                );
                self.push(&r);
            }
            Err(Closed::Io(e)) => debug!(session = self.conn.session_id, error = %e, "i/o error"),
            _ => {}
        }
        let _ = self.flush().await;
        reason
    }

    async fn command_loop(&mut self) -> Result<(), Closed> {
        if self.greet().await? == Flow::Close {
            return Ok(());
        }
        loop {
            let line = match self.input.next_line(MAX_COMMAND_LINE) {
                Some(line) => line,
                None => {
                    self.flush().await?;
                    self.fill_command().await?;
                    continue;
                }
            };
            self.command_deadline = None;
            let flow = match line {
                Ok(line) => self.dispatch(&line).await?,
                Err(LineError::TooLong) => self.fail(Reply::new(
                    500,
                    "5.5.2",
                    "Line too long (RFC 5321 4.5.3.1.4: 512 octets at most)",
                )),
            };
            if flow == Flow::Close {
                return Ok(());
            }
        }
    }

    async fn dispatch(&mut self, line: &[u8]) -> Step {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => return Ok(self.fail(e.reply)),
        };
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
            Command::StartTls => Ok(self.not_offered("STARTTLS")),
            Command::Auth { .. } => Ok(self.not_offered("AUTH")),
            Command::Etrn(_) => Ok(self.not_offered("ETRN")),
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

    async fn flush(&mut self) -> Result<(), Closed> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.limits.command_timeout;
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(Closed::Io(e)),
            Err(_) => Err(Closed::Timeout),
        }
    }

    /// Reads more input while waiting for a command: bounded by the per-command deadline and
    /// interrupted by shutdown.
    async fn fill_command(&mut self) -> Result<(), Closed> {
        let deadline = *self.command_deadline.get_or_insert_with(|| {
            tokio::time::Instant::now() + self.shared.limits.command_timeout
        });
        let shutdown = self.shared.shutdown.clone();
        tokio::select! {
            _ = shutdown.cancelled() => Err(Closed::Shutdown),
            r = tokio::time::timeout_at(deadline, self.io.read(&mut self.rbuf)) => self.take_read(r),
        }
    }

    /// Reads more message content: bounded by `deadline` and only by a hard abort, so a message
    /// being sent when shutdown starts may still finish within the grace period.
    async fn fill_data(&mut self, deadline: tokio::time::Instant) -> Result<usize, Closed> {
        let abort = self.shared.abort.clone();
        let before = self.input.len();
        tokio::select! {
            _ = abort.cancelled() => Err(Closed::Shutdown),
            r = tokio::time::timeout_at(deadline, self.io.read(&mut self.rbuf)) => self.take_read(r),
        }?;
        Ok(self.input.len().saturating_sub(before))
    }

    fn take_read(
        &mut self,
        r: Result<std::io::Result<usize>, tokio::time::error::Elapsed>,
    ) -> Result<(), Closed> {
        match r {
            Err(_) => Err(Closed::Timeout),
            Ok(Err(e)) => Err(Closed::Io(e)),
            Ok(Ok(0)) => Err(Closed::Eof),
            Ok(Ok(n)) => {
                self.input.extend(&self.rbuf[..n]);
                Ok(())
            }
        }
    }

    /// Ends the transaction, if any, and tells the policy so.
    fn reset_transaction(&mut self) {
        if self.tx.take().is_some() {
            self.policy.end_transaction();
        }
    }
}
