//! Hook-call costs with the fixture plugin (all five SMTP hooks answer `continue`):
//! - `warm_hook`: one `rcpt` hook on an instance that already exists (same transaction). The
//!   fixture is built with the SDK, so it gets facts on demand (`wit/context.wit`): the facts
//!   did not change, so nothing is copied into the guest, and its default action allocates
//!   nothing, as a plugin that reads nothing (when the fixture copied its action with
//!   `to_string()`, the call cost ~130 ns more);
//! - `warm_hook_new_recipient`: the same with another recipient each call (the SDK fetches
//!   the new recipient record);
//! - `instantiate_plus_hook`: a fresh instance and one hook (subtract `warm_hook` for the
//!   instantiation alone);
//! - `fresh_transaction_5_hooks`: connect, helo, mail, rcpt, data on a fresh instance.
//!
//! Time is the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! shared 2-core machine wall time mostly measures the other tenants. Everything but the
//! epoch ticker runs on this thread (current-thread runtime).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use corvid_types::{MessageView, Policy};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

fn hooks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let host = host();
    rt.block_on(host.reload(vec![behave("b", &[])]))
        .expect("loads");
    let conn = conn(1);
    let (env, rcpt) = (envelope(), rcpt());

    let mut session = host.session(&conn);
    rt.block_on(session.mail(&conn, &env));
    // `#[async_trait]` boxes this future at every call (tests/context.rs bounds it).
    let size = std::mem::size_of_val(&*session.rcpt(&conn, &env, &rcpt));
    eprintln!("warm_hook: the rcpt future is {size} bytes");
    c.bench_function("warm_hook", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = CpuClock::now();
                for _ in 0..iters {
                    black_box(session.rcpt(&conn, &env, &rcpt).await);
                }
                t.elapsed()
            })
        })
    });
    let others = [rcpt.clone(), {
        let mut r = rcpt.clone();
        r.address.local = "carol".into();
        r
    }];
    c.bench_function("warm_hook_new_recipient", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = CpuClock::now();
                for i in 0..iters {
                    let r = &others[(i & 1) as usize];
                    black_box(session.rcpt(&conn, &env, r).await);
                }
                t.elapsed()
            })
        })
    });
    c.bench_function("instantiate_plus_hook", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = CpuClock::now();
                for _ in 0..iters {
                    black_box(session.connect(&conn).await);
                    session.end_transaction();
                }
                t.elapsed()
            })
        })
    });
    c.bench_function("fresh_transaction_5_hooks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = CpuClock::now();
                for _ in 0..iters {
                    session.connect(&conn).await;
                    session.helo(&conn).await;
                    session.mail(&conn, &env).await;
                    session.rcpt(&conn, &env, &rcpt).await;
                    let m = MessageView { content: MESSAGE };
                    black_box(session.data(&conn, &env, m).await);
                    session.end_transaction();
                }
                t.elapsed()
            })
        })
    });
}

/// The calling thread's CPU clock.
struct CpuClock(Duration);

impl CpuClock {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; the clock id is a constant the kernel knows.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        CpuClock(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    fn elapsed(&self) -> Duration {
        CpuClock::now().0.saturating_sub(self.0)
    }
}

criterion_group!(benches, hooks);
criterion_main!(benches);
