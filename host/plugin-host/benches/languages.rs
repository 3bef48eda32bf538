//! The example policy (examples/README.md) in each language, as built by `examples/build.sh`
//! into `target/examples/greylist-<language>.wasm` (missing builds are skipped):
//! - printed once: component size, compile time (no cache), cached load time, and the peak
//!   linear memory of one instance;
//! - criterion (CPU time of this thread): `instantiate` (a fresh instance and one `rcpt`
//!   hook, minus nothing: compare with `warm_hook`), `warm_hook` (`rcpt` on a live instance:
//!   the greylist check with one kv read), `txn_fresh` and `txn_pooled` (a transaction's
//!   `rcpt` and `data` hooks on a fresh instance, and on a warm one from the pool).
//!
//! Run: `examples/build.sh && cargo bench -p corvid-plugin-host --bench languages`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use corvid_plugin_host::{Capability, InstanceMode, Manifest, PluginHost, Services};
use corvid_types::{MessageView, Policy, PolicySession};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LANGUAGES: &[&str] = &["rust", "c", "python", "javascript"];

fn component(lang: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/examples")
        .join(format!("greylist-{lang}.wasm"))
}

fn manifest(path: &Path, mode: InstanceMode) -> Manifest {
    let mut m = Manifest::new("greylist", path);
    m.capabilities.push(Capability::Kv);
    m.instance = mode;
    m.limits.hook_time_ms = 5_000;
    m.limits.memory_mb = 256;
    m.config
        .insert("delay_seconds".into(), toml::Value::Integer(0));
    m
}

/// Loads `m` on a new host; returns the host and the wall time of the load.
fn load(
    rt: &tokio::runtime::Runtime,
    m: &Manifest,
    cache: Option<PathBuf>,
) -> (PluginHost, Duration) {
    let host = PluginHost::new(&engine(), Services::in_memory(), cache);
    let t = Instant::now();
    rt.block_on(host.reload(vec![m.clone()])).expect("loads");
    (host, t.elapsed())
}

fn languages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-cache");
    let _ = std::fs::remove_dir_all(&cache);
    for lang in LANGUAGES {
        let path = component(lang);
        let Ok(meta) = std::fs::metadata(&path) else {
            eprintln!("{lang}: {} not built, skipped", path.display());
            continue;
        };
        let fresh = manifest(&path, InstanceMode::Transaction);
        let (_, compile) = load(&rt, &fresh, None);
        let (_, _) = load(&rt, &fresh, Some(cache.clone()));
        let (host, cached) = load(&rt, &fresh, Some(cache.clone()));
        let (pooled, _) = load(
            &rt,
            &manifest(&path, InstanceMode::Pool),
            Some(cache.clone()),
        );

        let conn = conn(1);
        let (env, rcpt) = (envelope(), rcpt());
        let mut s = host.session(&conn);
        // The first rcpt greylists the triplet (delay 0); every later one passes.
        rt.block_on(s.rcpt(&conn, &env, &rcpt));
        let group = format!("greylist-{lang}");
        c.bench_function(&format!("{group}/warm_hook"), |b| {
            b.iter_custom(|n| {
                cpu(|| {
                    rt.block_on(async {
                        for _ in 0..n {
                            black_box(s.rcpt(&conn, &env, &rcpt).await);
                        }
                    })
                })
            })
        });
        s.end_transaction();
        c.bench_function(&format!("{group}/instantiate"), |b| {
            b.iter_custom(|n| {
                cpu(|| {
                    rt.block_on(async {
                        for _ in 0..n {
                            black_box(s.rcpt(&conn, &env, &rcpt).await);
                            s.end_transaction();
                        }
                    })
                })
            })
        });
        for (name, h) in [("txn_fresh", &host), ("txn_pooled", &pooled)] {
            let mut s = h.session(&conn);
            c.bench_function(&format!("{group}/{name}"), |b| {
                b.iter_custom(|n| {
                    cpu(|| {
                        rt.block_on(async {
                            for _ in 0..n {
                                transaction(&mut s, &conn, &env, &rcpt).await;
                            }
                        })
                    })
                })
            });
        }
        let memory = host
            .stats()
            .iter()
            .map(|s| s.memory_peak_bytes)
            .max()
            .unwrap_or(0);
        println!(
            "{lang}: component {:.1} KiB, compile {:.0} ms, cached load {:.1} ms, memory per instance {:.1} MiB",
            meta.len() as f64 / 1024.0,
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            memory as f64 / (1 << 20) as f64
        );
    }
}

async fn transaction(
    s: &mut Box<dyn PolicySession>,
    conn: &corvid_types::ConnectionInfo,
    env: &corvid_types::Envelope,
    rcpt: &corvid_types::Recipient,
) {
    black_box(s.rcpt(conn, env, rcpt).await);
    black_box(s.data(conn, env, MessageView { content: MESSAGE }).await);
    s.end_transaction();
}

/// Runs `f` and returns the CPU time this thread spent in it.
fn cpu(f: impl FnOnce()) -> Duration {
    let t = thread_cpu();
    f();
    thread_cpu().saturating_sub(t)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = languages
}
criterion_main!(benches);
