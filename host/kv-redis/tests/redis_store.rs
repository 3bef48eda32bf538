//! The Redis store against a real redis-server: the same semantics table as the sled store,
//! sharing between two store instances (two nodes), the key layout, and what a dead server
//! does to calls (a storage error within the deadline, then fail-fast, then recovery).

mod common;

use common::RedisServer;
use corvid_kv_redis::{KvError, KvStore, RedisKv, RedisSettings};
use corvid_types::kv::conformance;
use std::time::{Duration, Instant};

fn store(server: &RedisServer) -> RedisKv {
    let mut s = RedisSettings::new(server.url());
    s.max_keys_per_plugin = conformance::MAX_KEYS;
    s.max_bytes_per_plugin = conformance::MAX_BYTES;
    RedisKv::open(s).unwrap()
}

fn redis_cli(server: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &server.port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_store_passes_the_kv_conformance_table() {
    let server = RedisServer::start();
    conformance::run_all(&store(&server), "redis");
}

#[test]
fn two_nodes_share_counters_cas_and_quotas() {
    let server = RedisServer::start();
    let (a, b) = (store(&server), store(&server));
    std::thread::scope(|s| {
        for kv in [&a, &b, &a, &b] {
            s.spawn(move || {
                for _ in 0..50 {
                    kv.increment("rate", b"client", 1, Some(Duration::from_secs(60)))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(
        a.get("rate", b"client").unwrap().as_deref(),
        Some(&b"200"[..])
    );
    assert!(a
        .compare_and_swap("grey", b"t", None, Some(b"1"), None)
        .unwrap());
    assert!(!b
        .compare_and_swap("grey", b"t", None, Some(b"2"), None)
        .unwrap());
    for i in 0..conformance::MAX_KEYS - 1 {
        a.set("q", format!("{i}").as_bytes(), b"v", None).unwrap();
    }
    b.set("q", b"last", b"v", None).unwrap();
    assert!(matches!(
        a.set("q", b"over", b"v", None),
        Err(KvError::Quota(_))
    ));
}

#[test]
fn keys_live_under_the_prefix_with_redis_ttls() {
    let server = RedisServer::start();
    let kv = store(&server);
    kv.set("greylist", b"1.2.3.4", b"v", Some(Duration::from_secs(100)))
        .unwrap();
    let ttl: u64 = redis_cli(&server, &["TTL", "corvid:kv:{greylist}:k:1.2.3.4"])
        .parse()
        .unwrap();
    assert!((95..=100).contains(&ttl), "Redis holds the TTL: {ttl}");
    // `ttl` reads Redis's own (PTTL): one set by another client counts too.
    let left = kv.ttl("greylist", b"1.2.3.4").unwrap().unwrap();
    assert!(
        left > Duration::from_secs(95) && left <= Duration::from_secs(100),
        "{left:?}"
    );
    redis_cli(&server, &["PERSIST", "corvid:kv:{greylist}:k:1.2.3.4"]);
    assert_eq!(kv.ttl("greylist", b"1.2.3.4").unwrap(), None, "no expiry");
    assert_eq!(kv.ttl("greylist", b"absent").unwrap(), None);
    assert_eq!(
        redis_cli(&server, &["HGET", "corvid:kv:{greylist}:use", "keys"]),
        "1"
    );
}

#[test]
fn expired_entries_stop_counting_against_the_quota() {
    let server = RedisServer::start();
    let kv = store(&server);
    for i in 0..conformance::MAX_KEYS {
        kv.set(
            "q",
            format!("{i}").as_bytes(),
            b"v",
            Some(Duration::from_millis(100)),
        )
        .unwrap();
    }
    assert!(matches!(
        kv.set("q", b"x", b"v", None),
        Err(KvError::Quota(_))
    ));
    std::thread::sleep(Duration::from_millis(250));
    // Redis expired them; the next write forgets their usage, with no sweep.
    kv.set("q", b"x", b"v", None).unwrap();
    assert_eq!(
        redis_cli(&server, &["HGET", "corvid:kv:{q}:use", "keys"]),
        "1"
    );
}

#[test]
fn a_dead_server_is_a_storage_error_within_the_deadline_then_recovers() {
    let mut server = RedisServer::start();
    let port = server.port;
    let mut settings = RedisSettings::new(server.url());
    settings.timeout = Duration::from_millis(200);
    settings.retry_after = Duration::from_millis(300);
    let kv = RedisKv::open(settings).unwrap();
    kv.set("p", b"k", b"v", None).unwrap();
    server.stop();
    let started = Instant::now();
    assert!(matches!(kv.get("p", b"k"), Err(KvError::Storage(_))));
    assert!(matches!(
        kv.increment("p", b"n", 1, None),
        Err(KvError::Storage(_))
    ));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Fail-fast while the breaker is open.
    let t = Instant::now();
    assert!(matches!(
        kv.set("p", b"k", b"v", None),
        Err(KvError::Storage(_))
    ));
    assert!(t.elapsed() < Duration::from_millis(20), "{:?}", t.elapsed());
    // Back on the same port: calls work again once retry_after has passed.
    let _server = RedisServer::start_on(port);
    std::thread::sleep(Duration::from_millis(400));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match kv.set("p", b"k", b"again", None) {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "no recovery: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kv.get("p", b"k").unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn an_unreachable_server_at_start_is_not_fatal() {
    // Nothing listens on port 1: the store opens, calls fail as storage errors.
    let kv = RedisKv::open(RedisSettings::new("redis://127.0.0.1:1/")).unwrap();
    assert!(matches!(kv.get("p", b"k"), Err(KvError::Storage(_))));
}
