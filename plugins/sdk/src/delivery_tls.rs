//! Transport security at the delivery stages (`wit/delivery-tls.wit`, interface
//! `delivery-tls`): what TLS a delivery attempt got, and a stricter TLS policy for the
//! recipient being routed. A plugin that never calls these does not import the interface, so
//! it keeps loading on hosts that predate it.
//!
//! ```ignore
//! fn on_route(&mut self, req: &RouteRequest) -> RouteDecision {
//!     if req.recipient.domain.eq_ignore_ascii_case("bank.example") {
//!         delivery_tls::set_route_tls(TlsPolicy::Verify); // never in clear text
//!     }
//!     RouteDecision::Continue
//! }
//!
//! fn on_deferred(&mut self, info: &DeliveryInfo) -> DeferredDecision {
//!     if let Some(tls) = delivery_tls::attempt_tls() {
//!         host::log(LogLevel::Info, &format!("{}: {:?} {}", info.recipient, tls.version, tls.verified));
//!     }
//!     DeferredDecision::Continue
//! }
//! ```

mod generated {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "delivery-tls-user",
        runtime_path: "::corvid_plugin_sdk::__wit_bindgen_rt",
        additional_derives: [PartialEq],
    });
}

pub use generated::corvid::plugin::delivery_tls::{TlsPolicy, TlsResult};

/// At `on_deferred`, `on_bounced` and `on_delivered`: the TLS of the attempt the hook is told
/// about (version, cipher, verified, the policy that decided and its source, what failed);
/// `None` for local delivery, when no next hop was reached, and at other stages. In a native
/// build: [`crate::testing::FakeHost::attempt_tls`].
pub fn attempt_tls() -> Option<TlsResult> {
    #[cfg(target_arch = "wasm32")]
    return if crate::runtime::probing() {
        None
    } else {
        generated::corvid::plugin::delivery_tls::attempt_tls()
    };
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| h.attempt_tls.clone())
}

/// At `on_route`: asks for `policy` for the recipient being routed, whatever decides its next
/// hop. It can only make TLS stricter: the stricter of it and the configured policy wins
/// (`None` < `Opportunistic` < `Verify` = `Dane` < `DaneOnly`, the configured one on a tie,
/// the default counting as `Opportunistic`), and what the configuration requires (a smart
/// host with `auth`: verified TLS) holds. Of several asks in the chain the strictest counts. Called at another
/// stage, the host traps. In a native build: [`crate::testing::FakeHost::route_tls`].
pub fn set_route_tls(policy: TlsPolicy) {
    #[cfg(target_arch = "wasm32")]
    if !crate::runtime::probing() {
        generated::corvid::plugin::delivery_tls::set_route_tls(policy);
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| h.route_tls = Some(policy));
}
