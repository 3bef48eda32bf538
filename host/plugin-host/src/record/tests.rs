use super::*;

#[test]
fn only_recorded_sessions_keep_answers() {
    note(991, |a| a.kv_write("p", "k"));
    start(992);
    note(992, |a| {
        a.dns("A", "X.Example.", &Ok(vec!["192.0.2.1".into()]))
    });
    note(992, |a| {
        a.dns("TXT", "gone.example", &Err(DnsError::NotFound))
    });
    note(992, |a| {
        a.dns("MX", "slow.example", &Err(DnsError::Timeout))
    });
    let kv = crate::MemoryKv::new();
    kv.set("p", b"seen", b"1", Some(Duration::from_secs(60)))
        .unwrap();
    kv_read(992, &kv, "p", "seen", Some(b"1"));
    // Only the first touch counts: later reads see the session's own writes.
    kv_read(992, &kv, "p", "seen", Some(b"2"));
    note(992, |a| a.kv_write("p", "mine"));
    note(992, |a| a.kv_read("p", "mine", Some(b"x"), None));
    kv.set("p", b"count", b"6", None).unwrap();
    kv_increment(992, &kv, "p", "count", 1, 6);
    kv_increment(992, &kv, "p", "fresh", 1, 1);
    let a = finish(992).unwrap();
    assert!(finish(991).is_none() && finish(992).is_none());
    assert_eq!(a.dns["x.example"]["A"], ["192.0.2.1"]);
    assert!(!a.dns.contains_key("gone.example"));
    assert!(
        a.notes[0].contains("MX lookup of slow.example failed"),
        "{:?}",
        a.notes
    );
    let p = &a.kv["p"];
    assert_eq!(p["seen"].value, "1");
    let ttl = p["seen"].ttl.expect("the time left is kept");
    // Counted from the session's start: at least what the key had left at the read.
    assert!(
        ttl > Duration::from_secs(59) && ttl < Duration::from_secs(70),
        "{ttl:?}"
    );
    assert_eq!((p["count"].value.as_str(), p["count"].ttl), ("5", None));
    assert!(!p.contains_key("mine") && !p.contains_key("fresh"));
}

/// A store that answers reads but not the time left (a Redis timeout, say).
struct NoTtl(crate::MemoryKv);

impl KvStore for NoTtl {
    fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, crate::KvError> {
        self.0.get(ns, key)
    }
    fn ttl(&self, _: &str, _: &[u8]) -> Result<Option<Duration>, crate::KvError> {
        Err(crate::KvError::Storage("timed out".into()))
    }
    fn set(
        &self,
        ns: &str,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), crate::KvError> {
        self.0.set(ns, key, value, ttl)
    }
    fn delete(&self, ns: &str, key: &[u8]) -> Result<bool, crate::KvError> {
        self.0.delete(ns, key)
    }
    fn increment(
        &self,
        ns: &str,
        key: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, crate::KvError> {
        self.0.increment(ns, key, delta, ttl)
    }
    fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, crate::KvError> {
        self.0.compare_and_swap(ns, key, expected, new, ttl)
    }
}

#[test]
fn a_time_left_that_cannot_be_read_is_noted() {
    start(993);
    let kv = NoTtl(crate::MemoryKv::new());
    kv.set("p", b"seen", b"1", Some(Duration::from_secs(60)))
        .unwrap();
    kv_read(993, &kv, "p", "seen", Some(b"1"));
    let a = finish(993).unwrap();
    assert_eq!(
        (a.kv["p"]["seen"].value.as_str(), a.kv["p"]["seen"].ttl),
        ("1", None)
    );
    assert!(
        a.notes
            .iter()
            .any(|n| n.contains("\"seen\" could not be read")),
        "{:?}",
        a.notes
    );
}

#[test]
fn the_answers_of_a_session_are_bounded() {
    let mut a = HostAnswers::default();
    let big = "x".repeat(MAX_ANSWER_BYTES / 2);
    a.kv_read("p", "a", Some(big.as_bytes()), None);
    a.kv_read("p", "b", Some(big.as_bytes()), None);
    a.kv_read("p", "c", Some(b"small"), None);
    assert!(a.kv["p"].contains_key("a") && !a.kv["p"].contains_key("b"));
    assert!(a.kv["p"].contains_key("c"), "what still fits is kept");
    assert_eq!(a.notes.len(), 1, "{:?}", a.notes);
}
