//! Opening a session: connect, greeting, EHLO (HELO fallback) or LHLO, STARTTLS, AUTH.

use super::conn::{AsyncStream, Conn};
use super::tls::{is_certificate_error, server_name, TlsConfigs};
use super::ClientError;
use super::Timeouts;
use crate::route::AuthConfig;
use base64::Engine as _;
use corvid_smtp::{Capabilities, Reply};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::{TcpStream, UnixStream};

/// SMTP (RFC 5321) or LMTP (RFC 2033, which differs in LHLO and in one reply per recipient
/// after DATA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Lmtp,
}

/// Whether to use STARTTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPolicy {
    Off,
    /// When offered; a failed handshake is reported as [`ClientError::Tls`] so the caller can
    /// connect again without TLS.
    Opportunistic,
    /// Fail when STARTTLS is not offered or the handshake fails.
    Required,
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `host` names the server in logs, SNI (unless DANE's TLSA base domain replaces it) and
    /// `Remote-MTA:`.
    Tcp {
        host: String,
        addr: SocketAddr,
    },
    Unix(PathBuf),
}

impl Endpoint {
    /// `host[ip]:port` (Postfix's form) or the socket path.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Tcp { host, addr } if host == &addr.ip().to_string() => addr.to_string(),
            Endpoint::Tcp { host, addr } => format!("{host}[{}]:{}", addr.ip(), addr.port()),
            Endpoint::Unix(p) => p.display().to_string(),
        }
    }

    /// The name for `Remote-MTA:`.
    pub fn host(&self) -> String {
        match self {
            Endpoint::Tcp { host, .. } => host.clone(),
            Endpoint::Unix(p) => p.display().to_string(),
        }
    }
}

/// Everything a session needs besides the endpoint.
#[derive(Clone)]
pub struct SessionOptions {
    pub protocol: Protocol,
    pub helo: String,
    pub tls: TlsPolicy,
    pub tls_configs: TlsConfigs,
    /// Verify the certificate during the handshake (`tls = "verify"`): a failure ends the
    /// session. Otherwise any certificate is accepted and only recorded as verified or not.
    pub verify: bool,
    pub auth: Option<AuthConfig>,
    pub timeouts: Timeouts,
}

/// An open session, ready for a transaction.
pub struct Session {
    pub(crate) conn: Conn,
    pub caps: Capabilities,
    pub protocol: Protocol,
    pub tls: bool,
    /// The peer's certificate verified for the host name (always so with `verify`).
    pub verified: bool,
    /// Why an opportunistic session's certificate did not verify.
    pub unverified_reason: Option<String>,
    /// The TLS version and whether the certificate verified, for the record.
    pub tls_summary: Option<String>,
    /// The TLS version and cipher suite negotiated, for the per-attempt record.
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub endpoint: Endpoint,
    pub(crate) timeouts: Timeouts,
    /// Transactions completed on this session.
    pub messages: usize,
    /// The server offers REQUIRETLS (RFC 8689 3) in its latest EHLO reply.
    pub requiretls: bool,
    /// The certificate was checked against DANE TLSA records (RFC 7672), set by the caller.
    pub dane: bool,
}

impl Session {
    /// Connects and greets; returns once the session can take MAIL FROM.
    pub async fn open(endpoint: Endpoint, opts: &SessionOptions) -> Result<Session, ClientError> {
        let t = &opts.timeouts;
        let peer = endpoint.describe();
        let connect_err = |e: std::io::Error| ClientError::Connect {
            peer: peer.clone(),
            detail: e.to_string(),
        };
        let connected = tokio::time::timeout(t.connect, async {
            Ok::<Box<dyn AsyncStream>, std::io::Error>(match &endpoint {
                Endpoint::Tcp { addr, .. } => Box::new(TcpStream::connect(addr).await?),
                Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
            })
        })
        .await;
        let stream = match connected {
            Ok(r) => r.map_err(connect_err)?,
            Err(_) => {
                return Err(ClientError::Connect {
                    peer,
                    detail: "connect timed out".into(),
                })
            }
        };
        let mut conn = Conn::new(stream, peer);
        // RFC 5321 4.5.3.2.1: wait 5 minutes for the 220 greeting.
        let greeting = conn.read_reply(t.greeting, "greeting").await?;
        if greeting.code != 220 {
            return Err(reject(&mut conn, "greeting", greeting, t).await);
        }
        let mut session = Session {
            conn,
            caps: Capabilities::default(),
            protocol: opts.protocol,
            tls: false,
            verified: false,
            unverified_reason: None,
            tls_summary: None,
            tls_version: None,
            tls_cipher: None,
            endpoint,
            timeouts: t.clone(),
            messages: 0,
            requiretls: false,
            dane: false,
        };
        session.hello(&opts.helo).await?;
        session.starttls(opts).await?;
        if let Some(auth) = &opts.auth {
            session.authenticate(auth).await?;
        }
        Ok(session)
    }

    /// EHLO, falling back to HELO on a 5xx (RFC 5321 3.2 and 4.1.4); LHLO for LMTP, which has
    /// no fallback (RFC 2033 4.1).
    async fn hello(&mut self, helo: &str) -> Result<(), ClientError> {
        let t = self.timeouts.command;
        let verb = match self.protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        let reply = self
            .conn
            .command(&format!("{verb} {helo}"), t, verb)
            .await?;
        if reply.is_positive() {
            self.caps = Capabilities::from_ehlo(&reply);
            self.requiretls = reply.lines.iter().skip(1).any(|l| {
                l.split(' ')
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case("REQUIRETLS"))
            });
            return Ok(());
        }
        if self.protocol == Protocol::Lmtp || !reply.is_permanent() {
            return Err(reject(&mut self.conn, verb, reply, &self.timeouts).await);
        }
        let reply = self
            .conn
            .command(&format!("HELO {helo}"), t, "HELO")
            .await?;
        if !reply.is_positive() {
            return Err(reject(&mut self.conn, "HELO", reply, &self.timeouts).await);
        }
        // A HELO session has no extensions at all.
        self.caps = Capabilities::default();
        self.requiretls = false;
        Ok(())
    }

    /// STARTTLS per RFC 3207, then EHLO again: what the server said before TLS is forgotten
    /// (RFC 3207 4.2).
    async fn starttls(&mut self, opts: &SessionOptions) -> Result<(), ClientError> {
        if opts.tls == TlsPolicy::Off {
            return Ok(());
        }
        if !self.caps.starttls {
            if opts.tls == TlsPolicy::Required {
                return Err(ClientError::TlsRequired(format!(
                    "TLS is required, but {} does not offer STARTTLS",
                    self.conn.peer
                )));
            }
            return Ok(());
        }
        let reply = self
            .conn
            .command("STARTTLS", self.timeouts.command, "STARTTLS")
            .await?;
        if reply.code != 220 {
            return Err(match opts.tls {
                TlsPolicy::Required => ClientError::TlsRequired(format!(
                    "TLS is required, but {} refused STARTTLS: {reply}",
                    self.conn.peer
                )),
                _ => ClientError::Tls(format!("STARTTLS refused: {reply}")),
            });
        }
        if self.conn.has_unread() {
            // Bytes after the 220 would be read inside the TLS session as if protected
            // (CVE-2011-0411 in reverse): refuse such a server.
            return Err(ClientError::Protocol {
                stage: "STARTTLS",
                detail: "data after the STARTTLS reply".into(),
            });
        }
        // SNI names the endpoint's host, or DANE's TLSA base domain (RFC 7672 8.1).
        let sni = match &opts.tls_configs.sni {
            Some(base) => base.clone(),
            None => self.endpoint.host(),
        };
        let name = server_name(&sni)
            .or_else(|| server_name("localhost"))
            .ok_or_else(|| ClientError::Tls("no usable server name".into()))?;
        let config = match opts.verify {
            true => &opts.tls_configs.verified,
            false => &opts.tls_configs.opportunistic,
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let plain = self.conn.take_stream();
        let handshake = connector.connect(name.clone(), plain);
        let tls = match tokio::time::timeout(self.timeouts.command, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if is_certificate_error(&e) => {
                return Err(ClientError::Certificate(format!("{}: {e}", self.conn.peer)))
            }
            Ok(Err(e)) => return Err(ClientError::Tls(e.to_string())),
            Err(_) => return Err(ClientError::Tls("handshake timed out".into())),
        };
        let checked = match opts.verify {
            true => Ok(()),
            false => match tls.get_ref().1.peer_certificates() {
                Some(chain) => opts.tls_configs.check(chain, &name),
                None => Err("no certificate".into()),
            },
        };
        let version = tls
            .get_ref()
            .1
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "TLS".into());
        self.tls_cipher = tls
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()));
        self.tls_version = Some(version.clone());
        self.tls_summary = Some(match &checked {
            Ok(()) => format!("{version} verified"),
            Err(why) => format!("{version} unverified ({why})"),
        });
        self.verified = checked.is_ok();
        self.unverified_reason = checked.err();
        self.conn.replace_stream(Box::new(tls));
        self.tls = true;
        self.hello(&opts.helo).await
    }

    /// RFC 4954 AUTH with PLAIN (RFC 4616) or else LOGIN; credentials only ever go over TLS
    /// whose certificate was verified for the host name: anyone could present an unverified
    /// one.
    async fn authenticate(&mut self, auth: &AuthConfig) -> Result<(), ClientError> {
        if !self.tls || !self.verified {
            return Err(ClientError::TlsRequired(format!(
                "refusing to send credentials to {} without verified TLS",
                self.conn.peer
            )));
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let t = self.timeouts.command;
        let offers = |m: &str| self.caps.auth.iter().any(|a| a.eq_ignore_ascii_case(m));
        let reply = if offers("PLAIN") {
            let token = b64(&format!("\0{}\0{}", auth.user, auth.password));
            self.conn
                .command(&format!("AUTH PLAIN {token}"), t, "AUTH")
                .await?
        } else if offers("LOGIN") {
            // The LOGIN mechanism (draft-murchison-sasl-login): user and password, each
            // after a 334 challenge.
            let mut reply = self.conn.command("AUTH LOGIN", t, "AUTH").await?;
            for answer in [&auth.user, &auth.password] {
                if reply.code != 334 {
                    break;
                }
                reply = self.conn.command(&b64(answer), t, "AUTH").await?;
            }
            reply
        } else {
            return Err(ClientError::Protocol {
                stage: "AUTH",
                detail: "the server offers neither AUTH PLAIN nor AUTH LOGIN".into(),
            });
        };
        if reply.code != 235 {
            return Err(ClientError::Rejected {
                stage: "AUTH",
                reply,
            });
        }
        Ok(())
    }

    /// RSET (RFC 5321 4.1.1.5) after a transaction that did not complete, so the session can
    /// be reused; false when the session is no longer usable.
    pub async fn reset(&mut self) -> bool {
        matches!(
            self.conn.command("RSET", self.timeouts.command, "RSET").await,
            Ok(r) if r.code == 250
        )
    }

    /// QUIT (RFC 5321 4.1.1.10) and close; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = self
            .conn
            .command("QUIT", self.timeouts.command, "QUIT")
            .await;
    }

    /// The peer for logs.
    pub fn peer(&self) -> &str {
        &self.conn.peer
    }
}

/// A negative reply during session setup: QUIT politely (RFC 5321 3.1 after a 554 greeting)
/// and report the reply.
async fn reject(conn: &mut Conn, stage: &'static str, reply: Reply, t: &Timeouts) -> ClientError {
    if reply.code != 421 {
        let _ = conn.command("QUIT", t.command, "QUIT").await;
    }
    ClientError::Rejected { stage, reply }
}
