//! Runs the async Redis client for the synchronous [`KvStore`](corvid_types::KvStore) calls.
//!
//! The plugin host calls kv from inside a hook, on one of the server's runtime threads, and
//! the trait is synchronous. Blocking on the server's own runtime could starve it (the future
//! would need the very threads that wait), so the client lives on a small runtime of its own,
//! on one thread; a call hands it the request and waits for the answer, at most `timeout`.
//!
//! After a failure, calls fail at once for `retry_after` (a simple breaker): a dead or
//! unreachable server then costs each hook nothing, not a timeout per call.

use corvid_types::kv::KvError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

pub(crate) struct Bridge {
    handle: Handle,
    timeout: Duration,
    retry_after: Duration,
    /// When set: ms since `epoch` until which calls fail fast (0: not failing).
    down_until: Arc<AtomicU64>,
    epoch: Instant,
    /// Dropped with the store: the runtime's thread then ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Bridge {
    pub(crate) fn start(timeout: Duration, retry_after: Duration) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("corvid-kv-redis".into())
            .spawn(move || {
                // Drives the client's tasks until the store is dropped.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Bridge {
            handle,
            timeout,
            retry_after,
            down_until: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            _stop: stop,
        })
    }

    /// Runs `f` inside the runtime's context (the connection manager spawns its tasks there).
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.handle.enter();
        f()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `request` on the client's runtime and waits for it, at most `timeout`.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        request: impl Future<Output = redis::RedisResult<T>> + Send + 'static,
    ) -> Result<T, KvError> {
        let until = self.down_until.load(Ordering::Relaxed);
        if until != 0 && self.now_ms() < until {
            return Err(KvError::Storage(format!(
                "{op}: Redis unavailable (failed within the last {:?})",
                self.retry_after
            )));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let timeout = self.timeout;
        self.handle.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, request).await);
        });
        // A little slack over the task's own deadline, so that its answer wins a close race.
        let result = match rx.recv_timeout(timeout + Duration::from_millis(20)) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) if !is_unavailable(&e) => {
                // The server answered with an error (a script error, a wrong type): Redis
                // is up; do not trip the breaker.
                return Err(KvError::Storage(format!("{op}: Redis: {e}")));
            }
            Ok(Ok(Err(e))) => Err(format!("{op}: Redis: {e}")),
            Ok(Err(_)) | Err(_) => Err(format!("{op}: Redis did not answer within {timeout:?}")),
        };
        match result {
            Ok(v) => {
                if until != 0 {
                    self.down_until.store(0, Ordering::Relaxed);
                    tracing::info!("kv: Redis answers again");
                }
                Ok(v)
            }
            Err(text) => {
                let next = self
                    .now_ms()
                    .saturating_add(self.retry_after.as_millis() as u64);
                if self.down_until.swap(next.max(1), Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %text, retry_after = ?self.retry_after, "kv: Redis unavailable; kv calls fail until it answers");
                }
                Err(KvError::Storage(text))
            }
        }
    }
}

/// Whether the error means the server could not be reached or did not answer (as opposed to
/// an answer that is an error).
fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}
