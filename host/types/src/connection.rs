//! What is known about the client and the session, for policy and trace headers.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The negotiated TLS parameters, recorded in `Received:` and given to policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub sni: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Unique per connection within this process's lifetime; appears in every log line.
    pub session_id: u64,
    /// The listener's name from the config (`smtp`, `submission`, ...).
    pub listener: String,
    pub local_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// The verified reverse DNS name of the client, when a resolver found one.
    pub peer_rdns: Option<String>,
    /// The name the client gave in EHLO/HELO.
    pub helo: Option<String>,
    /// True after EHLO (as opposed to HELO).
    pub esmtp: bool,
    pub tls: Option<TlsInfo>,
    /// The SASL identity, once the client authenticated.
    pub auth_user: Option<String>,
}
