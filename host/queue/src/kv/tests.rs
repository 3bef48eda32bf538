use super::*;

fn kv() -> (tempfile::TempDir, SledKv) {
    kv_with(KvLimits::default())
}

fn kv_with(limits: KvLimits) -> (tempfile::TempDir, SledKv) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let kv = SledKv::new(db.open_tree("kv").unwrap(), limits).unwrap();
    (dir, kv)
}

#[test]
fn namespaces_ttl_increment_and_cas() {
    let (_d, kv) = kv();
    kv.set("a", b"k", b"1", None).unwrap();
    assert_eq!(kv.get("b", b"k").unwrap(), None, "namespaces are separate");
    assert_eq!(kv.increment("a", b"k", 4, None).unwrap(), 5);
    assert_eq!(
        kv.increment("a", b"n", 1, Some(Duration::from_millis(30)))
            .unwrap(),
        1
    );
    assert_eq!(
        kv.increment("a", b"n", 1, Some(Duration::from_secs(60)))
            .unwrap(),
        2
    );
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(
        kv.get("a", b"n").unwrap(),
        None,
        "expired with the first hit's TTL"
    );
    assert_eq!(kv.increment("a", b"n", 1, None).unwrap(), 1);
    assert!(!kv
        .compare_and_swap("a", b"k", Some(b"9"), Some(b"x"), None)
        .unwrap());
    assert!(kv
        .compare_and_swap("a", b"k", Some(b"5"), Some(b"x"), None)
        .unwrap());
    assert!(kv
        .compare_and_swap("a", b"new", None, Some(b"y"), None)
        .unwrap());
    assert_eq!(kv.get("a", b"new").unwrap().as_deref(), Some(&b"y"[..]));
    assert!(kv.delete("a", b"k").unwrap());
    assert!(
        matches!(
            kv.increment("a", b"new", 1, None),
            Err(KvError::NotAnInteger)
        ),
        "not an integer"
    );
    assert_eq!(kv.sweep().unwrap(), 0);
}

#[test]
fn concurrent_increments_are_not_lost() {
    let (_d, kv) = kv();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let kv = kv.clone();
            std::thread::spawn(move || {
                (0..250).for_each(|_| {
                    kv.increment("p", b"c", 1, None).unwrap();
                })
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(kv.get("p", b"c").unwrap().as_deref(), Some(&b"1000"[..]));
}

fn quota_hit<T: std::fmt::Debug>(r: Result<T, KvError>) -> String {
    match r {
        Err(KvError::QuotaExceeded { namespace, what }) => format!("{namespace}: {what}"),
        other => panic!("expected a quota error, got {other:?}"),
    }
}

#[test]
fn quotas_count_keys_and_octets_per_plugin() {
    let (_d, kv) = kv_with(KvLimits {
        max_keys_per_plugin: 3,
        max_bytes_per_plugin: 100,
    });
    for k in [b"a", b"b", b"c"] {
        kv.set("greylist", k, b"v", None).unwrap();
    }
    let e = quota_hit(kv.set("greylist", b"d", b"v", None));
    assert!(e.contains("greylist") && e.contains("3 keys"), "{e}");
    quota_hit(kv.increment("greylist", b"d", 1, None));
    quota_hit(kv.compare_and_swap("greylist", b"d", None, Some(b"v"), None));
    assert_eq!(kv.get("greylist", b"d").unwrap(), None, "nothing written");
    kv.set("greylist", b"a", b"new", None).unwrap(); // replacing is not a new key
    kv.set("other", b"d", b"v", None).unwrap(); // another plugin has its own quota
    assert!(kv.delete("greylist", b"a").unwrap());
    kv.set("greylist", b"d", b"v", None).unwrap(); // room again
    assert_eq!(kv.usage("greylist").0, 3);

    // Octets: key (namespace + NUL + key) plus 8 octets of expiry plus the value.
    let e = quota_hit(kv.set("greylist", b"b", &[b'x'; 90], None));
    assert!(e.contains("100 octets"), "{e}");
    kv.set("greylist", b"b", b"", None).unwrap(); // shrinking always passes
}

#[test]
fn expired_keys_are_swept_in_bounded_steps_and_free_quota() {
    let (_d, kv) = kv_with(KvLimits {
        max_keys_per_plugin: 50,
        max_bytes_per_plugin: 1 << 20,
    });
    for i in 0..50u32 {
        let ttl = (i % 2 == 0).then_some(Duration::from_millis(20));
        kv.set("rate", &i.to_be_bytes(), b"1", ttl).unwrap();
    }
    quota_hit(kv.set("rate", b"x", b"1", None));
    std::thread::sleep(Duration::from_millis(30));
    let (removed, done) = kv.sweep_some(10).unwrap();
    assert!(!done && (4..=10).contains(&removed), "{removed} {done}");
    let mut total = removed;
    loop {
        let (n, done) = kv.sweep_some(10).unwrap();
        total += n;
        if done {
            break;
        }
    }
    assert_eq!(total, 25);
    assert_eq!(kv.usage("rate").0, 25);
    kv.set("rate", b"x", b"1", None).unwrap();
    assert_eq!(kv.sweep_some(1000).unwrap(), (0, true));
}

#[test]
fn list_shows_live_entries_of_one_plugin() {
    let (_d, kv) = kv();
    kv.set("p", b"k1", b"v1", None).unwrap();
    kv.set("p", b"k2", b"v2", Some(Duration::from_secs(60)))
        .unwrap();
    kv.set("p", b"gone", b"v", Some(Duration::from_millis(1)))
        .unwrap();
    kv.set("q", b"k1", b"other", None).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let all = kv.list("p", b"", 100).unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|e| e.key.as_slice()).collect();
    assert_eq!(keys, [&b"k1"[..], b"k2"]);
    assert!(all[0].expires_ms.is_none() && all[1].expires_ms.is_some());
    assert_eq!(kv.list("p", b"k2", 100).unwrap().len(), 1);
    assert_eq!(kv.list("p", b"", 1).unwrap().len(), 1);
}
