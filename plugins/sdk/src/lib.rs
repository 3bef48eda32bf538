//! The Rust SDK for Corvid mail-policy plugins.
//!
//! A plugin is one struct, one [`Plugin`] impl (every hook has a default of `continue`), and
//! one [`export_plugin!`] line. Build it with `cargo build --target wasm32-wasip2 --release`;
//! test its logic natively with `cargo test` and the helpers in [`testing`]. The README is the
//! author guide.
//!
//! ```ignore
//! use corvid_plugin_sdk::*;
//!
//! struct NoSpamFrom;
//!
//! impl Plugin for NoSpamFrom {
//!     const NAME: &'static str = "no-spam-from";
//!     const STAGES: &'static [Stage] = &[Stage::Mail];
//!
//!     fn new(_config: &Config) -> Result<Self, String> {
//!         Ok(NoSpamFrom)
//!     }
//!
//!     fn on_mail(&mut self, _conn: &ConnectionInfo, env: &Envelope) -> Decision {
//!         match &env.sender {
//!             Some(s) if s.domain.eq_ignore_ascii_case("spam.example") => {
//!                 reject(550, "5.7.1", "Sender refused")
//!             }
//!             _ => proceed(),
//!         }
//!     }
//! }
//!
//! export_plugin!(NoSpamFrom);
//! ```
//!
//! Owns: the guest side of the `corvid:plugin` WIT contract. Must not: depend on any host crate.

extern crate self as corvid_plugin_sdk;

mod added;
pub mod auth;
pub mod bindings;
mod config;
mod decision;
pub mod delivery_tls;
pub mod host;
pub mod http;
mod message;
#[doc(hidden)]
pub mod runtime;
mod stages;
pub mod testing;
mod value;

pub use config::{Config, ConfigError, FromValue};
pub use decision::*;
pub use message::MailMessage;
pub use runtime::Reads;
pub use value::{Table, Value};

pub use bindings::corvid::plugin::dns::{Error as DnsError, Mx};
pub use bindings::corvid::plugin::kv::Error as KvError;
pub use bindings::corvid::plugin::log::Level as LogLevel;
pub use bindings::corvid::plugin::message::{Header, MimePart, MimeSummary};
pub use bindings::corvid::plugin::types::{
    Address, AuthInfo, BodyType, BounceDecision, ConfigTable, ConnectionInfo, Decision,
    DeferredDecision, DeliveryInfo, Envelope, HeaderChange, HeaderField, HeaderInsert, HeaderRef,
    MailParams, Modification, Notify, PluginInfo, RcptParams, Recipient, RelayHost, Reply, Ret,
    RouteDecision, RouteRequest, Stage, TlsInfo, Verdict,
};

#[doc(hidden)]
pub use wit_bindgen::rt as __wit_bindgen_rt;

/// A mail-policy plugin. Override the hooks of the stages listed in [`Plugin::STAGES`]; the
/// host calls no others.
///
/// One value of your type lives for one SMTP transaction: it is created by [`Plugin::new`] at
/// the first hook of a transaction (and for each session-stage or delivery hook call) and
/// replaced when the host starts the next one, in every instance mode, so fields are
/// transaction state. Keep longer-lived state in the kv store ([`host::kv_get`] and friends).
pub trait Plugin: Sized + 'static {
    /// A short name, e.g. `"rbl-check"`.
    const NAME: &'static str;
    /// The plugin's version; empty (the default) means the version of the crate that calls
    /// [`export_plugin!`] (its `CARGO_PKG_VERSION`).
    const VERSION: &'static str = "";
    /// The stages this plugin implements. A hook implemented for a stage missing here is
    /// refused when the plugin is loaded (and by the test [`export_plugin!`] generates), since
    /// the host would never call it.
    const STAGES: &'static [Stage];
    /// Stages whose hooks are implemented but run only when the operator's manifest asks for
    /// them (`stages = ["rcpt"]` in the `[[plugin]]` table); `describe` does not list them.
    const OPTIONAL_STAGES: &'static [Stage] = &[];

    /// The stages this configuration needs, a subset of [`Plugin::STAGES`] that `describe`
    /// reports to the host (the operator's manifest `stages` still overrides it). The host
    /// calls no hook of a stage left out, so a configuration that makes a hook a no-op (an
    /// address-rewrite without sender rules at `mail`) saves a call per message: each costs
    /// the host several microseconds of CPU however little the guest does. The default is
    /// `STAGES`. Runs in `describe`, with the plugin's configuration when it has the `config`
    /// capability (an empty one otherwise, as its hooks would see).
    fn stages_for(_config: &Config) -> Vec<Stage> {
        Self::STAGES.to_vec()
    }

    /// Builds the plugin from its configuration; an `Err` refuses the configuration (at load
    /// time the plugin is then not installed, and the text is logged).
    fn new(config: &Config) -> Result<Self, String>;

    /// Called when a new transaction (or session or delivery hook call) starts on an instance
    /// that still holds the value the previous one left. Return `true` after clearing every
    /// per-transaction field, and the SDK keeps the value instead of calling [`Plugin::new`]
    /// again, which saves re-reading the configuration on every transaction (for the bundled
    /// plugins, most of a hook's instructions). The default, `false`, builds a fresh value
    /// with `new`, so nothing can leak from one transaction into the next.
    fn reset(&mut self) -> bool {
        false
    }

    /// Which records the `stage` hook reads besides its recipient (`on_rcpt` always gets
    /// it), asked before each hook call with the value that will serve it (so the answer may
    /// depend on the configuration). The SDK copies from the host only those, once per
    /// connection or transaction in which they change, and passes the hook an empty record
    /// (empty strings and lists, zeros, `None`) for each one left out. The default,
    /// [`Reads::ALL`], is always right; leaving out what a hook never reads saves a copy of
    /// the record into the instance (for the bundled chain, about a fifth of a message's hook
    /// instructions went to records nobody read).
    fn reads(&self, _stage: Stage) -> Reads {
        Reads::ALL
    }

    /// A client connected.
    fn on_connect(&mut self, _conn: &ConnectionInfo) -> Decision {
        runtime::default_hook();
        proceed()
    }

    /// EHLO/HELO; `conn.helo` holds the name.
    fn on_helo(&mut self, _conn: &ConnectionInfo) -> Decision {
        runtime::default_hook();
        proceed()
    }

    /// The client authenticated.
    fn on_auth(&mut self, _conn: &ConnectionInfo, _auth: &AuthInfo) -> Decision {
        runtime::default_hook();
        proceed()
    }

    /// MAIL FROM.
    fn on_mail(&mut self, _conn: &ConnectionInfo, _env: &Envelope) -> Decision {
        runtime::default_hook();
        proceed()
    }

    /// RCPT TO; a non-local recipient needs an explicit `accept` from some plugin.
    fn on_rcpt(&mut self, _conn: &ConnectionInfo, _env: &Envelope, _rcpt: &Recipient) -> Decision {
        runtime::default_hook();
        proceed()
    }

    /// End of DATA, before the message is queued.
    fn on_data(
        &mut self,
        _conn: &ConnectionInfo,
        _env: &Envelope,
        _msg: &dyn MailMessage,
    ) -> Decision {
        runtime::default_hook();
        proceed()
    }

    /// Where mail for a recipient goes.
    fn on_route(&mut self, _req: &RouteRequest) -> RouteDecision {
        runtime::default_hook();
        RouteDecision::Continue
    }

    /// A delivery attempt failed temporarily.
    fn on_deferred(&mut self, _info: &DeliveryInfo) -> DeferredDecision {
        runtime::default_hook();
        DeferredDecision::Continue
    }

    /// A delivery failed permanently; a DSN is about to be sent.
    fn on_bounced(&mut self, _info: &DeliveryInfo) -> BounceDecision {
        runtime::default_hook();
        BounceDecision::Continue
    }

    /// A recipient was delivered.
    fn on_delivered(&mut self, _info: &DeliveryInfo) {
        runtime::default_hook();
    }
}

/// Exports a [`Plugin`] type as the component's `corvid:plugin/plugin` world.
/// Use once per plugin crate, at the crate root.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __CorvidPluginExport;

        impl $crate::bindings::Guest for __CorvidPluginExport {
            fn describe() -> $crate::PluginInfo {
                $crate::runtime::describe_as::<$plugin>(env!("CARGO_PKG_VERSION"))
            }
            fn configure(config: $crate::ConfigTable) -> Result<(), String> {
                $crate::runtime::configure::<$plugin>(config)
            }
            fn on_connect(conn: $crate::ConnectionInfo) -> $crate::Decision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_connect(&conn))
            }
            fn on_helo(conn: $crate::ConnectionInfo) -> $crate::Decision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_helo(&conn))
            }
            fn on_auth(conn: $crate::ConnectionInfo, auth: $crate::AuthInfo) -> $crate::Decision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_auth(&conn, &auth))
            }
            fn on_mail(conn: $crate::ConnectionInfo, env: $crate::Envelope) -> $crate::Decision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_mail(&conn, &env))
            }
            fn on_rcpt(
                conn: $crate::ConnectionInfo,
                env: $crate::Envelope,
                rcpt: $crate::Recipient,
            ) -> $crate::Decision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_rcpt(&conn, &env, &rcpt))
            }
            fn on_data(
                conn: $crate::ConnectionInfo,
                env: $crate::Envelope,
                msg: $crate::runtime::MessageBorrow<'_>,
            ) -> $crate::Decision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_data(&conn, &env, msg))
            }
            fn on_route(req: $crate::RouteRequest) -> $crate::RouteDecision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_route(&req))
            }
            fn on_deferred(info: $crate::DeliveryInfo) -> $crate::DeferredDecision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_deferred(&info))
            }
            fn on_bounced(info: $crate::DeliveryInfo) -> $crate::BounceDecision {
                $crate::runtime::with::<$plugin, _>(|p| p.on_bounced(&info))
            }
            fn on_delivered(info: $crate::DeliveryInfo) {
                $crate::runtime::with::<$plugin, _>(|p| p.on_delivered(&info))
            }
        }

        // Facts on demand (wit/context.wit): hosts that know `hooks` call these instead.
        impl $crate::bindings::exports::corvid::plugin::hooks::Guest for __CorvidPluginExport {
            fn on_connect(s: $crate::runtime::Stamp) -> $crate::Decision {
                $crate::runtime::with_facts::<$plugin, _>(s, $crate::Stage::Connect, |p, c, _, _| p.on_connect(c))
            }
            fn on_helo(s: $crate::runtime::Stamp) -> $crate::Decision {
                $crate::runtime::with_facts::<$plugin, _>(s, $crate::Stage::Helo, |p, c, _, _| p.on_helo(c))
            }
            fn on_mail(s: $crate::runtime::Stamp) -> $crate::Decision {
                $crate::runtime::with_facts::<$plugin, _>(s, $crate::Stage::Mail, |p, c, e, _| p.on_mail(c, e))
            }
            fn on_rcpt(s: $crate::runtime::Stamp) -> $crate::Decision {
                $crate::runtime::with_facts::<$plugin, _>(s, $crate::Stage::Rcpt, |p, c, e, r| match r {
                    Some(r) => p.on_rcpt(c, e, r),
                    None => panic!("on-rcpt without a recipient"),
                })
            }
            fn on_data(
                s: $crate::runtime::Stamp,
                msg: $crate::runtime::MessageBorrow<'_>,
            ) -> $crate::Decision {
                $crate::runtime::with_facts::<$plugin, _>(s, $crate::Stage::Data, |p, c, e, _| {
                    p.on_data(c, e, msg)
                })
            }
        }

        // Only a component has exports. A native build (the plugin's own unit tests) calls the
        // hooks directly, and its linker cannot take the `corvid:plugin/hooks@0.1.0#...` symbol
        // names of an exported interface in a cdylib's version script.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin_world!(
            __CorvidPluginExport with_types_in $crate::bindings
        );

        // `cargo test` of the plugin crate fails when a hook is implemented for a stage that
        // `STAGES` leaves out (loading the component refuses it too, in `configure`).
        #[cfg(test)]
        #[test]
        fn __corvid_every_implemented_hook_is_in_stages() {
            if let Err(e) = $crate::runtime::check_stages::<$plugin>() {
                panic!("{e}");
            }
        }
    };
}
