//! `[expect_kv]` of `corvid plugin test`. The runner's store is the plugin host's [`MemoryKv`]
//! on the script's clock (the scripted one when the script has `[clock]`), so that advancing
//! the clock expires keys.

use super::ambient::{ttl_text, KvEntry};
use super::report::{self, Outcome};
use corvid_plugin_host::MemoryKv;

/// `[expect_kv]`: what the store holds under `key` against the expectation. The report shows
/// the value, and the time left when the key expires (`kv "k": 3 (ttl 10m)`).
pub fn check(kv: &MemoryKv, ns: &str, key: &str, want: &KvEntry) -> anyhow::Result<Outcome> {
    let held = kv.held(ns, key.as_bytes())?;
    let value = held
        .as_ref()
        .map(|(v, _)| String::from_utf8_lossy(v).into_owned());
    let ttl = held.as_ref().and_then(|(_, ttl)| *ttl);
    let shown = match (&value, ttl) {
        (None, _) => "(absent)".to_string(),
        (Some(v), None) => v.clone(),
        (Some(v), Some(_)) => format!("{v} (ttl {})", ttl_text(ttl)),
    };
    let mut o = report::text(format!("kv {key:?}"), None, shown);
    if value.as_deref() != want.expected() {
        o.diff.push(format!(
            "- value: {}",
            want.expected().unwrap_or("(absent)")
        ));
        o.diff.push(format!(
            "+ value: {}",
            value.as_deref().unwrap_or("(absent)")
        ));
    }
    if let (Some(want_ttl), Some(_)) = (want.ttl(), &value) {
        if ttl_text(Some(want_ttl)) != ttl_text(ttl) {
            o.diff.push(format!("- ttl: {}", ttl_text(Some(want_ttl))));
            o.diff.push(format!("+ ttl: {}", ttl_text(ttl)));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_plugin_host::clock::ScriptedClock;
    use corvid_types::{KvError, KvStore};
    use std::sync::Arc;
    use std::time::Duration;

    fn store() -> (Arc<ScriptedClock>, MemoryKv) {
        let clock = Arc::new(ScriptedClock::new(Duration::from_secs(1_000_000)));
        (clock.clone(), MemoryKv::with_clock(clock))
    }

    #[test]
    fn keys_expire_when_the_scripted_clock_passes_their_ttl() {
        let (clock, kv) = store();
        let ten_min = Some(Duration::from_secs(600));
        kv.set("p", b"k", b"v", ten_min).unwrap();
        kv.set("p", b"forever", b"v", None).unwrap();
        clock.advance(Duration::from_secs(599));
        let (_, ttl) = kv.held("p", b"k").unwrap().expect("still there");
        assert_eq!(ttl, Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            kv.get("p", b"k").unwrap(),
            None,
            "expired at exactly its TTL"
        );
        assert!(!kv.delete("p", b"k").unwrap());
        let (_, forever) = kv.held("p", b"forever").unwrap().expect("kept");
        assert_eq!(forever, None);
    }

    #[test]
    fn a_counter_keeps_the_window_of_its_first_increment() {
        let (clock, kv) = store();
        let window = Some(Duration::from_secs(60));
        assert_eq!(kv.increment("p", b"n", 1, window).unwrap(), 1);
        clock.advance(Duration::from_secs(30));
        assert_eq!(kv.increment("p", b"n", 1, window).unwrap(), 2);
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            kv.increment("p", b"n", 1, window).unwrap(),
            1,
            "a new window"
        );
        kv.set("p", b"s", b"x", None).unwrap();
        assert_eq!(kv.increment("p", b"s", 1, None), Err(KvError::NotANumber));
    }

    #[test]
    fn compare_and_swap_sees_an_expired_key_as_absent() {
        let (clock, kv) = store();
        kv.set("p", b"k", b"old", Some(Duration::from_secs(5)))
            .unwrap();
        assert!(!kv
            .compare_and_swap("p", b"k", None, Some(b"new"), None)
            .unwrap());
        clock.advance(Duration::from_secs(5));
        assert!(kv
            .compare_and_swap("p", b"k", None, Some(b"new"), None)
            .unwrap());
        assert_eq!(kv.get("p", b"k").unwrap(), Some(b"new".to_vec()));
        assert_eq!(kv.get("q", b"k").unwrap(), None, "namespaces are separate");
    }
}
