//! A plugin that runs out of memory on every message, called by many sessions at once. A call
//! whose memory grows keeps its thread at the epoch ticks (`state::new_store`), so the first
//! calls reach the limit within milliseconds, the breaker trips, and the calls still waiting
//! stop at their first growth. Taking turns at every tick instead, all of them grew towards
//! the limit together and most ended out of memory, each instance at the limit (1.9 GB with
//! 64 MiB instances at 50 sessions in the load benchmark).

mod common;

use common::*;
use corvid_plugin_host::{BreakerConfig, FailurePolicy, PluginHost};
use corvid_types::{MessageView, Policy, Stage, Verdict};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SESSIONS: u64 = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_running_out_of_memory_do_not_all_grow_to_the_limit() {
    let host: PluginHost = host();
    let mut m = behave("hog", &[("data", "oom")]);
    m.failure_policy = FailurePolicy::Continue;
    m.limits.memory_mb = 32;
    m.breaker = BreakerConfig {
        failures: 3,
        consecutive: 3,
        window_ms: 60_000,
        cooldown_ms: 60_000,
    };
    host.reload(vec![m]).await.expect("loads");
    let peak = Peak::watch();
    // Every session holds its transaction's instance before any DATA hook starts.
    let ready = Arc::new(tokio::sync::Barrier::new(SESSIONS as usize));
    let mut sessions = tokio::task::JoinSet::new();
    for id in 0..SESSIONS {
        let (host, ready) = (host.clone(), Arc::clone(&ready));
        sessions.spawn(async move {
            let c = conn(id);
            let mut s = host.session(&c);
            s.mail(&c, &envelope()).await;
            ready.wait().await;
            let d = s
                .data(&c, &envelope(), MessageView { content: MESSAGE })
                .await;
            s.end_transaction();
            d.verdict
        });
    }
    while let Some(verdict) = sessions.join_next().await {
        assert_eq!(
            verdict.expect("session"),
            Verdict::Continue,
            "failure policy"
        );
    }
    let stats = host
        .stats()
        .into_iter()
        .find(|s| s.stage == Stage::Data)
        .expect("data stats");
    let peak_mb = peak.stop() >> 20;
    eprintln!("linear memory in use at the peak: {peak_mb} MiB; {stats:?}");
    assert_eq!(stats.calls, SESSIONS, "{stats:?}");
    // Two threads: two or three calls at the limit at a time (beside 48 instances of about
    // 1 MiB), three failures to trip, the rest stopped at their first growth. Taking turns,
    // the 48 grew towards 32 MiB together.
    assert!(
        peak_mb <= 8 * 32,
        "at most a few instances at the limit at once: {peak_mb} MiB"
    );
    assert!(
        stats.out_of_memory <= 8 && stats.bypassed >= SESSIONS - 8,
        "most calls must be stopped by the breaker: {stats:?}"
    );
}

/// The most linear memory the engine's instances held at once, sampled every 100 µs.
struct Peak {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<usize>,
}

impl Peak {
    fn watch() -> Peak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(engine().memory_in_use());
                std::thread::sleep(Duration::from_micros(100));
            }
            peak
        });
        Peak { stop, sampler }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("sampler")
    }
}
