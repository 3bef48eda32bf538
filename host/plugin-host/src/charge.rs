//! Fuel for host calls. Wasm instructions cost fuel as they run; a call out of the guest (an
//! import such as `clock.now-ms`, a WASI function) would cost only the few instructions
//! around it, so a plugin spinning on host calls would run until the wall-time backstop (5 s)
//! instead of its CPU budget. So every import costs a fixed [`HOST_CALL_FUEL`], and imports
//! that copy bulk data (message headers and body, the MIME summary, kv values, the config
//! table) one more fuel per [`BYTES_PER_FUEL`] bytes copied.
//!
//! How it is charged, without a per-transition call hook (`Store::call_hook` ran at every
//! guest↔host transition, entering the export included, and cost a warm hook 70–90 ns):
//! - every import is linked with a getter that counts the call in the store's [`Account`]:
//!   Corvid's own imports ([`add_plugin_to_linker`]), all of WASI p2 and `wasi:http`
//!   ([`add_wasi_to_linker`], the same interfaces as `wasmtime_wasi`'s own linking);
//! - the epoch callback ([`crate::state::new_store`]) checks the account against the
//!   store's fuel: at every tick (1 ms) of a call that runs that long, and at once when the
//!   call owes more than the fuel seen at the last check (the counting import advances the
//!   engine's epoch, so the guest's next function entry or loop iteration checks). A call
//!   that owes more than its fuel left ends with wasmtime's out-of-fuel trap, reported as
//!   `cpu_budget` like a guest loop. The callback cannot take the fuel away (compiled guest
//!   code keeps its counter in a register across the callback), so guest instructions and
//!   host calls draw on the budget side by side until then;
//! - when the call returns, [`settle`] (`instance::Live::invoke` and `run`) takes the
//!   account from the store's fuel, so `fuel_max` and the outcome include the host calls of
//!   the last tick too: a call whose host calls spent its budget fails with `cpu_budget`
//!   whenever its epoch checks fell. Guest instructions are charged by wasmtime as before,
//!   deterministic and independent of load.
//!
//! The `context` and `auth-results` imports, linked with store access in their own
//! modules, count their calls the same way. Libcalls (`memory.grow`, bulk memory) cost only
//! the few instructions around them, so a guest loop on `memory.grow(0)` would run far past
//! the budget's ~15 ms of plain guest code; what bounds it is the count of epoch ticks a
//! call runs through ([`ticks_for`]: ~100 ms with the default budget, instead of the 5 s
//! wall-time backstop). Time *waiting* in a host call (DNS, http) is not charged: the
//! wall-time backstop bounds it.
//!
//! The numbers make a host call cost about what the same CPU time of guest code costs. On
//! the release build (x86-64, measured 2026-12-07 with load average 3.4 on two cores, mean
//! of five calls in two runs), the default budget (100 M) lasts a pure guest loop 14–20 ms,
//! a loop on `clock.now-ms` 12–22 ms, one on the WASI monotonic clock 16–20 ms and one on a
//! frozen WASI clock (no `clock` capability) 10–12 ms; each spin stops before its 100 000th
//! call. Uncharged, the first two took 455 ms (3 M calls) and 122 ms, and 50 of them side by
//! side on two cores ran into the wall-time backstop. The SDK README's limits table and
//! `wit/world.wit` state the model.

use crate::state::HostState;
use std::time::Instant;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{Store, StoreContextMut};

/// Fuel charged for each call into the host (any import).
pub(crate) const HOST_CALL_FUEL: u64 = 1_000;

/// Fuel of the budget per epoch tick a call may run through: with the default budget (100 M)
/// a call is stopped at its 100th tick, about 100 ms of execution, five or more times what
/// the budget lasts plain guest code (14–20 ms), so only a guest whose time goes to what fuel
/// does not count (libcalls: a loop on `memory.grow(0)`, bulk memory) reaches it.
pub(crate) const FUEL_PER_TICK: u64 = 1_000_000;

/// The fewest ticks a call may run through, whatever its budget: a small budget must not
/// make a call that merely straddles a few ticks fail.
pub(crate) const MIN_TICKS: u64 = 20;

/// The ticks a call under `fuel` may run through ([`check`] counts them).
pub(crate) fn ticks_for(fuel: u64) -> u64 {
    (fuel / FUEL_PER_TICK).max(MIN_TICKS)
}

/// Bytes a bulk import copies per fuel charged.
pub(crate) const BYTES_PER_FUEL: u64 = 4;

/// What the current call owes for its host calls.
#[derive(Debug)]
pub(crate) struct Account {
    /// The deadline of the call this account is for: `instance::arm` sets a new one for
    /// every call, so an account left by an earlier call is never charged to this one.
    call: Instant,
    /// Host calls of this call.
    calls: u64,
    /// The store's fuel when the epoch callback last looked (before it first does: the
    /// plugin's hook budget): owing more than this means the budget is spent.
    fuel_seen: u64,
    /// The engine's epoch was advanced to have the account checked early, and no check ran
    /// since.
    kicked: bool,
}

impl Account {
    pub(crate) fn new(call: Instant, fuel: u64) -> Self {
        Account {
            call,
            calls: 0,
            fuel_seen: fuel,
            kicked: false,
        }
    }
}

impl HostState {
    /// Starts a new account if the store was armed for another call since the last one.
    fn account(&mut self) -> &mut Account {
        if self.account.call != self.deadline {
            self.account = Account::new(self.deadline, self.env.hook_fuel);
            self.copied = 0;
        }
        &mut self.account
    }

    /// The fuel the current call owes for its host calls.
    pub(crate) fn owed(&self) -> u64 {
        self.account
            .calls
            .saturating_mul(HOST_CALL_FUEL)
            .saturating_add(self.copied / BYTES_PER_FUEL)
    }

    /// Has the account checked at the guest's next epoch check when it owes more than the
    /// fuel the store had at the last check.
    fn check_owed(&mut self) {
        if !self.account.kicked && self.owed() > self.account.fuel_seen {
            self.account.kicked = true;
            self.engine.increment_epoch();
        }
    }

    /// Counts one call into the host (the linker's getters call it, see the module doc).
    pub(crate) fn count_call(&mut self) {
        let a = self.account();
        a.calls = a.calls.saturating_add(1);
        self.check_owed();
    }

    /// Notes `bytes` copied between host and guest by the current import.
    pub(crate) fn charge_copy(&mut self, bytes: usize) {
        self.account();
        self.copied = self
            .copied
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
        self.check_owed();
    }
}

/// The epoch callback's check: traps out of fuel when the current call owes more than the
/// store's fuel. It cannot take the fuel away instead: compiled guest code keeps its fuel
/// counter in a register across the callback and would write the old value back.
///
/// It also counts the ticks the call ran through: the callback runs only while guest code
/// runs (after a yield the deadline is set anew from the epoch of the resumption), so the
/// count follows the call's execution time, not the time it waited for a thread. A tick in
/// which the call `waited` in an import (DNS, HTTP, a sleep) is not counted: wasmtime does
/// not move the deadline when an import returns, so the first check after a wait would
/// otherwise count the wait as a tick of running, and a hook making many slow lookups would
/// end out of budget after ~100 of them. The price: a guest that waits (at least a timer
/// tick, or real I/O) in every tick and spins on libcalls in between is bounded only by the
/// wall-time backstop, running at most about half of that time. Past [`ticks_for`] its
/// budget, the call ends out of fuel too.
pub(crate) fn check(
    ctx: &mut StoreContextMut<'_, HostState>,
    waited: bool,
) -> wasmtime::Result<()> {
    let fuel = ctx.get_fuel()?;
    let s = ctx.data_mut();
    s.account();
    s.account.fuel_seen = fuel;
    s.account.kicked = false;
    if !waited {
        s.ticks_left = s.ticks_left.saturating_sub(1);
    }
    if s.owed() > fuel || s.ticks_left == 0 {
        // Stays 0: the trap unwinds the guest without writing its counter back.
        ctx.set_fuel(0)?;
        return Err(wasmtime::Trap::OutOfFuel.into());
    }
    Ok(())
}

/// Charges what the last call owes against the store's fuel, once the call returned (no
/// guest code running: the fuel taken stays taken); traps out of fuel when the budget is
/// spent. Makes the outcome of a call independent of when its epoch checks ran.
pub(crate) fn settle(store: &mut Store<HostState>) -> wasmtime::Result<()> {
    let fuel = store.get_fuel()?;
    let s = store.data_mut();
    s.account();
    let owed = s.owed();
    s.account.calls = 0;
    s.copied = 0;
    match fuel.checked_sub(owed) {
        Some(left) => store.set_fuel(left),
        None => {
            store.set_fuel(0)?;
            Err(wasmtime::Trap::OutOfFuel.into())
        }
    }
}

/// The getters through which the linked imports reach the store's data, each counting the
/// call first.
mod get {
    use crate::state::HostState;
    use wasmtime::component::ResourceTable;
    use wasmtime_wasi::cli::{WasiCliCtxView, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystemCtxView, WasiFilesystemView};
    use wasmtime_wasi::random::{WasiRandomCtx, WasiRandomView};
    use wasmtime_wasi::sockets::{WasiSocketsCtxView, WasiSocketsView};
    use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

    pub(super) fn plugin(s: &mut HostState) -> &mut HostState {
        s.count_call();
        s
    }

    pub(super) fn table(s: &mut HostState) -> &mut ResourceTable {
        s.count_call();
        &mut s.table
    }

    pub(super) fn clocks(s: &mut HostState) -> WasiClocksCtxView<'_> {
        s.count_call();
        s.clocks()
    }

    pub(super) fn random(s: &mut HostState) -> &mut WasiRandomCtx {
        s.count_call();
        s.random()
    }

    pub(super) fn cli(s: &mut HostState) -> WasiCliCtxView<'_> {
        s.count_call();
        s.cli()
    }

    pub(super) fn filesystem(s: &mut HostState) -> WasiFilesystemCtxView<'_> {
        s.count_call();
        s.filesystem()
    }

    pub(super) fn sockets(s: &mut HostState) -> WasiSocketsCtxView<'_> {
        s.count_call();
        s.sockets()
    }

    pub(super) fn http(s: &mut HostState) -> WasiHttpCtxView<'_> {
        s.count_call();
        s.http()
    }
}

/// `wasi:io`'s imports reach the resource table.
struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links Corvid's own imports (the `plugin` world), each call counted.
pub(crate) fn add_plugin_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    crate::bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, get::plugin)
}

/// Links WASI p2 (what `wasmtime_wasi::p2::add_to_linker_async` links) and `wasi:http`'s
/// outgoing requests (`wasmtime_wasi_http::p2::add_only_http_to_linker_async`), each call
/// counted.
pub(crate) fn add_wasi_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::filesystem::WasiFilesystem;
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random, sockets};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::sockets::WasiSockets;
    type S = HostState;

    io::error::add_to_linker::<S, Io>(l, get::table)?;
    io::poll::add_to_linker::<S, Io>(l, get::table)?;
    io::streams::add_to_linker::<S, Io>(l, get::table)?;
    clocks::wall_clock::add_to_linker::<S, WasiClocks>(l, get::clocks)?;
    clocks::monotonic_clock::add_to_linker::<S, WasiClocks>(l, get::clocks)?;
    filesystem::preopens::add_to_linker::<S, WasiFilesystem>(l, get::filesystem)?;
    filesystem::types::add_to_linker::<S, WasiFilesystem>(l, get::filesystem)?;
    random::random::add_to_linker::<S, WasiRandom>(l, get::random)?;
    random::insecure::add_to_linker::<S, WasiRandom>(l, get::random)?;
    random::insecure_seed::add_to_linker::<S, WasiRandom>(l, get::random)?;
    cli::exit::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::environment::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::stdin::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::stdout::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::stderr::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::terminal_input::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::terminal_output::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::terminal_stdin::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::terminal_stdout::add_to_linker::<S, WasiCli>(l, get::cli)?;
    cli::terminal_stderr::add_to_linker::<S, WasiCli>(l, get::cli)?;
    let options = wasmtime_wasi::p2::bindings::LinkOptions::default();
    sockets::tcp_create_socket::add_to_linker::<S, WasiSockets>(l, get::sockets)?;
    sockets::instance_network::add_to_linker::<S, WasiSockets>(l, get::sockets)?;
    sockets::network::add_to_linker::<S, WasiSockets>(l, &(&options).into(), get::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<S, WasiSockets>(l, get::sockets)?;
    sockets::tcp::add_to_linker::<S, WasiSockets>(l, get::sockets)?;
    sockets::udp::add_to_linker::<S, WasiSockets>(l, get::sockets)?;
    sockets::udp_create_socket::add_to_linker::<S, WasiSockets>(l, get::sockets)?;

    use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types};
    use wasmtime_wasi_http::WasiHttp;
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    outgoing_handler::add_to_linker::<S, WasiHttp>(l, get::http)?;
    types::add_to_linker::<S, WasiHttp>(l, &(&options).into(), get::http)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::TotalMemory;
    use crate::state::{new_store, PluginEnv};
    use std::sync::Arc;
    use std::time::Duration;
    use wasmtime::AsContextMut;

    /// A store of a plugin with `hook_fuel`, armed with `fuel` as `instance::arm` does.
    fn store(hook_fuel: u64, fuel: u64) -> Store<HostState> {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let engine = wasmtime::Engine::new(&config).expect("engine");
        let mut m = crate::Manifest::new("t", "t.wasm");
        m.limits.hook_fuel = hook_fuel;
        let total = Arc::new(TotalMemory::new(1 << 20));
        let env = PluginEnv::new(&m, crate::Services::in_memory(), Arc::default(), total);
        let mut store = new_store(&engine, Arc::new(env), 1);
        arm(&mut store, fuel);
        store
    }

    fn arm(store: &mut Store<HostState>, fuel: u64) {
        let s = store.data_mut();
        s.deadline += Duration::from_millis(1);
        s.copied = 0;
        store.set_fuel(fuel).expect("fuel");
    }

    fn out_of_fuel(r: wasmtime::Result<()>) -> bool {
        r.is_err_and(|e| e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel))
    }

    #[test]
    fn a_call_pays_for_its_host_calls_and_copies() {
        let mut s = store(100_000, 100_000);
        for _ in 0..3 {
            s.data_mut().count_call();
        }
        s.data_mut().charge_copy(4_000);
        assert_eq!(s.data().owed(), 3 * HOST_CALL_FUEL + 1_000);
        settle(&mut s).expect("within the budget");
        assert_eq!(s.get_fuel().expect("fuel"), 96_000);
        assert_eq!(s.data().owed(), 0, "settled once");
    }

    #[test]
    fn a_call_whose_host_calls_spend_its_fuel_runs_out() {
        let mut s = store(100_000, 10_000);
        for _ in 0..10 {
            s.data_mut().count_call();
        }
        assert!(
            check(&mut s.as_context_mut(), false).is_ok(),
            "10 000 of 10 000"
        );
        s.data_mut().count_call();
        assert!(out_of_fuel(check(&mut s.as_context_mut(), false)));
        assert_eq!(s.get_fuel().expect("fuel"), 0);
        let mut s = store(100_000, 10_000);
        for _ in 0..11 {
            s.data_mut().count_call();
        }
        assert!(out_of_fuel(settle(&mut s)));
    }

    #[test]
    fn an_earlier_call_s_host_calls_are_not_charged_to_the_next() {
        let mut s = store(100_000, 100_000);
        for _ in 0..50 {
            s.data_mut().count_call();
        }
        arm(&mut s, 100_000);
        s.data_mut().count_call();
        assert_eq!(s.data().owed(), HOST_CALL_FUEL);
    }
}
