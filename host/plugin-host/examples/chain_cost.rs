//! The plugin host's CPU per message with the bundled chain of `config/dev.toml` (what
//! `tests/bench/load.py --servers corvid+plugins` runs), without sockets, queue or delivery:
//! per message a new session with `connect`, `helo`, `mail`, `rcpt`, `data` and
//! `end_transaction`, then the `route` and `delivered` hooks, as the server calls them.
//!
//! ```text
//! cargo run --release -p corvid-plugin-host --example chain_cost [MESSAGES]
//! ```
//!
//! Prints the calling thread's CPU time per message (everything but the epoch ticker runs on
//! this thread). Deterministic enough for `valgrind --tool=callgrind` (set
//! `CORVID_TEST_MAX_INSTANCES=7`, the most it can reserve, and at most three plugins in
//! `CHAIN=a,b,c` so that their instances stay pooled: idle ones may use half the slots) and
//! for `perf record` with `CORVID_WASM_PERFMAP=1`. Build the plugins first (`make plugins`).
//! kv is in memory here: the server's kv store costs more.
//!
//! `COLD_KB=N` runs each hook cold, as the server does: between two calls the thread walks
//! N KiB of other memory (a write per cache line), standing in for the SMTP dialogue, the
//! Maildir write and the kernel that run there; the walks are timed on their own and
//! subtracted. On the project's machine (1 MiB of L2 per core): 29 µs hot, 44-52 µs with
//! 2048-4096, 59 µs with 8192. The server's `corvid_plugin_hook_duration_seconds` add up to
//! about 100 µs per message even with one client at a time: its hooks run colder still.

use corvid_plugin_host::{EngineOptions, Manifest, PluginEngine, PluginHost, Services};
use corvid_types::{Address, ConnectionInfo, DeliveryInfo, DeliveryPolicy, Envelope};
use corvid_types::{MessageView, Policy, Recipient, RouteRequest};
use std::path::Path;
use std::time::Duration;

/// About 1 KB, like smtp-source's message with `-l 1024`.
fn message() -> Vec<u8> {
    let mut m = b"Received: from client.bench.test (localhost [127.0.0.1])\r\n\
        \tby mx.corvid.test with ESMTP id 1; Mon, 7 Dec 2026 19:00:00 +0000\r\n\
        From: <sender@bench.test>\r\nTo: <alice@corvid.test>\r\n\
        Date: Mon, 7 Dec 2026 19:00:00 +0000\r\nMessage-Id: <1@client.bench.test>\r\n\
        Subject: bench\r\n\r\n"
        .to_vec();
    while m.len() < 1024 {
        m.extend_from_slice(b"La de da de da 1.\r\n");
    }
    m
}

/// The `[[plugin]]` tables of config/dev.toml, with absolute paths and the rate limits out of
/// reach (as load.py does); only those named in `CHAIN` (comma-separated) when it is set.
fn chain(repo: &Path) -> Vec<Manifest> {
    let only = std::env::var("CHAIN").ok();
    let keep = |name: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|n| n == name))
    };
    let text = std::fs::read_to_string(repo.join("config/dev.toml")).expect("config/dev.toml");
    let table: toml::Table = toml::from_str(&text).expect("dev.toml parses");
    let plugins = table.get("plugin").and_then(|p| p.as_array()).cloned();
    let mut out = Vec::new();
    for p in plugins.unwrap_or_default() {
        let mut m: Manifest = p.try_into().expect("a [[plugin]] table");
        if !keep(&m.name) {
            continue;
        }
        m.path = repo.join(&m.path);
        // PLUGIN_PROFILE=profiling: components built unstripped (guest function names in
        // perf) with `--config 'profile.profiling.inherits="release"' --config
        // 'profile.profiling.strip=false' --profile profiling`.
        if let Ok(profile) = std::env::var("PLUGIN_PROFILE") {
            let path = m
                .path
                .to_string_lossy()
                .replace("/release/", &format!("/{profile}/"));
            m.path = path.into();
        }
        for k in ["messages_per_window", "connections_per_window"] {
            if m.config.contains_key(k) {
                m.config.insert(k.into(), toml::Value::Integer(100_000_000));
            }
        }
        out.push(m);
    }
    out
}

/// This thread's user and system CPU time.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a pointer to the rusage we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::from_micros((t.tv_sec * 1_000_000 + t.tv_usec) as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn conn(session_id: u64) -> ConnectionInfo {
    ConnectionInfo {
        session_id,
        listener: "smtp".into(),
        local_addr: "127.0.0.1:25".parse().expect("addr"),
        peer_addr: "127.0.0.1:40000".parse().expect("addr"),
        peer_rdns: None,
        helo: None,
        esmtp: false,
        tls: None,
        auth_user: None,
    }
}

/// Other memory walked between two hook calls (`COLD_KB`), to run them with cold caches.
struct Thrash(Vec<u8>);

impl Thrash {
    fn from_env() -> Thrash {
        let kb: usize = std::env::var("COLD_KB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Thrash(vec![0; kb << 10])
    }

    /// A write to each cache line: evicts what the hooks left in L1 and L2.
    fn walk(&mut self) {
        for line in self.0.chunks_mut(64) {
            line[0] = line[0].wrapping_add(1);
        }
        std::hint::black_box(&self.0);
    }
}

/// The walks `one_message` makes, alone: subtracted from the cold runs.
fn walks_only(thrash: &mut Thrash) {
    for _ in 0..7 {
        thrash.walk();
    }
}

async fn one_message(host: &PluginHost, id: u64, content: &[u8], thrash: &mut Thrash) {
    let mut c = conn(id);
    let mut s = host.session(&c);
    s.connect(&c).await;
    thrash.walk();
    c.helo = Some("client.bench.test".into());
    c.esmtp = true;
    s.helo(&c).await;
    thrash.walk();
    let mut env = Envelope {
        sender: Some(Address::new("sender", "bench.test")),
        ..Envelope::default()
    };
    s.mail(&c, &env).await;
    thrash.walk();
    let rcpt = Recipient {
        address: Address::new("alice", "corvid.test"),
        params: Default::default(),
    };
    s.rcpt(&c, &env, &rcpt).await;
    thrash.walk();
    env.recipients.push(rcpt.clone());
    s.data(&c, &env, MessageView { content }).await;
    thrash.walk();
    s.end_transaction();
    drop(s);
    let queue_id = format!("Q{id}");
    let req = RouteRequest {
        queue_id: queue_id.clone(),
        sender: env.sender.clone(),
        recipient: rcpt.address.clone(),
    };
    host.route(&req).await;
    thrash.walk();
    let info = DeliveryInfo {
        queue_id,
        sender: env.sender.clone(),
        recipient: rcpt.address,
        attempt: 1,
        remote_host: None,
        reply: None,
        reason: "2.0.0 delivered".into(),
        quarantined: None,
    };
    if host.observes(corvid_types::Stage::Delivered) {
        host.delivered(&info).await;
    }
    thrash.walk();
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let max_instances = std::env::var("CORVID_TEST_MAX_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let engine = PluginEngine::new(EngineOptions {
        max_instances,
        ..EngineOptions::default()
    })
    .expect("engine");
    let cache = repo.join("target/tmp/chain-cost-cwasm");
    let host = PluginHost::new(&engine, Services::in_memory(), Some(cache));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(host.reload(chain(&repo)))
        .expect("the chain loads");
    let content = message();
    let mut thrash = Thrash::from_env();
    rt.block_on(async {
        // Warm: pools filled, code paged in.
        for id in 0..200 {
            one_message(&host, id, &content, &mut thrash).await;
        }
        let t = thread_cpu();
        for id in 0..n {
            one_message(&host, 1000 + id, &content, &mut thrash).await;
        }
        let mut per = t.elapsed_since();
        if !thrash.0.is_empty() {
            let t = thread_cpu();
            for _ in 0..n {
                walks_only(&mut thrash);
            }
            per = per.saturating_sub(t.elapsed_since());
        }
        println!(
            "{n} messages: {:.1} us of CPU per message{}",
            per.as_secs_f64() * 1e6 / n as f64,
            match thrash.0.len() >> 10 {
                0 => String::new(),
                kb => format!(" (cold: {kb} KiB walked between hooks, not counted)"),
            }
        );
    });
    for s in host.stats() {
        eprintln!("{s:?}");
    }
}

trait Since {
    fn elapsed_since(self) -> Duration;
}

impl Since for Duration {
    fn elapsed_since(self) -> Duration {
        thread_cpu().saturating_sub(self)
    }
}
