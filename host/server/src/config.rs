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
    /// Client networks allowed to relay without authenticating (none by default).
    #[serde(default)]
    pub relay_networks: Vec<ipnet::IpNet>,
    /// Clients allowed to start queue runs with ETRN (RFC 1985); none by default.
    #[serde(default)]
    pub etrn_networks: Vec<ipnet::IpNet>,
    #[serde(default)]
    pub auth: AuthSettings,
    /// Intake slows down when delivery falls behind (`[queue] flow_*`).
    #[serde(default)]
    pub flow: crate::FlowControl,
}

/// What a listener is for (RFC 8314 3, RFC 6409).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Port 25: mail for local domains from anyone; STARTTLS offered; AUTH offered under TLS
    /// but not required.
    #[default]
    Smtp,
    /// Port 587: STARTTLS, and AUTH required before MAIL (RFC 6409 4.3).
    Submission,
    /// Port 465: TLS from the first byte (RFC 8314 3.3), AUTH required before MAIL.
    Submissions,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// Address and port; port 0 picks a free port (tests).
    pub address: SocketAddr,
    #[serde(default)]
    pub mode: ListenerMode,
    /// Refuse mail commands until STARTTLS (RFC 3207 4). Default: on for submission.
    pub require_tls: Option<bool>,
    /// Offer AUTH on this listener. Default: on.
    pub auth: Option<bool>,
    /// Offer AUTH without TLS. Only for a trusted network path (e.g. loopback behind a
    /// proxy): passwords would otherwise cross the network in the clear.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Every connection starts with a PROXY protocol header naming the real client
    /// (src/proxy.rs); only from `proxy_from`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The networks (load balancers) that may send PROXY headers.
    #[serde(default)]
    pub proxy_from: Vec<ipnet::IpNet>,
}

impl ListenerConfig {
    pub fn requires_tls(&self) -> bool {
        self.require_tls
            .unwrap_or(self.mode == ListenerMode::Submission)
    }

    pub fn requires_auth(&self) -> bool {
        self.mode != ListenerMode::Smtp
    }

    pub fn offers_auth(&self) -> bool {
        self.auth.unwrap_or(true)
    }
}

/// SMTP AUTH settings shared by every listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Wait before answering a failed attempt, multiplied by the recent failures from that
    /// client address (capped at 8 times), to slow password guessing.
    #[serde(with = "humantime_serde")]
    pub failure_delay: Duration,
    /// Failed attempts in one connection before it is closed with 421.
    pub max_failures_per_connection: u32,
    /// Failed attempts from one client address within `failure_window` before AUTH is refused
    /// outright with 454 until the window passes.
    pub max_failures_per_ip: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// An authenticated user may only use its own addresses in MAIL FROM.
    pub restrict_sender: bool,
    /// ... and in the From: header of its messages.
    pub restrict_from_header: bool,
    /// The users file (`name:argon2id-hash[:addresses]`); read by the binary, which hands the
    /// server a `Credentials` implementation. Default: `<data_dir>/users`.
    pub users_file: Option<std::path::PathBuf>,
    /// Password hashes computed at once by the whole server (argon2id is made to be costly);
    /// beyond it AUTH gets 454 4.7.0 (RFC 4954 6). 0 = twice the number of CPUs.
    pub max_concurrent_hashes: usize,
    /// Where SMTP AUTH checks passwords: the users file, or Dovecot's auth socket.
    pub backend: crate::auth::AuthBackend,
    /// Dovecot's auth-client socket (a `service auth { unix_listener }`), for
    /// `backend = "dovecot"`.
    pub dovecot_socket: Option<std::path::PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            failure_delay: Duration::from_secs(1),
            max_failures_per_connection: 3,
            max_failures_per_ip: 20,
            failure_window: Duration::from_secs(15 * 60),
            restrict_sender: true,
            restrict_from_header: false,
            users_file: None,
            max_concurrent_hashes: 0,
            backend: crate::auth::AuthBackend::File,
            dovecot_socket: None,
        }
    }
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
    /// Time a DATA/BDAT transfer may go without receiving a byte (RFC 5321 4.5.3.2.6 asks
    /// clients for 3 minutes per block; the server is more patient).
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Octets per second a client must sustain during DATA/BDAT, over every sliding
    /// `data_rate_window` after the first (0 = no minimum); then 421 4.4.2 and close.
    pub min_data_rate: u64,
    /// Negative replies in one session before it is closed with 421.
    pub max_errors: u32,
    /// Messages per connection before further MAIL commands are refused.
    pub max_messages_per_connection: u32,
    /// How long running sessions may take to finish after shutdown is requested.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `Received:` fields a message may carry; more is a mail loop, refused with 554 5.4.6 at
    /// the end of DATA (RFC 5321 6.3, RFC 3463 X.4.6 routing loop detected).
    pub max_hops: usize,
    /// Header fields a message may have; more gets 552 5.3.4 (RFC 3463 X.3.4: too big for the
    /// system), checked before any per-header structure is built for plugins or rewrites.
    pub max_header_fields: usize,
    /// Non-mail commands (NOOP, RSET, VRFY, EXPN, HELP, ETRN, unknown ones) in one session;
    /// beyond it 421 4.7.0 and close (Postfix's `smtpd_junk_command_limit`).
    pub max_junk_commands: u32,
    /// Total time a session may last, whatever it does; then 421 4.7.0 and close.
    #[serde(with = "humantime_serde")]
    pub max_session_time: Duration,
    /// How long the server waits before its 220 greeting; a client that talks in that time
    /// (or whose bytes are already there when the greeting is due) is refused with 554 5.5.0
    /// (RFC 5321 4.3.1: the client waits for the greeting). 0 = no wait, only buffered bytes.
    #[serde(with = "humantime_serde")]
    pub greet_delay: Duration,
    /// Message bytes held in memory by all sessions together, charged before each read;
    /// beyond it DATA/BDAT get 452 4.3.1 (RFC 3463 X.3.1: mail system full), and so does a
    /// MAIL whose `SIZE=` cannot fit now (RFC 1870 6.1).
    pub max_inflight_bytes: usize,
    /// `min_data_rate` is measured over sliding windows of this length.
    #[serde(with = "humantime_serde")]
    pub data_rate_window: Duration,
    /// Time allowed for the client's reverse DNS (PTR, then the names' addresses).
    #[serde(with = "humantime_serde")]
    pub rdns_timeout: Duration,
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
            max_hops: 100,
            max_header_fields: 1000,
            max_junk_commands: 100,
            max_session_time: Duration::from_secs(30 * 60),
            greet_delay: Duration::ZERO,
            max_inflight_bytes: 256 * 1024 * 1024,
            data_rate_window: Duration::from_secs(30),
            rdns_timeout: Duration::from_secs(2),
        }
    }
}
