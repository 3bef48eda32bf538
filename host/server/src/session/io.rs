//! Reading and writing with deadlines: the command timeout, the DATA deadline, the session
//! time limit, and shutdown. The bytes go through the session's `Connection`.

use super::{Closed, Session};
use crate::connection::READ_CHUNK;

impl Session {
    pub(super) async fn flush(&mut self) -> Result<(), Closed> {
        let timeout = self.shared.limits.command_timeout;
        match tokio::time::timeout(timeout, self.io.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Closed::Io(e)),
            Err(_) => Err(Closed::Timeout),
        }
    }

    /// Reads more input while waiting for a command: bounded by the per-command deadline and
    /// interrupted by shutdown.
    pub(super) async fn fill_command(&mut self) -> Result<(), Closed> {
        let deadline = *self.command_deadline.get_or_insert_with(|| {
            tokio::time::Instant::now() + self.shared.limits.command_timeout
        });
        let shutdown = self.shared.shutdown.clone();
        let deadline = deadline.min(self.session_deadline);
        tokio::select! {
            _ = shutdown.cancelled() => Err(Closed::Shutdown),
            r = tokio::time::timeout_at(deadline, self.io.read_more(READ_CHUNK)) => self.take_read(r),
        }
        .map(|_| ())
    }

    /// Reads at most `max` octets of message content: bounded by `deadline` and only by a hard
    /// abort, so a message being sent when shutdown starts may still finish within the grace
    /// period. Returns how many octets arrived.
    pub(super) async fn fill_data(
        &mut self,
        deadline: tokio::time::Instant,
        max: usize,
    ) -> Result<usize, Closed> {
        let abort = self.shared.abort.clone();
        let deadline = deadline.min(self.session_deadline);
        tokio::select! {
            _ = abort.cancelled() => Err(Closed::Shutdown),
            r = tokio::time::timeout_at(deadline, self.io.read_more(max)) => self.take_read(r),
        }
    }

    fn take_read(
        &mut self,
        r: Result<std::io::Result<usize>, tokio::time::error::Elapsed>,
    ) -> Result<usize, Closed> {
        match r {
            Err(_) if tokio::time::Instant::now() >= self.session_deadline => {
                Err(Closed::SessionTime)
            }
            Err(_) => Err(Closed::Timeout),
            Ok(Err(e)) => Err(Closed::Io(e)),
            Ok(Ok(0)) => Err(Closed::Eof),
            Ok(Ok(n)) => Ok(n),
        }
    }
}
