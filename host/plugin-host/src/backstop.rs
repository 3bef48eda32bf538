//! The wall-time backstop of a call into a plugin, set up only when the call has to wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// Runs `fut` with a wall-time limit at `deadline`. Most hook calls finish in their first
/// poll (nothing to wait for), so the timer is only set up when the call has to wait: for a
/// host call such as DNS, or at an epoch yield of a long-running guest.
///
/// `fut` is pinned by the caller: moving a hook call's (large) future into this one would copy
/// it at every call. A hand-written future rather than an `async fn`: it holds three pointers
/// and the deadline, not a copy of the output, and the timer (tokio's `Sleep`, large) is
/// boxed on the cold path. `#[async_trait]` boxes each hook's whole future, and above the
/// allocator's small-size cache (glibc's tcache: 1032 bytes) that box costs about 300 more
/// instructions per call (`tests/context.rs` keeps the warm `rcpt` future under it).
///
/// Each time the call is pending, `waits` goes up by one: the epoch callback tells from it
/// that the call waited in an import since its last check (`state::new_store`).
pub(crate) fn backstop<'a, F: Future>(
    deadline: Instant,
    waits: &'a AtomicU32,
    fut: Pin<&'a mut F>,
) -> Backstop<'a, F> {
    Backstop {
        deadline,
        waits,
        state: Waiting::First(fut),
    }
}

/// The future of [`backstop`].
pub(crate) struct Backstop<'a, F: Future> {
    deadline: Instant,
    waits: &'a AtomicU32,
    state: Waiting<'a, F>,
}

enum Waiting<'a, F: Future> {
    /// Not polled yet, or finished in the first poll.
    First(Pin<&'a mut F>),
    /// Pending once: from now on under the timer.
    Timed(Pin<Box<tokio::time::Timeout<Pin<&'a mut F>>>>),
    /// Only inside the poll that switches to the timer; never seen by another poll.
    Switching,
}

impl<F: Future> Future for Backstop<'_, F> {
    type Output = Result<F::Output, tokio::time::error::Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (pointers and an instant), so `Backstop` is too.
        let this = self.get_mut();
        // A call that finishes in its first poll (most) returns from inside the match: the
        // count below is only for pending ones.
        let polled = match &mut this.state {
            Waiting::Timed(t) => t.as_mut().poll(cx),
            Waiting::First(fut) => {
                if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                    return Poll::Ready(Ok(v));
                }
                match std::mem::replace(&mut this.state, Waiting::Switching) {
                    Waiting::First(fut) => {
                        let deadline = this.deadline.into();
                        let mut timed = Box::pin(tokio::time::timeout_at(deadline, fut));
                        // Registers the timer with this task (and polls the call once more).
                        let polled = timed.as_mut().poll(cx);
                        this.state = Waiting::Timed(timed);
                        polled
                    }
                    _ => Poll::Pending,
                }
            }
            Waiting::Switching => Poll::Pending,
        };
        if polled.is_pending() {
            this.waits.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}
