//! Glue between the generated bindings and a [`Plugin`]; used by [`crate::export_plugin!`].

use crate::{Config, ConfigTable, Plugin, PluginInfo};
use std::any::Any;
use std::cell::RefCell;

/// How the generated `on-data` export receives the host's message.
pub type MessageBorrow<'a> = &'a crate::bindings::corvid::plugin::message::Message;

thread_local! {
    /// The plugin value of the current transaction, with the host's lease it was made for.
    static PLUGIN: RefCell<Option<(u64, Box<dyn Any>)>> = const { RefCell::new(None) };
}

/// `describe` from the trait's constants.
pub fn describe<P: Plugin>() -> PluginInfo {
    PluginInfo {
        name: P::NAME.to_string(),
        version: P::VERSION.to_string(),
        stages: P::STAGES.to_vec(),
    }
}

/// `configure`: the configuration is valid when [`Plugin::new`] accepts it.
pub fn configure<P: Plugin>(table: ConfigTable) -> Result<(), String> {
    P::new(&Config::from_table(table)).map(|_| ())
}

/// Runs `f` on the plugin value of the current transaction, creating it from the host's config
/// at the first hook of each transaction (when the host's `lifecycle.lease` changed), so the
/// value never outlives its transaction, also on a warm (pooled) instance.
///
/// A configuration the plugin refuses here (it was accepted by `configure` at load time, so
/// this means the plugin is not deterministic) panics, which the host treats as a trap.
pub fn with<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> R {
    let lease = crate::host::lease();
    PLUGIN.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != lease) {
            // Drop the previous transaction's value before building the next one.
            *slot = None;
            let config = Config::from_table(crate::host::config_table());
            match P::new(&config) {
                Ok(p) => *slot = Some((lease, Box::new(p))),
                Err(e) => panic!("{}: configuration refused: {e}", P::NAME),
            }
        }
        match slot.as_mut().and_then(|(_, b)| b.downcast_mut::<P>()) {
            Some(p) => f(p),
            None => panic!("{}: plugin state of another type", P::NAME),
        }
    })
}

/// Drops this thread's plugin value (native tests use it between cases).
pub fn reset() {
    PLUGIN.with(|cell| *cell.borrow_mut() = None);
}
