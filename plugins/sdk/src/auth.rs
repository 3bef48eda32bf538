//! Mail authentication results and the DKIM signing choice (`wit/auth.wit`, interface
//! `auth-results`): what the host found for SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489)
//! and ARC (RFC 8617), and a way to pick the signing domain and selector or to suppress
//! signing for the current message.
//!
//! Call these from a hook only. `on_mail` and `on_rcpt` see [`spf`]; `on_data` sees all four.
//! Before a result exists, or for a client the host does not check (authenticated users and
//! relay networks, whose mail is signed instead), they answer `None` / an empty list.
//!
//! A plugin that never calls these functions does not import `auth-results`, so it keeps
//! loading on hosts that predate it.
//!
//! ```ignore
//! fn on_data(&mut self, _c: &ConnectionInfo, _e: &Envelope, _m: &dyn MailMessage) -> Decision {
//!     match auth::dmarc() {
//!         Some(d) if d.result == auth::DmarcResult::Fail => reject(550, "5.7.1", "DMARC failed"),
//!         _ => proceed(), // `continue`: the host's default DMARC policy applies
//!     }
//! }
//! ```

mod generated {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "auth-user",
        runtime_path: "::corvid_plugin_sdk::__wit_bindgen_rt",
        additional_derives: [PartialEq],
    });
}

use generated::corvid::plugin::auth_results as wit;

pub use wit::{
    Arc, ArcResult, DkimResult, DkimSignature, Dmarc, DmarcPolicy, DmarcResult, Spf, SpfIdentity,
    SpfResult,
};

/// SPF of the current transaction (from `on_mail` on).
pub fn spf() -> Option<Spf> {
    wit::get_spf()
}

/// Every `DKIM-Signature:` of the message and its result, in header order (`on_data`).
pub fn dkim() -> Vec<DkimSignature> {
    wit::get_dkim()
}

/// DMARC for the From: domain, with the policy that applies (`on_data`).
pub fn dmarc() -> Option<Dmarc> {
    wit::get_dmarc()
}

/// The ARC chain's result (`on_data`).
pub fn arc() -> Option<Arc> {
    wit::get_arc()
}

/// Sign the current message for `domain` (instead of the From: domain) and/or only with the
/// key of `selector`. The host needs a configured key for them; without one the message goes
/// out unsigned.
pub fn sign_with(domain: Option<&str>, selector: Option<&str>) {
    wit::sign_with(domain, selector)
}

/// Do not DKIM-sign the current message.
pub fn suppress_signing() {
    wit::suppress_signing()
}

/// Back to the default: the configured keys of the From: domain.
pub fn default_signing() {
    wit::default_signing()
}
