//! The server's settings, filled in by the binary from the config file.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The name in the greeting, the EHLO reply and `Received:` headers.
    pub hostname: String,
    pub limits: Limits,
    pub listeners: Vec<ListenerConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Port 25 semantics: mail from anyone for local domains.
    #[default]
    Smtp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// Address and port; port 0 picks a free port (tests).
    pub address: SocketAddr,
    #[serde(default)]
    pub mode: ListenerMode,
}

/// Every resource a client can make the server spend is bounded here.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message accepted, in octets; advertised as `SIZE` (RFC 1870).
    pub max_message_size: usize,
    /// Recipients per message; RFC 5321 4.5.3.1.8 requires at least 100.
    pub max_recipients: usize,
    /// Concurrent connections in total.
    pub max_connections: usize,
    /// Concurrent connections from one client address.
    pub max_connections_per_ip: usize,
    /// Time allowed for each command line to arrive (RFC 5321 4.5.3.2.7: at least 5 minutes).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Base time allowed for the DATA content (RFC 5321 4.5.3.2.8: 10 minutes), extended by
    /// one second per `min_data_rate` octets received.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Octets per second a client must keep up during DATA/BDAT past `data_timeout`.
    pub min_data_rate: u64,
    /// Negative replies in one session before it is closed with 421.
    pub max_errors: u32,
    /// Messages per connection before further MAIL commands are refused.
    pub max_messages_per_connection: u32,
    /// How long running sessions may take to finish after shutdown is requested.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            min_data_rate: 1024,
            max_errors: 20,
            max_messages_per_connection: 100,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
