//! DSN parameters for the recipients a plugin adds (`wit/dsn.wit`, interface
//! `added-recipients`). The import only records what the plugin asked, in the store; the
//! parameters are taken with the hook's decision ([`crate::instance::Live::invoke`]) and
//! checked there with it ([`crate::validate::decision`]), so that a bad value makes the
//! decision invalid (failure policy) instead of trapping in the middle of the hook.

use crate::bindings::corvid::plugin::types as wit;
use crate::state::HostState;
use wasmtime::component::Linker;

/// The interface name of `wit/dsn.wit` (package `corvid:plugin@0.1.0`).
const ADDED: &str = "corvid:plugin/added-recipients@0.1.0";

/// At most this many addresses per hook call: as many as a decision can add
/// (`validate::MAX_MODIFICATIONS`), so a looping plugin cannot grow the store without bound.
const MAX_PENDING: usize = 256;

/// What `set-dsn-params` recorded during the current hook call.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The address and its parameters, the last call for an address replacing earlier ones.
    pub(crate) params: Vec<(wit::Address, wit::RcptParams)>,
    /// More addresses than [`MAX_PENDING`] were given: the decision is refused.
    pub(crate) overflow: bool,
}

impl Pending {
    fn set(&mut self, address: wit::Address, params: wit::RcptParams) {
        if let Some(slot) = self.params.iter_mut().find(|(a, _)| same(a, &address)) {
            slot.1 = params;
        } else if self.params.len() < MAX_PENDING {
            self.params.push((address, params));
        } else {
            self.overflow = true;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.params.is_empty() && !self.overflow
    }
}

/// The same mailbox: the local part exactly, the domain case-insensitively.
pub(crate) fn same(a: &wit::Address, b: &wit::Address) -> bool {
    a.local == b.local && a.domain.eq_ignore_ascii_case(&b.domain)
}

/// Defines the `added-recipients` import. Where no facts are in the store (`auth`, a
/// delivery hook, `configure`) there is no decision that could add a recipient: the call
/// traps.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(ADDED)?;
    i.func_wrap(
        "set-dsn-params",
        |mut store, (recipient, params): (wit::Address, wit::RcptParams)| {
            let state = store.data_mut();
            if state.facts.is_none() {
                return Err(wasmtime::Error::msg(
                    "added-recipients.set-dsn-params used outside an SMTP hook",
                ));
            }
            state.added.set(recipient, params);
            Ok(())
        },
    )?;
    Ok(())
}
