//! AUTH (RFC 4954).

use super::{Flow, Session, Step, MAX_AUTH_LINE};
use crate::auth::{decode_login_field, decode_plain, AuthAttempt, AuthCheck, SaslError};
use corvid_smtp::LineError;
use corvid_types::{AuthCredentials, Reply, Verdict};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The mechanisms offered. SCRAM would need keys derived with PBKDF2 stored next to the
/// argon2id hashes; PLAIN and LOGIN are only offered under TLS, where they are safe.
pub(super) const MECHANISMS: &str = "PLAIN LOGIN";

/// How an AUTH attempt ended, before the reply is chosen.
enum Outcome {
    Success(String),
    Failure,
    Reply(Reply, Flow),
}

impl Session {
    /// AUTH is offered under TLS, or on a listener explicitly trusted for plaintext.
    pub(super) fn offers_auth(&self) -> bool {
        self.listener.offers_auth()
            && (self.conn.tls.is_some() || self.listener.allow_plaintext_auth)
    }

    pub(super) async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Step {
        if let Some(refusal) = self.auth_refusal() {
            return Ok(self.fail(refusal));
        }
        let creds = match self.sasl_exchange(&mechanism, initial).await? {
            Ok(creds) => creds,
            Err(reply) => return Ok(self.fail(reply)),
        };
        // The client's network is charged before the password is hashed: parallel connections
        // share one count, so they cannot run more guesses than `max_failures_per_ip`.
        let shared = std::sync::Arc::clone(&self.shared);
        let ip = self.conn.peer_addr.ip();
        let Some(attempt) = shared.throttle.begin(ip, shared.auth.max_failures_per_ip) else {
            return Ok(self.fail(too_many_failures()));
        };
        let outcome = self.check_credentials(&creds).await;
        Ok(match outcome {
            Outcome::Success(user) => {
                info!(session = self.conn.session_id, client = %self.conn.peer_addr.ip(), user = %user, mechanism = %creds.mechanism, "authenticated");
                self.conn.auth_user = Some(user);
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            Outcome::Reply(reply, Flow::Close) => {
                self.push(&reply);
                Flow::Close
            }
            Outcome::Reply(reply, _) => self.fail(reply),
            Outcome::Failure => self.auth_failed(attempt, &creds.username).await,
        })
    }

    /// RFC 4954 4 and 6: when AUTH may not be used now.
    fn auth_refusal(&self) -> Option<Reply> {
        if !self.listener.offers_auth() {
            return Some(Reply::new(502, "5.5.1", "AUTH not available"));
        }
        if !self.offers_auth() {
            return Some(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        if self.conn.helo.is_none() || !self.conn.esmtp {
            return Some(Reply::new(503, "5.5.1", "Send EHLO first"));
        }
        if self.conn.auth_user.is_some() {
            return Some(Reply::new(503, "5.5.1", "Already authenticated"));
        }
        if self.tx.is_some() {
            return Some(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ));
        }
        let recent = self.shared.throttle.recent(self.conn.peer_addr.ip());
        if recent >= self.shared.auth.max_failures_per_ip {
            return Some(too_many_failures());
        }
        None
    }

    /// Runs PLAIN or LOGIN to the decoded credentials, or the reply that ends the exchange.
    async fn sasl_exchange(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
    ) -> Result<Result<AuthCredentials, Reply>, super::Closed> {
        let decoded = match mechanism {
            "PLAIN" => {
                let line = match initial {
                    Some(line) => line,
                    None => self.challenge("").await?,
                };
                decode_plain(&line)
            }
            "LOGIN" => {
                let user = match initial {
                    Some(line) => line,
                    None => self.challenge("VXNlcm5hbWU6").await?,
                };
                match decode_login_field(&user) {
                    Ok(user) => {
                        let pass = self.challenge("UGFzc3dvcmQ6").await?;
                        decode_login_field(&pass).map(|p| (None, user, p))
                    }
                    Err(e) => Err(e),
                }
            }
            // RFC 4954 4: 504 for a mechanism the server does not support.
            _ => {
                return Ok(Err(Reply::new(
                    504,
                    "5.5.4",
                    "Unrecognized authentication type",
                )))
            }
        };
        Ok(match decoded {
            Ok((authzid, username, password)) => Ok(AuthCredentials {
                mechanism: mechanism.to_string(),
                username,
                authzid,
                password,
            }),
            Err(SaslError::Cancelled) => Err(Reply::new(501, "5.0.0", "Authentication cancelled")),
            Err(SaslError::BadBase64) => Err(Reply::new(501, "5.5.2", "Invalid base64 data")),
            Err(SaslError::Malformed) => {
                Err(Reply::new(501, "5.5.2", "Malformed authentication data"))
            }
        })
    }

    /// Sends `334 <challenge>` and reads the client's response line (RFC 4954 4).
    async fn challenge(&mut self, challenge: &str) -> Result<String, super::Closed> {
        self.push(&Reply::new(334, "", challenge));
        loop {
            match self.io.input.next_line(MAX_AUTH_LINE) {
                Some(Ok(line)) => {
                    self.command_deadline = None;
                    return Ok(String::from_utf8(line).unwrap_or_else(|_| "!".into()));
                }
                // Treated like bad base64: the exchange ends with 501.
                Some(Err(LineError::TooLong)) => return Ok("!".into()),
                None => {
                    self.flush().await?;
                    self.fill_command().await?;
                }
            }
        }
    }

    /// A plugin's `auth` hook decides first; `continue` falls back to the configured backend
    /// (the users file, or Dovecot's auth socket).
    async fn check_credentials(&mut self, creds: &AuthCredentials) -> Outcome {
        let decision = self.policy.auth(&self.conn, creds).await;
        match decision.verdict {
            Verdict::Accept => return Outcome::Success(creds.username.clone()),
            Verdict::Reject(_) => return Outcome::Failure,
            Verdict::Tempfail(r) => return Outcome::Reply(r, Flow::Continue),
            Verdict::Disconnect(r) => return Outcome::Reply(r, Flow::Close),
            Verdict::Continue | Verdict::Discard | Verdict::Quarantine(_) => {}
        }
        // An authzid other than the user itself would mean acting for someone else: refused.
        if creds
            .authzid
            .as_deref()
            .is_some_and(|z| z != creds.username)
        {
            return Outcome::Failure;
        }
        let Some(store) = self.shared.services.credentials.clone() else {
            return Outcome::Failure;
        };
        // A server-wide cap on hashes in progress: argon2id is costly by design, and a flood
        // of AUTH attempts must not take every CPU. RFC 4954 6: 454 is a temporary failure.
        // A backend that does not hash here (Dovecot) bounds its own waiting.
        let permit = match store.hashes_locally() {
            true => match Arc::clone(&self.shared.hash_permits).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let r = Reply::new(
                        454,
                        "4.7.0",
                        "Too many authentications in progress, try again later",
                    );
                    return Outcome::Reply(r, Flow::Continue);
                }
            },
            false => None,
        };
        let (user, pass) = (creds.username.clone(), creds.password.clone());
        let secured = self.conn.tls.is_some() || self.listener.allow_plaintext_auth;
        let (client_ip, local_ip) = (self.conn.peer_addr.ip(), self.conn.local_addr.ip());
        let verified = tokio::task::spawn_blocking(move || {
            let attempt = AuthAttempt {
                username: &user,
                password: &pass,
                secured,
                client_ip: Some(client_ip),
                local_ip: Some(local_ip),
            };
            let checked = store.check(&attempt);
            drop(permit);
            checked
        })
        .await
        .unwrap_or_else(|e| AuthCheck::Unavailable(e.to_string()));
        match verified {
            AuthCheck::Accepted(user) => Outcome::Success(user),
            AuthCheck::Rejected => Outcome::Failure,
            // RFC 4954 6: 454 4.7.0 when the server cannot check now (Dovecot down); not
            // counted as a failure of the client. The reason is logged, not sent.
            AuthCheck::Unavailable(why) => {
                warn!(session = self.conn.session_id, error = %why, "password check failed");
                let r = Reply::new(454, "4.7.0", "Temporary authentication failure");
                Outcome::Reply(r, Flow::Continue)
            }
        }
    }

    /// 535 after a delay that grows with the recent failures from this client address; the
    /// connection is closed after too many failures in it.
    async fn auth_failed(&mut self, attempt: crate::auth::Attempt<'_>, user: &str) -> Flow {
        let ip = self.conn.peer_addr.ip();
        let recent = attempt.failed();
        self.auth_failures += 1;
        corvid_types::metrics::observer().auth_failure(&self.conn.listener);
        info!(session = self.conn.session_id, client = %ip, user = %user, failures = recent, "authentication failed");
        let delay = self.shared.auth.failure_delay.saturating_mul(recent.min(8));
        pause(self.shared.abort.clone(), delay).await;
        let flow = self.fail(Reply::new(
            535,
            "5.7.8",
            "Authentication credentials invalid",
        ));
        if flow == Flow::Continue
            && self.auth_failures >= self.shared.auth.max_failures_per_connection
        {
            self.push(&Reply::new(
                421,
                "4.7.0",
                "Too many failed authentications, closing connection",
            ));
            return Flow::Close;
        }
        flow
    }
}

/// RFC 4954 6: 454 4.7.0, temporary authentication failure.
fn too_many_failures() -> Reply {
    Reply::new(
        454,
        "4.7.0",
        "Too many failed authentications, try again later",
    )
}

/// Sleeps `d`, unless the server is being stopped. A free function: a `&Session` held across
/// an await would require the session to be `Sync`.
async fn pause(abort: tokio_util::sync::CancellationToken, d: Duration) {
    tokio::select! {
        _ = abort.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
