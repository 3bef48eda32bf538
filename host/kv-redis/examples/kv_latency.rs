//! Latency of each kv operation on the sled store and on Redis, as the plugin host sees it
//! (one synchronous call, one thread): p50 and p99 in microseconds. docs/scaling.md quotes it.
//!
//! `cargo run --release -p corvid-kv-redis --example kv_latency -- redis://127.0.0.1:6379/ [N]`

use corvid_types::kv::KvStore;
use std::time::{Duration, Instant};

fn measure(name: &str, kv: &dyn KvStore, n: usize) {
    let ttl = Some(Duration::from_secs(3600));
    let ops: [(&str, &dyn Fn(usize)); 4] = [
        ("set", &|i| {
            kv.set(
                "bench",
                format!("k{}", i % 1000).as_bytes(),
                b"value-32-octets-of-payload-xxxxx",
                ttl,
            )
            .map(|_| ())
            .unwrap()
        }),
        ("get", &|i| {
            kv.get("bench", format!("k{}", i % 1000).as_bytes())
                .map(|_| ())
                .unwrap()
        }),
        ("increment", &|i| {
            kv.increment("bench", format!("n{}", i % 1000).as_bytes(), 1, ttl)
                .map(|_| ())
                .unwrap()
        }),
        // A get, then the swap: how a plugin uses it.
        ("compare-and-swap", &|i| {
            let key = format!("c{}", i % 1000);
            let old = kv.get("bench", key.as_bytes()).unwrap();
            kv.compare_and_swap("bench", key.as_bytes(), old.as_deref(), Some(b"x"), ttl)
                .map(|_| ())
                .unwrap()
        }),
    ];
    for (op, f) in ops {
        for i in 0..n / 10 {
            f(i); // warm-up
        }
        let mut samples: Vec<Duration> = (0..n)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
            .collect();
        samples.sort();
        let pct = |p: usize| {
            samples[(samples.len() * p / 100).min(samples.len() - 1)].as_nanos() as f64 / 1000.0
        };
        println!(
            "{name:6} {op:17} p50 {:>7.1} µs  p99 {:>7.1} µs  ({n} calls)",
            pct(50),
            pct(99)
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = corvid_queue::SledSpool::open(dir.path()).expect("sled spool");
    measure("sled", &spool.kv(), n);
    let redis =
        corvid_kv_redis::RedisKv::open(corvid_kv_redis::RedisSettings::new(url)).expect("redis");
    measure("redis", &redis, n);
}
