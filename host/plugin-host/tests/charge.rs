//! Host calls cost fuel (`src/charge.rs`): a hook spinning on host calls runs out of its CPU
//! budget after about budget / 1000 calls, whichever import it spins on (charged only its own
//! instructions, ~30 fuel a turn, it would make some 30 times as many), and a hook making a few
//! thousand host calls within its budget succeeds.

mod common;

use common::*;
use corvid_plugin_host::{Capability, HookStats, Manifest, PluginHost};
use corvid_types::{Decision, MessageView, Policy, Stage, Verdict};
use std::sync::{Arc, Mutex};

/// Log lines written by the hooks of the current thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

/// Loads `m` alone and runs one transaction through its DATA hook: the DATA decision and the
/// hook's stats.
async fn one_data_hook(host: &PluginHost, m: Manifest) -> (Decision, HookStats) {
    host.reload(vec![m]).await.expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    s.mail(&c, &envelope()).await;
    let data = s
        .data(&c, &envelope(), MessageView { content: MESSAGE })
        .await;
    s.end_transaction();
    let stats = host
        .stats()
        .into_iter()
        .find(|s| s.stage == Stage::Data)
        .expect("data stats");
    (data, stats)
}

/// Turns between two `spin turns=` log lines.
const LOG_EVERY: u64 = 1_000;

/// One transaction whose DATA hook spins for `spin_ms` on `spin_on` (`clock`: the clock
/// import; `wasi`: the WASI monotonic clock), under `fuel`, logging every [`LOG_EVERY`]
/// turns. Returns the DATA verdict and stats and the turns it logged last. The runtime must
/// be current-thread: the log lines are caught on this thread.
async fn spin(
    spin_ms: u64,
    spin_on: &str,
    fuel: u64,
    caps: &[Capability],
) -> (Verdict, HookStats, u64) {
    let lines = Lines::default();
    let catch = tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_ansi(false)
        .finish();
    let _caught = tracing::subscriber::set_default(catch);
    let host: PluginHost = host();
    let (ms, every) = (spin_ms.to_string(), LOG_EVERY.to_string());
    let mut m = behave(
        "spinner",
        &[
            ("data", "spin"),
            ("spin_ms", &ms),
            ("spin_on", spin_on),
            ("spin_log_every", &every),
        ],
    );
    m.limits.hook_fuel = fuel;
    m.limits.hook_time_ms = 5_000;
    m.capabilities = caps.to_vec();
    m.capabilities.push(Capability::Log);
    let (data, stats) = one_data_hook(&host, m).await;
    let text = String::from_utf8_lossy(&lines.0.lock().expect("lock")).to_string();
    let turns = text
        .lines()
        .filter_map(|l| l.split("spin turns=").nth(1))
        .filter_map(|n| n.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0);
    (data.verdict, stats, turns)
}

const CLOCK: &[Capability] = &[Capability::Config, Capability::Clock];

/// A spin on `spin_on` for `spin_ms` under 5 M fuel ends by fuel, after at most 5 000 turns
/// (one host call each), and well before the 5 s backstop.
async fn stopped_by_fuel(spin_ms: u64, spin_on: &str, caps: &[Capability]) {
    let (_, stats, turns) = spin(spin_ms, spin_on, 5_000_000, caps).await;
    assert_eq!(
        (stats.cpu_budget, stats.timeouts),
        (1, 0),
        "{spin_on}: {stats:?}"
    );
    assert!((1_000..5_000).contains(&turns), "{spin_on}: {turns} turns");
}

#[tokio::test]
async fn a_hook_spinning_on_the_clock_import_runs_out_of_fuel() {
    stopped_by_fuel(60_000, "clock", CLOCK).await;
}

#[tokio::test]
async fn a_hook_spinning_on_a_wasi_clock_runs_out_of_fuel() {
    stopped_by_fuel(60_000, "wasi", CLOCK).await;
}

/// Without `clock` the WASI clocks stand still, so the spin would never end by itself.
#[tokio::test]
async fn a_hook_spinning_on_a_frozen_wasi_clock_runs_out_of_fuel() {
    stopped_by_fuel(1, "wasi", &[Capability::Config]).await;
}

#[tokio::test]
async fn a_hook_with_host_calls_within_its_budget_succeeds() {
    // 20 ms of back-to-back clock calls under 1 G fuel: thousands of them even on a busy
    // machine (the spin's length is wall time, its cost fuel), about a fifth of the budget
    // on an idle one.
    for spin_on in ["clock", "wasi"] {
        let (verdict, stats, turns) = spin(20, spin_on, 1_000_000_000, CLOCK).await;
        assert_eq!(verdict, Verdict::Continue, "{spin_on}");
        assert_eq!(
            (stats.calls, stats.cpu_budget),
            (1, 0),
            "{spin_on}: {stats:?}"
        );
        assert!(turns >= 1_000, "{spin_on}: {turns} turns");
    }
}

/// Waiting in an import costs no ticks (`wit/world.wit`): a hook that sleeps 40 times for
/// 2 ms on the WASI monotonic clock (an import that waits, as a DNS lookup does) under a
/// budget of 20 ticks finishes. Wasmtime does not move the epoch deadline when an import
/// returns, so the first check after each wait used to count it as a tick of running, and
/// this hook ended as `cpu_budget` after about 20 sleeps.
#[tokio::test]
async fn waiting_in_an_import_costs_no_ticks() {
    let pairs = [("data", "sleepy"), ("sleeps", "40"), ("sleep_ms", "2")];
    let mut m = behave("sleeper", &pairs);
    m.capabilities
        .extend([Capability::Config, Capability::Clock]);
    // 20 ticks, the fewest a call gets (`charge::ticks_for`).
    m.limits.hook_fuel = 10_000_000;
    let (data, stats) = one_data_hook(&host(), m).await;
    assert_eq!(
        (data.verdict, stats.cpu_budget, stats.timeouts),
        (Verdict::Continue, 0, 0),
        "{stats:?}"
    );
    // It did wait: 40 sleeps of 2 ms each span more than 20 ticks of 1 ms.
    assert!(
        stats.latency_max >= std::time::Duration::from_millis(80),
        "{stats:?}"
    );
}

/// A small budget still gets 20 ticks (`charge::MIN_TICKS`): one of 10 million fuel would
/// otherwise be stopped at its 10th tick, so that a hook crossing a few ticks on a loaded
/// machine could fail. A `memory.grow(0)` spin (which fuel barely sees) shows the count: it
/// runs through 20 ticks of at least 1 ms each before it is stopped.
#[tokio::test]
async fn a_small_budget_still_gets_twenty_ticks() {
    let mut m = behave("grower", &[("data", "grow0")]);
    m.limits.hook_fuel = 10_000_000;
    let (_, stats) = one_data_hook(&host(), m).await;
    assert_eq!(stats.cpu_budget, 1, "{stats:?}");
    // Ticks count only while the hook runs, so it ran at least ~19 ms; 10 ticks would end
    // after ~10 ms (only a preempted run could pass that way, never fail this way).
    assert!(
        stats.latency_max >= std::time::Duration::from_millis(15),
        "stopped after {:?}: fewer than 20 ticks",
        stats.latency_max
    );
}

/// A hook spinning on a libcall (`memory.grow(0)`, a few fuel a turn) is stopped by the count
/// of epoch ticks it ran through (`charge::ticks_for`: 100 for the default budget, ~100 ms of
/// execution) as `cpu_budget`, not by the wall-time backstop: uncounted, it ran until the
/// 5 s limit and ended as a timeout.
#[tokio::test]
async fn a_hook_spinning_on_memory_grow_runs_out_of_its_ticks() {
    let mut m = behave("grower", &[("data", "grow0")]);
    m.limits.hook_time_ms = 5_000;
    let (data, stats) = one_data_hook(&host(), m).await;
    assert_eq!(
        (stats.cpu_budget, stats.timeouts),
        (1, 0),
        "stopped by its budget, not the backstop: {stats:?}"
    );
    eprintln!("memory.grow(0) spin stopped after {:?}", stats.latency_max);
    // About 100 ticks of 1 ms (~120 ms here), not thousands: 1.5 s leaves room for a slow
    // debug build and still fails if a tick were charged a twentieth of what it is.
    assert!(
        stats.latency_max < std::time::Duration::from_millis(1_500),
        "{stats:?}"
    );
    // The default failure policy (tempfail) applies: the hook did not decide.
    assert_ne!(data.verdict, Verdict::Continue, "{:?}", data.verdict);
}
