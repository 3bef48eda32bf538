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
//! - Instances are taken per hook call at the session stages (`connect`, `helo`, `auth`) and
//!   at the delivery stages, and per SMTP transaction from MAIL to the end of DATA or RSET:
//!   fresh by default (`instance = "transaction"`), or warm from a per-plugin pool (`"pool"`,
//!   and `"connection"`, its older name) for Python and JavaScript runtimes whose first calls
//!   are slow. No connection holds an instance between transactions. A failed instance is
//!   always discarded. The engine's limits (instances, total memory) apply the failure
//!   policy at once when reached.
//! - Sandbox: WASI without files, environment, arguments or sockets; clocks frozen at the
//!   epoch without `clock`, randomness seeded per instance without `random`.
//! - `wasi:http` requests only to the manifest's `http` URL prefixes, each under its own
//!   deadline and response-size cap (see the `http` module).
//! - Budgets: fuel per hook (`limits.hook_fuel`, deterministic) and a wall-time backstop
//!   (`limits.hook_time_ms`, 5 s); a busy guest yields to the executor every epoch tick.
//! - Chain: plugins in `order`; the first non-`continue` verdict ends the stage; modifications
//!   of the plugins that ran are collected in order.
//! - Every decision is validated (reply code ranges, enhanced code class, sanitised text,
//!   modifications allowed at the stage); a quarantine reason is prefixed with the plugin's
//!   name. A trap, spent budget, timeout, memory exhaustion or invalid decision applies the
//!   plugin's failure policy: `451 4.3.0 Temporary policy failure` or `continue`; the
//!   instance is discarded and the details are logged. After repeated failures the plugin's
//!   circuit breaker bypasses it (failure policy, no instance) for a cool-down.
//! - Reload builds a new [`Generation`] off the async threads and swaps it atomically; a
//!   transaction finishes on the generation it started on.
//! - Delivery-side hooks (`route`, `deferred`, `bounced`, `delivered`): [`PluginHost`]
//!   implements [`corvid_types::DeliveryPolicy`] (an instance per call; a failing plugin is
//!   skipped, these stages cannot lose mail).
//! - Shadow plugins (`mode = "shadow"`, docs/shadow-mode.md): left out of the chain; after
//!   the chain decided an SMTP stage, a task of their own runs them on their own instances,
//!   breakers, kv namespace (`shadow:<name>`), auth-results copy and memory share, drops
//!   their modifications and counts where they differ from the chain. Nothing they do
//!   reaches a transaction.

mod added;
mod auth_results;
mod backstop;
mod bindings;
mod breaker;
mod cache;
mod charge;
pub mod clock;
mod context;
mod convert;
mod delivery;
mod delivery_tls;
pub mod dns;
mod engine;
mod error;
mod generation;
mod hook;
mod host;
mod http;
pub mod http_answers;
mod imports;
mod instance;
pub mod kv;
mod limiter;
mod manifest;
mod message;
mod metrics;
pub mod record;
mod sandbox;
mod session;
mod shadow;
mod shadow_run;
mod state;
mod stats;
mod validate;
mod warm;

pub use breaker::BreakerState;
pub use corvid_types::{BounceAction, Deferral, DeliveryInfo, DeliveryPolicy, Route, RouteRequest};
pub use dns::{DnsError, DnsResolver, StaticDns};
pub use engine::{EngineConfig, EngineOptions, PluginEngine};
pub use error::Error;
pub use generation::{Generation, PluginState, PluginStatus};
pub use host::{PluginHost, Services};
pub use kv::{KvError, KvStore, MemoryKv};
pub use manifest::{
    BreakerConfig, Capability, FailurePolicy, InstanceMode, Limits, Manifest, PluginMode,
    DEFAULT_HOOK_FUEL,
};
pub use metrics::{MetricSample, MetricValue, MAX_SERIES_PER_PLUGIN};
pub use shadow::{verdict_text, ShadowDiff, DIFF_LOG_SIZE, SAMPLE_EVERY};
pub use stats::{HookStats, LATENCY_BUCKETS};
