//! A hook whose memory grows keeps its thread at the epoch ticks (`state::new_store`, so that
//! a plugin running out of memory on every message fails fast: tests/burst.rs), but only for
//! 25 ticks in a row. Apart from tests/burst.rs: that test measures the engine's memory in
//! use, which this hook's 256 MiB would distort.

mod common;

use common::*;
use corvid_plugin_host::PluginHost;
use corvid_types::{MessageView, Policy, Stage};
use std::sync::atomic::{AtomicBool, Ordering};

/// A hook growing its memory at every tick (a page every ~0.1 ms of plain work, with fuel for
/// seconds of it, up to 256 MiB) still yields at least every 25 ticks: it keeps its thread while it grows, but
/// not for the whole of its budget. Another task on the same thread gets to run at each yield.
#[tokio::test(flavor = "current_thread")]
async fn a_hook_growing_at_every_tick_still_yields() {
    let host: PluginHost = host();
    let mut m = behave("creeper", &[("data", "creep")]);
    m.limits.hook_fuel = 50_000_000_000;
    m.limits.memory_mb = 256;
    host.reload(vec![m]).await.expect("loads");
    let c = conn(1);
    let mut s = host.session(&c);
    s.mail(&c, &envelope()).await;
    let done = AtomicBool::new(false);
    let hook = async {
        let d = s
            .data(&c, &envelope(), MessageView { content: MESSAGE })
            .await;
        done.store(true, Ordering::Relaxed);
        d
    };
    let other = async {
        let mut turns = 0u32;
        while !done.load(Ordering::Relaxed) {
            turns += 1;
            tokio::task::yield_now().await;
        }
        turns
    };
    let (_, turns) = tokio::join!(hook, other);
    let stats = host
        .stats()
        .into_iter()
        .find(|s| s.stage == Stage::Data)
        .expect("data stats");
    // About 240 ms of growth: eight or nine yields at 25 ticks each (measured: 8). Running
    // on without a bound, the other task never ran (measured: 0).
    eprintln!("other task's turns while the hook ran: {turns}; {stats:?}");
    assert_eq!(
        stats.out_of_memory, 1,
        "ended at its memory limit: {stats:?}"
    );
    assert!(turns >= 4, "the growing hook yielded {turns} times");
}
