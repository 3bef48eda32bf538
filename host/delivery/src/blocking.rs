//! Spool access, Maildir writes and the queue store block on disk: they run on tokio's
//! blocking threads, never on the runtime's.

/// Runs a blocking spool or file operation off the runtime's threads; `None` when the task
/// failed (it panicked), which is logged.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    // The blocking thread keeps the attempt's span, so its log lines carry the queue id.
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "blocking delivery task failed");
            None
        }
    }
}
