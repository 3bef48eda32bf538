//! Corvid's inbound side.
//!
//! Owns: TCP listeners, TLS (STARTTLS and implicit), SMTP AUTH with its SASL mechanisms and
//! the users file, connection limits (total and per client address), the SMTP session state
//! machine with one handler per verb, timeouts and the minimum data rate, trace headers, and
//! graceful shutdown. Policy is consulted through `corvid_types::Policy` at fixed points and
//! accepted mail is handed to `corvid_types::Intake`.
//!
//! Must not: import wasmtime, resolve DNS, or touch the queue's storage directly. Its tests run
//! against a fake policy and an in-memory intake.

pub mod auth;
mod config;
mod connection;
pub mod flow;
mod limiter;
mod listener;
mod memory;
pub mod proxy;
mod rdns;
mod received;
mod session;
mod shared;
pub mod tls;

pub use config::{AuthSettings, Limits, ListenerConfig, ListenerMode, ServerConfig};
pub use flow::FlowControl;
pub use listener::{BoundServer, ServerError};
pub use memory::MemoryBudget;
pub use session::run_session;
pub use shared::{LiveHandle, LiveSettings, Services, Shared};
