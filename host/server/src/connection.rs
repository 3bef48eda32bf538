//! One client connection: the byte stream, the input read from it but not yet used, and the
//! replies waiting to be written.
//!
//! The split follows mini-redis's `Connection`/`Handler`: the connection moves bytes, the
//! session (`crate::session`) is the SMTP state machine and decides what they mean. The stream
//! is one boxed async stream, so that STARTTLS upgrades it in place (as the delivery side's
//! client connection does) and the session goes on with the same state machine instead of
//! being rebuilt around a new stream type.

use corvid_smtp::Input;
use corvid_types::{Reply, TlsInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

/// Any stream a session can run over: TCP, TLS over TCP, or an in-memory pipe in tests.
pub(crate) trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// The most one read takes from the stream.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct Connection {
    stream: Box<dyn AsyncStream>,
    /// Bytes received and not yet consumed as commands or message content. One buffer for
    /// both, so that pipelined bytes (RFC 2920) are never lost when the session changes mode.
    pub(crate) input: Input,
    /// Replies not yet written; pipelined replies go out together (RFC 2920 3.2).
    out: Vec<u8>,
    rbuf: Box<[u8]>,
}

impl Connection {
    pub(crate) fn new(stream: impl AsyncStream + 'static) -> Self {
        Connection {
            stream: Box::new(stream),
            input: Input::new(),
            out: Vec::with_capacity(1024),
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// Queues a reply for the next flush.
    pub(crate) fn push(&mut self, reply: &Reply) {
        reply.write_to(&mut self.out);
    }

    /// Writes the queued replies. They stay queued if the write fails or is cancelled.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// Reads at most `max` octets (and at most [`READ_CHUNK`]) into the input; returns how
    /// many, 0 at end of stream. Cancel-safe: a read either completes and is buffered, or
    /// takes nothing.
    pub(crate) async fn read_more(&mut self, max: usize) -> std::io::Result<usize> {
        let max = max.clamp(1, self.rbuf.len());
        let n = self.stream.read(&mut self.rbuf[..max]).await?;
        self.input.extend(&self.rbuf[..n]);
        Ok(n)
    }

    /// Upgrades the stream to TLS in place: the server's side of STARTTLS (RFC 3207) or of
    /// an implicit-TLS listener (RFC 8314 3.3). The caller flushes its replies first.
    ///
    /// Whatever the client sent before the handshake and is still buffered is discarded, so
    /// that no plaintext command injected by a man in the middle runs inside the protected
    /// session (RFC 3207 4.2, CVE-2011-0411). On failure the stream is gone: the connection can
    /// only be closed.
    pub(crate) async fn upgrade(&mut self, acceptor: TlsAcceptor) -> std::io::Result<TlsInfo> {
        self.input.clear();
        self.out.clear();
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let tls = acceptor.accept(plain).await?;
        let info = crate::tls::tls_info(tls.get_ref().1);
        self.stream = Box::new(tls);
        Ok(info)
    }

    /// Closes the write side (a TLS close_notify first, when under TLS).
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
