//! Corvid's WebAssembly plugin runtime.
//!
//! Owns: the wasmtime engine (component model, epoch interruption with a yielding deadline,
//! pooling allocator), the `bindgen!` bindings of the `corvid:plugin` WIT world in `wit/`, the
//! host imports (log, config, kv, dns, clock, metrics, the DATA message resource) gated by
//! manifest capabilities, limits, generations and hot reload, the compiled-code cache, and
//! chain evaluation. It implements [`corvid_types::Policy`] through [`PluginHost`].
//!
//! Must not: leak wasmtime types in its public API, own sockets, or touch the queue's storage
//! (kv and DNS come in through the [`KvStore`] and [`DnsResolver`] traits).
//!
//! Behaviour in brief:
//! - A fresh store and instance per plugin per SMTP transaction, created at the plugin's first
//!   hook of the transaction and dropped at `end_transaction`.
//! - Chain: plugins in `order`; the first non-`continue` verdict ends the stage; modifications
//!   of the plugins that ran are collected in order.
//! - Every decision is validated (reply code ranges, enhanced code class, sanitised text,
//!   modifications allowed at the stage). A trap, timeout, memory exhaustion or invalid
//!   decision applies the plugin's failure policy: `451 4.3.0 Temporary policy failure` or
//!   `continue`; the instance is discarded and the details are logged.
//! - Reload builds a new [`Generation`] off the async threads and swaps it atomically; a
//!   transaction finishes on the generation it started on.
//! - Delivery-side hooks (`route`, `deferred`, `bounced`, `delivered`) are inherent methods of
//!   [`PluginHost`] (fresh instance per call; a failing plugin is skipped) until
//!   `corvid-types` has a delivery-policy seam.

mod bindings;
mod cache;
mod convert;
mod delivery;
pub mod dns;
mod engine;
mod error;
mod generation;
mod host;
mod imports;
mod instance;
pub mod kv;
mod manifest;
mod message;
mod metrics;
mod session;
mod state;
mod stats;
mod validate;

pub use delivery::{BounceAction, Deferral, DeliveryInfo, Route, RouteRequest};
pub use dns::{DnsError, DnsResolver, StaticDns};
pub use engine::{EngineOptions, PluginEngine};
pub use error::Error;
pub use generation::{Generation, PluginState, PluginStatus};
pub use host::{PluginHost, Services};
pub use kv::{KvError, KvStore, MemoryKv};
pub use manifest::{Capability, FailurePolicy, Limits, Manifest};
pub use metrics::{MetricSample, MetricValue};
pub use stats::HookStats;
