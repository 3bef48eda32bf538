//! DSN parameters for recipients a plugin adds (`wit/dsn.wit`, interface `added-recipients`),
//! used by [`crate::Decision::add_recipient_with`]. A plugin that never calls it does not
//! import the interface, so it keeps loading on hosts that predate it.

#[cfg(target_arch = "wasm32")]
mod generated {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "added-recipients-user",
        runtime_path: "::corvid_plugin_sdk::__wit_bindgen_rt",
        with: { "corvid:plugin/types@0.1.0": crate::bindings::corvid::plugin::types },
    });
}

use crate::{Address, RcptParams};

/// Tells the host the parameters of `rcpt`, which the current hook's decision adds. In a
/// native build it records them in the fake host ([`crate::testing::FakeHost::added_params`]).
pub(crate) fn set_dsn_params(rcpt: &Address, params: &RcptParams) {
    // A probed hook (load time) has no decision the host would take.
    if crate::runtime::probing() {
        return;
    }
    #[cfg(target_arch = "wasm32")]
    generated::corvid::plugin::added_recipients::set_dsn_params(rcpt, params);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|h| {
        h.added_params.retain(|(a, _)| a != rcpt);
        h.added_params.push((rcpt.clone(), params.clone()));
    });
}
