//! The seam between the SMTP server and whatever decides policy (the WASM plugin host, or a
//! fake in tests). The server calls these hooks at fixed points and applies the decisions.

use crate::{ConnectionInfo, Decision, Envelope, Recipient};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The points at which policy is consulted. The first six are SMTP stages; the last four belong
/// to the delivery lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Connect,
    Helo,
    Auth,
    Mail,
    Rcpt,
    Data,
    Route,
    Deferred,
    Bounced,
    Delivered,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Route => "route",
            Stage::Deferred => "deferred",
            Stage::Bounced => "bounced",
            Stage::Delivered => "delivered",
        }
    }
}

/// What a client presented in SMTP AUTH (RFC 4954), after SASL decoding.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthCredentials {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    /// The identity whose password this is (SASL authcid).
    pub username: String,
    /// The identity to act as, when different (SASL authzid; PLAIN only).
    pub authzid: Option<String>,
    pub password: String,
}

/// Never print the password, even in debug output.
impl std::fmt::Debug for AuthCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("authzid", &self.authzid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The message at the DATA stage: the content as received (after dot-unstuffing), without the
/// trace header the server adds.
#[derive(Clone, Copy, Debug)]
pub struct MessageView<'a> {
    pub content: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// The header section: everything up to and including the first empty line
    /// (RFC 5322 2.1), or the whole content when there is no body.
    pub fn header_section(&self) -> &'a [u8] {
        let c = self.content;
        if c.starts_with(b"\r\n") {
            return &c[..2];
        }
        match c.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => &c[..i + 4],
            None => c,
        }
    }
}

/// A policy: one [`PolicySession`] per SMTP connection, so an implementation can keep per-session
/// state (a warm plugin instance, the generation it started on) without locks.
pub trait Policy: Send + Sync {
    fn session(&self, conn: &ConnectionInfo) -> Box<dyn PolicySession>;
}

/// The hooks of one connection. Every hook has a default of `continue`, so an implementation
/// overrides only what it cares about. A policy "no" is a [`Decision`], never an error: an
/// implementation that fails internally must turn the failure into a decision itself (the
/// plugin host applies the plugin's failure policy).
#[async_trait]
pub trait PolicySession: Send {
    async fn connect(&mut self, _conn: &ConnectionInfo) -> Decision {
        Decision::proceed()
    }

    /// After EHLO/HELO; `conn.helo` holds the name given.
    async fn helo(&mut self, _conn: &ConnectionInfo) -> Decision {
        Decision::proceed()
    }

    /// When a client authenticates (SMTP AUTH). `Accept` authenticates the client, `Reject`
    /// refuses the credentials (535), `Continue` leaves the decision to the users file. This is
    /// how an LDAP or HTTP password check is written as a plugin. The password is given only
    /// to this hook and must never be logged.
    async fn auth(&mut self, _conn: &ConnectionInfo, _creds: &AuthCredentials) -> Decision {
        Decision::proceed()
    }

    /// After a syntactically valid MAIL FROM; `env.sender` and `env.params` are set.
    async fn mail(&mut self, _conn: &ConnectionInfo, _env: &Envelope) -> Decision {
        Decision::proceed()
    }

    /// For each RCPT TO; `env.recipients` holds the ones accepted so far.
    async fn rcpt(
        &mut self,
        _conn: &ConnectionInfo,
        _env: &Envelope,
        _rcpt: &Recipient,
    ) -> Decision {
        Decision::proceed()
    }

    /// At the end of DATA/BDAT, before the message is queued.
    async fn data(
        &mut self,
        _conn: &ConnectionInfo,
        _env: &Envelope,
        _message: MessageView<'_>,
    ) -> Decision {
        Decision::proceed()
    }

    /// The transaction ended (message queued, RSET, or a new MAIL after an error).
    fn end_transaction(&mut self) {}

    /// Host-computed authentication results for the hooks that follow (they are facts, not
    /// capabilities): the SPF result before `mail` (kept for `rcpt`), and before `data` the
    /// DKIM, DMARC and ARC results with SPF in `message`. Not called for clients that are not
    /// checked (see `MailAuth::checks`). Default: ignored.
    fn auth_results(
        &mut self,
        _spf: Option<&crate::SpfCheck>,
        _message: Option<&crate::AuthResults>,
    ) {
    }

    /// After `data` accepted a message from a client whose mail is signed: whether and how to
    /// DKIM-sign it (a plugin's choice). Default: the configured keys of the From: domain.
    fn signing(&mut self) -> crate::SigningRequest {
        crate::SigningRequest::Default
    }
}

/// The built-in default: no opinion anywhere, so only the server's own rules (local
/// recipients, no relaying) decide.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPolicy;

struct NoPolicySession;

impl PolicySession for NoPolicySession {}

impl Policy for NoPolicy {
    fn session(&self, _conn: &ConnectionInfo) -> Box<dyn PolicySession> {
        Box::new(NoPolicySession)
    }
}
