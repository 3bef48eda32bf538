//! One connection to a next hop: a byte stream (TCP, Unix socket, or TLS over either) with
//! the reply reader and timed writes.

use super::ClientError;
use corvid_smtp::reply_parse::MAX_REPLY_LINE;
use corvid_smtp::{Input, LineError, Reply, ReplyBuilder};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Any stream the client can speak over.
pub(crate) trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Size of one read from the socket, and of one timed write of message content.
const CHUNK: usize = 64 * 1024;

pub(crate) struct Conn {
    pub(crate) stream: Box<dyn AsyncStream>,
    input: Input,
    /// For error texts: `host[ip]:port` or the socket path.
    pub(crate) peer: String,
}

impl Conn {
    pub(crate) fn new(stream: Box<dyn AsyncStream>, peer: String) -> Self {
        Conn {
            stream,
            input: Input::new(),
            peer,
        }
    }

    /// Swaps the stream (after a TLS handshake). Anything the server sent before the
    /// handshake is dropped (RFC 3207 4.2: no state from before TLS may be trusted).
    pub(crate) fn replace_stream(&mut self, stream: Box<dyn AsyncStream>) {
        self.stream = stream;
        self.input.clear();
    }

    /// Takes the stream out (for the TLS handshake), leaving an empty one behind.
    pub(crate) fn take_stream(&mut self) -> Box<dyn AsyncStream> {
        std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()))
    }

    /// True when bytes are buffered that no command asked for (checked before STARTTLS).
    pub(crate) fn has_unread(&self) -> bool {
        !self.input.is_empty()
    }

    /// Reads one complete reply, waiting at most `timeout` for all of it.
    pub(crate) async fn read_reply(
        &mut self,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<Reply, ClientError> {
        match tokio::time::timeout(timeout, self.read_reply_inner(stage)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { stage }),
        }
    }

    async fn read_reply_inner(&mut self, stage: &'static str) -> Result<Reply, ClientError> {
        let mut builder = ReplyBuilder::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            while let Some(line) = self.input.next_line(MAX_REPLY_LINE) {
                let line = line.map_err(|LineError::TooLong| ClientError::Protocol {
                    stage,
                    detail: "reply line too long".into(),
                })?;
                let done = builder.push(&line).map_err(|e| ClientError::Protocol {
                    stage,
                    detail: super::sanitize::peer_text(&e.to_string()),
                })?;
                if let Some(mut reply) = done {
                    // Peer text is made safe once, here, before any log, DSN or record.
                    for line in &mut reply.lines {
                        *line = super::sanitize::peer_text(line);
                    }
                    return Ok(reply);
                }
            }
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| ClientError::Io {
                    stage,
                    detail: e.to_string(),
                })?;
            if n == 0 {
                return Err(ClientError::Io {
                    stage,
                    detail: "connection closed by peer".into(),
                });
            }
            self.input.extend(&buf[..n]);
        }
    }

    /// Writes `bytes` in chunks, each within `timeout` (RFC 5321 4.5.3.2.5 times each data
    /// block, not the whole transfer), then flushes.
    pub(crate) async fn send(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
        stage: &'static str,
    ) -> Result<(), ClientError> {
        for chunk in bytes.chunks(CHUNK) {
            self.timed_write(chunk, timeout, stage).await?;
        }
        match tokio::time::timeout(timeout, self.stream.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Io {
                stage,
                detail: e.to_string(),
            }),
            Err(_) => Err(ClientError::Timeout { stage }),
        }
    }

    async fn timed_write(
        &mut self,
        chunk: &[u8],
        timeout: Duration,
        stage: &'static str,
    ) -> Result<(), ClientError> {
        match tokio::time::timeout(timeout, self.stream.write_all(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Io {
                stage,
                detail: e.to_string(),
            }),
            Err(_) => Err(ClientError::Timeout { stage }),
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub(crate) async fn command(
        &mut self,
        line: &str,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<Reply, ClientError> {
        self.send(format!("{line}\r\n").as_bytes(), timeout, stage)
            .await?;
        self.read_reply(timeout, stage).await
    }
}
