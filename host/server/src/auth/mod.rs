//! SMTP AUTH support: SASL decoding, the users file, Dovecot's auth socket, and slowing down
//! password guessing.

mod dovecot;
mod passwd_file;
mod sasl;
mod throttle;
mod users;

pub use dovecot::DovecotAuth;
pub use sasl::{decode_login_field, decode_plain, SaslError};
pub use throttle::{Attempt, AuthThrottle};
pub use users::{hash_password, UsersError, UsersFile};

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// `auth.backend`: where SMTP AUTH checks passwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthBackend {
    /// The users file (`auth.users_file`), managed by `corvid user`.
    #[default]
    File,
    /// Dovecot's auth socket (`auth.dovecot_socket`), for sites whose users live in Dovecot.
    Dovecot,
}

/// The `Credentials` the settings name. `users_file` is the users file's path (the binary
/// knows its default); `delimiter` is the recipient delimiter for sender checks.
pub fn credentials(
    settings: &crate::config::AuthSettings,
    users_file: &Path,
    delimiter: char,
) -> Result<Arc<dyn Credentials>, UsersError> {
    Ok(match settings.backend {
        AuthBackend::File => Arc::new(UsersFile::load(users_file, delimiter)?),
        AuthBackend::Dovecot => {
            let Some(socket) = &settings.dovecot_socket else {
                return Err(UsersError::NoDovecotSocket);
            };
            Arc::new(DovecotAuth::new(socket, delimiter))
        }
    })
}

/// One set of credentials to check, with what a remote checker (Dovecot) wants to know about
/// the connection.
#[derive(Clone, Copy, Debug)]
pub struct AuthAttempt<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// The session is under TLS (or on a listener trusted for plaintext AUTH).
    pub secured: bool,
    pub client_ip: Option<IpAddr>,
    pub local_ip: Option<IpAddr>,
}

impl<'a> AuthAttempt<'a> {
    pub fn new(username: &'a str, password: &'a str) -> AuthAttempt<'a> {
        AuthAttempt {
            username,
            password,
            secured: false,
            client_ip: None,
            local_ip: None,
        }
    }
}

/// How a check ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthCheck {
    /// Good credentials, for this user name (the checker's spelling of it).
    Accepted(String),
    /// Wrong user name or password: 535 (RFC 4954 6).
    Rejected,
    /// The checker could not decide (Dovecot unreachable): 454 4.7.0 (RFC 4954 6), and the
    /// failure does not count against the client. The text is for the log, not the client.
    Unavailable(String),
}

/// Checks passwords and knows which sender addresses a user may use. The server calls
/// `check` from a blocking thread: password hashing is deliberately slow, and a remote
/// checker blocks on its socket.
pub trait Credentials: Send + Sync {
    fn verify(&self, username: &str, password: &str) -> bool;

    /// `verify`, with the connection's details and a temporary failure as a possible answer.
    fn check(&self, attempt: &AuthAttempt<'_>) -> AuthCheck {
        if self.verify(attempt.username, attempt.password) {
            AuthCheck::Accepted(attempt.username.to_string())
        } else {
            AuthCheck::Rejected
        }
    }

    /// Whether `check` computes password hashes in this process, so that it counts against
    /// `auth.max_concurrent_hashes`. A remote checker bounds its own waiting.
    fn hashes_locally(&self) -> bool {
        true
    }

    /// Whether `user` may send as `address` (RFC 6409 6.1: submission servers check this).
    fn owns_address(&self, user: &str, address: &corvid_types::Address) -> bool;
}

/// `alice+tag@example.org` belongs to `alice@example.org`.
pub(crate) fn same_address(a: &str, b: &corvid_types::Address, delimiter: char) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    let b_local = b
        .local
        .split_once(delimiter)
        .map_or(b.local.as_str(), |(base, _)| base);
    local.eq_ignore_ascii_case(b_local) && domain.eq_ignore_ascii_case(&b.domain)
}
