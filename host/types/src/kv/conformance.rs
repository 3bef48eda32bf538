//! The semantics every [`KvStore`] must have, as one table of cases that the tests of each
//! backend run against a real store (feature `kv-conformance`, for dev-dependencies only).
//! The store under test must be built with the quotas [`MAX_KEYS`] and [`MAX_BYTES`] per
//! namespace. Each case uses its own namespaces (derived from `ns`), so they can share a store.

use super::{KvError, KvStore};
use std::time::Duration;

/// Keys per namespace the store under test allows.
pub const MAX_KEYS: u64 = 4;
/// Octets per namespace the store under test allows (the backends count slightly different
/// overheads per entry; the cases stay far from the edge).
pub const MAX_BYTES: u64 = 4096;

/// One case: its name and the check, which panics on a violation.
pub type Case = (&'static str, fn(&dyn KvStore, &str));

/// Every case.
pub const CASES: &[Case] = &[
    ("set_get_delete", set_get_delete),
    ("namespaces_are_separate", namespaces_are_separate),
    ("binary_keys_and_values", binary_keys_and_values),
    ("ttl_expires", ttl_expires),
    ("ttl_reports_the_time_left", ttl_reports_the_time_left),
    (
        "set_without_ttl_clears_expiry",
        set_without_ttl_clears_expiry,
    ),
    ("increment_counts", increment_counts),
    ("increment_ttl_only_on_create", increment_ttl_only_on_create),
    ("increment_not_a_number", increment_not_a_number),
    ("increment_saturates", increment_saturates),
    ("compare_and_swap", compare_and_swap),
    (
        "compare_and_swap_expired_is_absent",
        compare_and_swap_expired_is_absent,
    ),
    ("quota_keys", quota_keys),
    ("quota_bytes", quota_bytes),
    (
        "concurrent_increments_are_atomic",
        concurrent_increments_are_atomic,
    ),
    (
        "concurrent_cas_loses_no_update",
        concurrent_cas_loses_no_update,
    ),
];

/// Runs every case against `store`, namespaces under `ns`.
pub fn run_all(store: &dyn KvStore, ns: &str) {
    for (name, case) in CASES {
        case(store, &format!("{ns}.{name}"));
    }
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

fn set_get_delete(kv: &dyn KvStore, ns: &str) {
    assert_eq!(kv.get(ns, b"k").unwrap(), None);
    kv.set(ns, b"k", b"v1", None).unwrap();
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    kv.set(ns, b"k", b"v2", None).unwrap();
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(kv.delete(ns, b"k").unwrap(), "delete of a live key");
    assert!(!kv.delete(ns, b"k").unwrap(), "delete of an absent key");
    assert_eq!(kv.get(ns, b"k").unwrap(), None);
    kv.set(ns, b"empty", b"", None).unwrap();
    assert_eq!(kv.get(ns, b"empty").unwrap().as_deref(), Some(&b""[..]));
}

fn namespaces_are_separate(kv: &dyn KvStore, ns: &str) {
    let other = format!("{ns}-other");
    kv.set(ns, b"k", b"mine", None).unwrap();
    assert_eq!(kv.get(&other, b"k").unwrap(), None);
    assert_eq!(kv.increment(&other, b"k", 1, None).unwrap(), 1);
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"mine"[..]));
    assert!(kv.delete(&other, b"k").unwrap());
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"mine"[..]));
}

fn binary_keys_and_values(kv: &dyn KvStore, ns: &str) {
    let key = b"a\0b\xff:{x}*";
    let value = b"\0\x01\xfe\r\n.";
    kv.set(ns, key, value, None).unwrap();
    assert_eq!(kv.get(ns, key).unwrap().as_deref(), Some(&value[..]));
    assert_eq!(kv.get(ns, b"a").unwrap(), None, "a NUL ends no key early");
}

fn ttl_expires(kv: &dyn KvStore, ns: &str) {
    kv.set(ns, b"short", b"v", ms(150)).unwrap();
    kv.set(ns, b"long", b"v", Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(kv.get(ns, b"short").unwrap().as_deref(), Some(&b"v"[..]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kv.get(ns, b"short").unwrap(), None, "expired");
    assert!(
        !kv.delete(ns, b"short").unwrap(),
        "an expired key is absent"
    );
    assert_eq!(kv.get(ns, b"long").unwrap().as_deref(), Some(&b"v"[..]));
}

fn ttl_reports_the_time_left(kv: &dyn KvStore, ns: &str) {
    let left = |k: &[u8]| kv.ttl(ns, k).unwrap();
    assert_eq!(left(b"absent"), None);
    kv.set(ns, b"forever", b"v", None).unwrap();
    assert_eq!(left(b"forever"), None, "no expiry");
    kv.set(ns, b"minute", b"v", Some(Duration::from_secs(60)))
        .unwrap();
    let t = left(b"minute").expect("a ttl");
    assert!(
        t <= Duration::from_secs(60) && t > Duration::from_secs(55),
        "{t:?}"
    );
    // An increment of a live counter keeps its expiry (the window of its first hit).
    assert_eq!(kv.increment(ns, b"c", 1, ms(150)).unwrap(), 1);
    assert_eq!(kv.increment(ns, b"c", 1, None).unwrap(), 2);
    assert!(left(b"c").is_some_and(|t| t <= Duration::from_millis(150)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(left(b"c"), None, "expired: absent");
    kv.set(ns, b"minute", b"w", None).unwrap();
    assert_eq!(left(b"minute"), None, "a set without a ttl clears it");
}

fn set_without_ttl_clears_expiry(kv: &dyn KvStore, ns: &str) {
    kv.set(ns, b"k", b"1", ms(150)).unwrap();
    kv.set(ns, b"k", b"2", None).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"2"[..]));
}

fn increment_counts(kv: &dyn KvStore, ns: &str) {
    assert_eq!(kv.increment(ns, b"c", 5, None).unwrap(), 5);
    assert_eq!(kv.increment(ns, b"c", -7, None).unwrap(), -2);
    assert_eq!(kv.get(ns, b"c").unwrap().as_deref(), Some(&b"-2"[..]));
    kv.set(ns, b"s", b"40", None).unwrap();
    assert_eq!(kv.increment(ns, b"s", 2, None).unwrap(), 42);
}

fn increment_ttl_only_on_create(kv: &dyn KvStore, ns: &str) {
    assert_eq!(kv.increment(ns, b"w", 1, ms(400)).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(200));
    // A later hit does not restart the window.
    assert_eq!(kv.increment(ns, b"w", 1, ms(10_000)).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(
        kv.get(ns, b"w").unwrap(),
        None,
        "window of the first hit ended"
    );
    assert_eq!(
        kv.increment(ns, b"w", 1, ms(10_000)).unwrap(),
        1,
        "new window"
    );
    // A counter created without a TTL keeps none.
    assert_eq!(kv.increment(ns, b"p", 1, None).unwrap(), 1);
    assert_eq!(kv.increment(ns, b"p", 1, ms(100)).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(kv.get(ns, b"p").unwrap().as_deref(), Some(&b"2"[..]));
}

fn increment_not_a_number(kv: &dyn KvStore, ns: &str) {
    kv.set(ns, b"t", b"abc", None).unwrap();
    assert_eq!(kv.increment(ns, b"t", 1, None), Err(KvError::NotANumber));
    assert_eq!(kv.get(ns, b"t").unwrap().as_deref(), Some(&b"abc"[..]));
    kv.set(ns, b"f", b"1.5", None).unwrap();
    assert_eq!(kv.increment(ns, b"f", 1, None), Err(KvError::NotANumber));
}

fn increment_saturates(kv: &dyn KvStore, ns: &str) {
    kv.set(ns, b"hi", (i64::MAX - 1).to_string().as_bytes(), None)
        .unwrap();
    assert_eq!(kv.increment(ns, b"hi", 5, None).unwrap(), i64::MAX);
    assert_eq!(kv.increment(ns, b"hi", -1, None).unwrap(), i64::MAX - 1);
    kv.set(ns, b"lo", (i64::MIN + 1).to_string().as_bytes(), None)
        .unwrap();
    assert_eq!(kv.increment(ns, b"lo", -5, None).unwrap(), i64::MIN);
}

fn compare_and_swap(kv: &dyn KvStore, ns: &str) {
    assert!(kv
        .compare_and_swap(ns, b"k", None, Some(b"a"), None)
        .unwrap());
    assert!(!kv
        .compare_and_swap(ns, b"k", None, Some(b"b"), None)
        .unwrap());
    assert!(!kv
        .compare_and_swap(ns, b"k", Some(b"x"), Some(b"b"), None)
        .unwrap());
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"a"[..]));
    assert!(kv
        .compare_and_swap(ns, b"k", Some(b"a"), Some(b"b"), ms(150))
        .unwrap());
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"b"[..]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kv.get(ns, b"k").unwrap(), None, "the swap's TTL applies");
    kv.set(ns, b"d", b"v", None).unwrap();
    assert!(kv
        .compare_and_swap(ns, b"d", Some(b"v"), None, None)
        .unwrap());
    assert_eq!(kv.get(ns, b"d").unwrap(), None, "None deletes");
    assert!(!kv
        .compare_and_swap(ns, b"d", Some(b"v"), None, None)
        .unwrap());
}

fn compare_and_swap_expired_is_absent(kv: &dyn KvStore, ns: &str) {
    kv.set(ns, b"k", b"old", ms(100)).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert!(!kv
        .compare_and_swap(ns, b"k", Some(b"old"), Some(b"x"), None)
        .unwrap());
    assert!(kv
        .compare_and_swap(ns, b"k", None, Some(b"new"), None)
        .unwrap());
    assert_eq!(kv.get(ns, b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

fn quota_keys(kv: &dyn KvStore, ns: &str) {
    for i in 0..MAX_KEYS {
        kv.set(ns, format!("k{i}").as_bytes(), b"v", None).unwrap();
    }
    let refused = |r: Result<(), KvError>| matches!(r, Err(KvError::Quota(_)));
    assert!(
        refused(kv.set(ns, b"extra", b"v", None)),
        "one key too many"
    );
    assert!(matches!(
        kv.increment(ns, b"extra", 1, None),
        Err(KvError::Quota(_))
    ));
    assert!(matches!(
        kv.compare_and_swap(ns, b"extra", None, Some(b"v"), None),
        Err(KvError::Quota(_))
    ));
    assert_eq!(
        kv.get(ns, b"extra").unwrap(),
        None,
        "a refused write changes nothing"
    );
    kv.set(ns, b"k0", b"overwrite", None).unwrap();
    assert!(kv.delete(ns, b"k1").unwrap());
    kv.set(ns, b"extra", b"v", None).unwrap();
    // Another namespace has its own quota.
    kv.set(&format!("{ns}-other"), b"k", b"v", None).unwrap();
}

fn quota_bytes(kv: &dyn KvStore, ns: &str) {
    let big = vec![b'x'; (MAX_BYTES as usize) * 3 / 4];
    kv.set(ns, b"a", &big, None).unwrap();
    assert!(matches!(
        kv.set(ns, b"b", &big, None),
        Err(KvError::Quota(_))
    ));
    assert_eq!(kv.get(ns, b"b").unwrap(), None);
    // Rewriting at the same size does not grow the namespace.
    kv.set(ns, b"a", &big, None).unwrap();
    assert!(kv.delete(ns, b"a").unwrap());
    kv.set(ns, b"b", &big, None).unwrap();
}

fn concurrent_increments_are_atomic(kv: &dyn KvStore, ns: &str) {
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    kv.increment(ns, b"n", 1, None).unwrap();
                }
            });
        }
    });
    assert_eq!(kv.get(ns, b"n").unwrap().as_deref(), Some(&b"400"[..]));
}

fn concurrent_cas_loses_no_update(kv: &dyn KvStore, ns: &str) {
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    loop {
                        let old = kv.get(ns, b"n").unwrap();
                        let n: u64 = old
                            .as_deref()
                            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                            .unwrap_or(0);
                        let new = (n + 1).to_string();
                        if kv
                            .compare_and_swap(ns, b"n", old.as_deref(), Some(new.as_bytes()), None)
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            });
        }
    });
    assert_eq!(kv.get(ns, b"n").unwrap().as_deref(), Some(&b"100"[..]));
}
