//! Fuel for host calls. Wasm instructions cost fuel as they run; a call out of the guest (an
//! import such as `clock.now-ms`, a WASI function, a libcall such as `memory.grow`) would cost
//! only the few instructions around it, so a plugin spinning on host calls would run until
//! the wall-time backstop (5 s) instead of its CPU budget. Each host call therefore costs a
//! fixed [`HOST_CALL_FUEL`] when it starts, and imports that copy bulk data (message headers
//! and body, kv values, the config table) add one fuel per [`BYTES_PER_FUEL`] bytes copied,
//! charged when the call returns. A call that finds the budget spent ends the hook with
//! wasmtime's out-of-fuel trap, reported as `cpu_budget` like a guest loop.
//!
//! The numbers make a host call cost about what the same CPU time of guest code costs. On
//! the release build (x86-64, measured 2026-12-07), the default budget (100 M) lasts a pure
//! guest loop 14–19 ms, a loop on `clock.now-ms` 15 ms and one on the WASI monotonic clock
//! 20 ms; before the charge those two took 455 ms (3 M calls) and 122 ms, and 50 of them
//! side by side on two cores ran into the wall-time backstop. The SDK README's limits table
//! and `wit/world.wit` state the model. Waiting inside a host call (DNS, http) still costs no
//! fuel: only the wall-time backstop bounds it.

use crate::state::HostState;
use wasmtime::{CallHook, StoreContextMut};

/// Fuel charged when the guest calls into the host (any import or libcall).
pub(crate) const HOST_CALL_FUEL: u64 = 1_000;

/// Bytes a bulk import copies per fuel charged.
pub(crate) const BYTES_PER_FUEL: u64 = 4;

/// The store's call hook (`Store::call_hook`): charges host calls against the hook's fuel.
pub(crate) fn on_call(
    mut ctx: StoreContextMut<'_, HostState>,
    hook: CallHook,
) -> wasmtime::Result<()> {
    let cost = match hook {
        CallHook::CallingHost => HOST_CALL_FUEL,
        CallHook::ReturningFromHost => {
            let copied = std::mem::take(&mut ctx.data_mut().copied);
            copied / BYTES_PER_FUEL
        }
        CallHook::CallingWasm | CallHook::ReturningFromWasm => return Ok(()),
    };
    if cost == 0 {
        return Ok(());
    }
    let fuel = ctx.get_fuel()?;
    match fuel.checked_sub(cost) {
        Some(left) => ctx.set_fuel(left),
        None => {
            ctx.set_fuel(0)?;
            Err(wasmtime::Trap::OutOfFuel.into())
        }
    }
}

impl HostState {
    /// Notes `bytes` copied between host and guest by the current import (charged when it
    /// returns, see [`on_call`]).
    pub(crate) fn charge_copy(&mut self, bytes: usize) {
        self.copied = self
            .copied
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}
