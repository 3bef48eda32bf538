//! The host answers of recorded sessions (`[record]` in corvid): what the DNS and kv imports
//! gave the plugins, kept per SMTP session while the recorder asks for it, so that `corvid
//! plugin replay` can give the same answers offline.
//!
//! With no session recorded, each import pays one atomic load ([`note`]).
//!
//! kv: the value a key had when a plugin first touched it (a read, or what an increment or a
//! successful compare-and-swap implies), so that a replay seeded with it reads and counts the
//! same; a key first written by the plugin is not recorded (the replay writes it too). With a
//! value read or incremented comes the time the key had left ([`crate::KvStore::ttl`], asked
//! of the store only at that first touch), counted from the session's start as a replay
//! seeds it: the replayed key expires when the server's did. A swap's key gets none: the swap
//! replaced its expiry. DNS: every answer, as [`crate::StaticDns`] takes them; a name not
//! found is left out (the static table answers `NotFound`), a failed lookup is noted.

use crate::dns::DnsError;
use corvid_types::KvStore;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What one session's plugins got from the host.
#[derive(Debug, Default)]
pub struct HostAnswers {
    /// Name, then record type (`A`, `AAAA`, `MX` as `"10 mx.example"`, `TXT`, `PTR` under
    /// the address), then the answers.
    pub dns: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Namespace (the plugin's name), then key, then the value before the session touched it.
    pub kv: BTreeMap<String, BTreeMap<String, KvSeed>>,
    /// The answers of the `http` capability, in the order the requests were made.
    pub http: Vec<HttpExchange>,
    /// What a replay cannot give back as it was (a failed lookup, a value not UTF-8).
    pub notes: Vec<String>,
    /// The plugins whose verdict refused something (reject, tempfail, disconnect; a failure
    /// answered by the `tempfail` failure policy too), in the order they did.
    pub refused_by: Vec<String>,
    touched: HashSet<(String, String)>,
    /// Bytes of answers kept (against [`MAX_ANSWER_BYTES`]).
    bytes: usize,
    /// When [`start`] began the session's recording: the origin of [`KvSeed::ttl`].
    began: Option<Instant>,
}

/// A kv value as the session's plugins first found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvSeed {
    pub value: String,
    /// When the key expired, counted from the session's start (`None`: no expiry).
    pub ttl: Option<Duration>,
}

/// The most bytes of host answers one session keeps (a long session of many lookups, or of
/// large http answers, stays bounded); past it answers are left out and a note says so.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// One `wasi:http` request and its answer. The request's headers (an `Authorization`, say)
/// are not kept, nor the answer's `Set-Cookie`.
#[derive(Debug, Clone)]
pub struct HttpExchange {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

tokio::task_local! {
    /// The recorded session a hook call runs for (set by [`scope`]); the `wasi:http` hooks
    /// do not know their session otherwise.
    static RECORDING: u64;
}

/// Runs `f` (a hook call of the chain) as part of recorded session `id`, so that its
/// `wasi:http` answers are kept too.
pub async fn scope<F: std::future::Future>(id: u64, f: F) -> F::Output {
    RECORDING.scope(id, f).await
}

/// The recorded session the current hook call runs for, if any.
pub(crate) fn current() -> Option<u64> {
    if ACTIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    RECORDING.try_with(|id| *id).ok()
}

/// Sessions being recorded; 0 makes every [`note`] return at once.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

fn sessions() -> &'static Mutex<HashMap<u64, HostAnswers>> {
    static S: OnceLock<Mutex<HashMap<u64, HostAnswers>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// Starts keeping the host answers of session `id` (the connection's session id).
pub fn start(id: u64) {
    let fresh = HostAnswers {
        began: Some(Instant::now()),
        ..HostAnswers::default()
    };
    if let Ok(mut s) = sessions().lock() {
        if s.insert(id, fresh).is_none() {
            ACTIVE.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Stops keeping them, and hands them over.
pub fn finish(id: u64) -> Option<HostAnswers> {
    let taken = sessions().lock().ok()?.remove(&id);
    if taken.is_some() {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
    taken
}

/// Runs `f` on the answers of session `id` when it is recorded.
pub(crate) fn note(id: u64, f: impl FnOnce(&mut HostAnswers)) {
    if ACTIVE.load(Ordering::Relaxed) == 0 {
        return;
    }
    if let Ok(mut s) = sessions().lock() {
        if let Some(a) = s.get_mut(&id) {
            f(a);
        }
    }
}

/// True when `key` of `ns` is untouched in recorded session `id`: only then does a read's
/// time left matter, and is worth a call to the store.
fn untouched(id: u64, ns: &str, key: &str) -> bool {
    if ACTIVE.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let Ok(s) = sessions().lock() else {
        return false;
    };
    s.get(&id)
        .is_some_and(|a| !a.touched.contains(&(ns.to_string(), key.to_string())))
}

/// The time `key` has left, asked of `store` at a recorded first touch of a live value.
fn time_left(id: u64, store: &dyn KvStore, ns: &str, key: &str) -> Option<Duration> {
    if !untouched(id, ns, key) {
        return None;
    }
    match store.ttl(ns, key.as_bytes()) {
        Ok(left) => left,
        Err(e) => {
            // Kept without an expiry: the replay keeps the key for good, so say so.
            note(id, |a| {
                a.once(format!(
                    "the time left of kv key {key:?} could not be read ({e}): replayed without expiry"
                ))
            });
            None
        }
    }
}

/// A read of `key` that found `value`, in session `id`: kept (with the key's time left) if
/// the session is recorded and it is the key's first touch.
pub(crate) fn kv_read(id: u64, store: &dyn KvStore, ns: &str, key: &str, value: Option<&[u8]>) {
    let left = value.and_then(|_| time_left(id, store, ns, key));
    note(id, |a| a.kv_read(ns, key, value, left));
}

/// An increment of `key` by `delta` that gave `result`, in session `id` (the key's time left
/// is the counter's window: an increment does not change it).
pub(crate) fn kv_increment(
    id: u64,
    store: &dyn KvStore,
    ns: &str,
    key: &str,
    delta: i64,
    result: i64,
) {
    let left = (result != delta)
        .then(|| time_left(id, store, ns, key))
        .flatten();
    note(id, |a| a.kv_increment(ns, key, delta, result, left));
}

/// The chain's verdict `v` at a stage came from `plugin`.
pub(crate) fn decided(id: u64, plugin: &str, v: &corvid_types::Verdict) {
    use corvid_types::Verdict::{Disconnect, Reject, Tempfail};
    if matches!(v, Reject(_) | Tempfail(_) | Disconnect(_)) {
        note(id, |a| {
            if !a.refused_by.iter().any(|p| p == plugin) {
                a.refused_by.push(plugin.to_string());
            }
        });
    }
}

impl HostAnswers {
    pub(crate) fn dns(&mut self, kind: &str, name: &str, result: &Result<Vec<String>, DnsError>) {
        match result {
            Ok(answers) => {
                if !self.room(name.len() + answers.iter().map(String::len).sum::<usize>()) {
                    return;
                }
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let kinds = self.dns.entry(name).or_default();
                kinds.insert(kind.to_string(), answers.clone());
            }
            Err(DnsError::NotFound) => {}
            Err(e) => self.once(format!(
                "the {kind} lookup of {name} failed ({e}): the replay answers not found"
            )),
        }
    }

    /// A read of `key` in `ns` that found `value` with `left` to live: kept if it is the
    /// key's first touch.
    pub(crate) fn kv_read(
        &mut self,
        ns: &str,
        key: &str,
        value: Option<&[u8]>,
        left: Option<Duration>,
    ) {
        if !self.touched.insert((ns.to_string(), key.to_string())) {
            return;
        }
        let Some(v) = value else { return };
        if !self.room(key.len() + v.len()) {
            return;
        }
        match std::str::from_utf8(v) {
            Ok(text) => {
                // From the session's start, where the replay's clock stands when it seeds.
                let ttl = left.map(|l| l + self.began.map_or(Duration::ZERO, |b| b.elapsed()));
                let seed = KvSeed {
                    value: text.to_string(),
                    ttl,
                };
                let keys = self.kv.entry(ns.to_string()).or_default();
                keys.insert(key.to_string(), seed);
            }
            Err(_) => self.once(format!(
                "the kv value of {ns}/{key} is not UTF-8: the replay starts without it"
            )),
        }
    }

    /// An increment of `key` by `delta` that gave `result`: the key held `result - delta`
    /// (0 stands for absent too: an increment reads both alike).
    pub(crate) fn kv_increment(
        &mut self,
        ns: &str,
        key: &str,
        delta: i64,
        result: i64,
        left: Option<Duration>,
    ) {
        let before = result.wrapping_sub(delta);
        let text = (before != 0).then(|| before.to_string());
        self.kv_read(ns, key, text.as_deref().map(str::as_bytes), left);
    }

    /// An answered `wasi:http` request.
    pub(crate) fn http(
        &mut self,
        method: &str,
        url: &str,
        res: &http::response::Parts,
        body: &[u8],
    ) {
        if !self.room(url.len() + body.len()) {
            return;
        }
        let headers = res
            .headers
            .iter()
            .filter(|(n, _)| *n != http::header::SET_COOKIE)
            .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = match std::str::from_utf8(body) {
            Ok(text) => text.to_string(),
            Err(_) => {
                self.once(format!(
                    "the answer of {method} {url} is not UTF-8: replayed empty"
                ));
                String::new()
            }
        };
        self.http.push(HttpExchange {
            method: method.to_string(),
            url: url.to_string(),
            status: res.status.as_u16(),
            headers,
            body,
        });
    }

    /// A `wasi:http` request that got no answer (refused, timed out, too large).
    pub(crate) fn http_failed(&mut self, method: &str, url: &str) {
        self.once(format!(
            "{method} {url} failed in the server: the replayed request fails too, perhaps otherwise"
        ));
    }

    /// A write of `key`: its earlier value does not matter to the plugin.
    pub(crate) fn kv_write(&mut self, ns: &str, key: &str) {
        self.touched.insert((ns.to_string(), key.to_string()));
    }

    /// Counts `n` more bytes; false (with a note) once the session's answers are full.
    fn room(&mut self, n: usize) -> bool {
        if self.bytes + n > MAX_ANSWER_BYTES {
            self.once(format!(
                "host answers past {MAX_ANSWER_BYTES} bytes are left out: the replay lacks them"
            ));
            return false;
        }
        self.bytes += n;
        true
    }

    fn once(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

#[cfg(test)]
mod tests;
