//! Reading and writing with deadlines: the command timeout, the DATA deadline, the session
//! time limit, and shutdown.

use super::{Closed, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn flush(&mut self) -> Result<(), Closed> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.limits.command_timeout;
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
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
            r = tokio::time::timeout_at(deadline, self.io.read(&mut self.rbuf)) => self.take_read(r),
        }
    }

    /// Reads more message content: bounded by `deadline` and only by a hard abort, so a message
    /// being sent when shutdown starts may still finish within the grace period.
    pub(super) async fn fill_data(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<usize, Closed> {
        let abort = self.shared.abort.clone();
        let before = self.input.len();
        let deadline = deadline.min(self.session_deadline);
        tokio::select! {
            _ = abort.cancelled() => Err(Closed::Shutdown),
            r = tokio::time::timeout_at(deadline, self.io.read(&mut self.rbuf)) => self.take_read(r),
        }?;
        Ok(self.input.len().saturating_sub(before))
    }

    pub(super) fn take_read(
        &mut self,
        r: Result<std::io::Result<usize>, tokio::time::error::Elapsed>,
    ) -> Result<(), Closed> {
        match r {
            Err(_) if tokio::time::Instant::now() >= self.session_deadline => {
                Err(Closed::SessionTime)
            }
            Err(_) => Err(Closed::Timeout),
            Ok(Err(e)) => Err(Closed::Io(e)),
            Ok(Ok(0)) => Err(Closed::Eof),
            Ok(Ok(n)) => {
                self.input.extend(&self.rbuf[..n]);
                Ok(())
            }
        }
    }
}
