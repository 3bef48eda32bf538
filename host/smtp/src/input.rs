//! The connection's input buffer: bytes read from the socket, consumed as command lines, DATA
//! content or BDAT chunk bytes.
//!
//! One buffer serves all three so that bytes pipelined after a command or after the end of data
//! (RFC 2920) are never lost or reordered when the session switches mode.

/// Compact the buffer once at least this many consumed bytes sit in front of the read offset.
const COMPACT_MIN: usize = 4096;

/// Why [`Input::next_line`] could not return a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line was longer than allowed (RFC 5321 4.5.3.1.4: 512 octets with CRLF); it has been
    /// discarded up to and including its CRLF. The server answers 500 5.5.6 (RFC 3463 3.6).
    #[error("line too long")]
    TooLong,
}

/// Buffered, not yet consumed input of one connection.
#[derive(Debug, Default)]
pub struct Input {
    buf: Vec<u8>,
    /// Read offset: `buf[pos..]` is unconsumed.
    pos: usize,
    /// How many unconsumed bytes were already searched for CRLF without finding one, so that a
    /// line arriving a byte at a time is scanned once, not once per byte.
    scanned: usize,
    /// Inside an over-long line: drop bytes until its CRLF.
    discarding: bool,
}

impl Input {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// True when no unconsumed bytes are buffered (the server flushes pipelined replies then,
    /// RFC 2920 3.2).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of unconsumed bytes.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drops everything buffered. After STARTTLS, bytes that arrived before the handshake must
    /// not be read as commands of the protected session (RFC 3207 4.2, CVE-2011-0411).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
        self.discarding = false;
    }

    /// The unconsumed bytes, without consuming them.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Consumes `n` bytes from the front (at most what is buffered).
    pub fn advance(&mut self, n: usize) {
        self.pos += n.min(self.len());
        self.scanned = 0;
    }

    /// Removes up to `n` bytes from the front and returns them (BDAT chunk bytes, RFC 3030).
    /// The slice borrows the buffer until the next call on `self`.
    pub fn take(&mut self, n: usize) -> &[u8] {
        let start = self.pos;
        let n = n.min(self.len());
        self.advance(n);
        &self.buf[start..start + n]
    }

    /// Next command line, without its CRLF. Only CRLF ends a line (RFC 5321 2.3.8); a bare CR
    /// or LF stays in the line, where the command parser refuses it.
    ///
    /// A line longer than `max` octets including its CRLF (RFC 5321 4.5.3.1.4: 512) yields
    /// `Some(Err(LineError::TooLong))` once its CRLF has arrived. The whole line is discarded
    /// as it arrives, so no more than about `max` bytes of it are ever buffered, and the next
    /// call starts at the following line: the session stays in step with the client.
    ///
    /// `None` means more input is needed.
    pub fn next_line(&mut self, max: usize) -> Option<Result<Vec<u8>, LineError>> {
        if self.discarding {
            return self.discard_line();
        }
        match find_crlf(&self.buf[self.pos..], self.scanned) {
            Some(i) => {
                let line_end = self.pos + i;
                self.scanned = 0;
                let result = if i + 2 > max {
                    Err(LineError::TooLong)
                } else {
                    Ok(self.buf[self.pos..line_end].to_vec())
                };
                self.pos = line_end + 2;
                Some(result)
            }
            None => self.wait_for_crlf(max),
        }
    }

    /// No CRLF yet: remember how far we looked, or start discarding once the partial line can
    /// no longer fit in `max` octets with its CRLF.
    fn wait_for_crlf(&mut self, max: usize) -> Option<Result<Vec<u8>, LineError>> {
        let pending = self.len();
        // A trailing CR may be the first half of the CRLF: search it again next time.
        self.scanned = pending.saturating_sub(1);
        if pending >= max {
            self.discarding = true;
            return self.discard_line();
        }
        None
    }

    /// Drops bytes of an over-long line until its CRLF. A trailing CR is kept, since the LF
    /// that completes it may come with the next read.
    fn discard_line(&mut self) -> Option<Result<Vec<u8>, LineError>> {
        let rest = &self.buf[self.pos..];
        match find_crlf(rest, 0) {
            Some(i) => {
                self.advance(i + 2);
                self.discarding = false;
                Some(Err(LineError::TooLong))
            }
            None => {
                let keep = usize::from(rest.last() == Some(&b'\r'));
                self.advance(rest.len() - keep);
                self.compact();
                None
            }
        }
    }

    /// Moves the unconsumed bytes to the front when enough consumed bytes sit before them;
    /// amortised O(1) per byte.
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= COMPACT_MIN && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// Index of the first CRLF in `bytes`, searching from `from`.
fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    let tail = bytes.get(from..)?;
    tail.windows(2).position(|w| w == b"\r\n").map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Vec<Result<Vec<u8>, LineError>>;

    /// Feeds `chunks` one `extend` at a time and collects every line result.
    fn lines(chunks: &[&[u8]], max: usize) -> Lines {
        let mut input = Input::new();
        let mut out = Vec::new();
        for chunk in chunks {
            input.extend(chunk);
            while let Some(r) = input.next_line(max) {
                out.push(r);
            }
        }
        out
    }

    fn ok(s: &str) -> Result<Vec<u8>, LineError> {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn line_table() {
        let too_long = Err(LineError::TooLong);
        let cases: Vec<(&[&[u8]], Lines)> = vec![
            (&[b"NOOP\r\n"], vec![ok("NOOP")]),
            (&[b"NO", b"OP\r", b"\n"], vec![ok("NOOP")]),
            (&[b"A\r\nB\r\n"], vec![ok("A"), ok("B")]),
            (&[b"\r\n"], vec![ok("")]),
            (&[b"A\nB\r\n"], vec![ok("A\nB")]),
            (&[b"A\rB\r\n"], vec![ok("A\rB")]),
            (&[b"A\r\r\n"], vec![ok("A\r")]),
            (&[b"NOOP"], vec![]),
            (&[b"\0\xff\r\n"], vec![Ok(vec![0, 0xff])]),
            // Exactly the limit (8 with CRLF) passes; one more octet does not.
            (&[b"123456\r\n"], vec![ok("123456")]),
            (&[b"1234567\r\nOK\r\n"], vec![too_long.clone(), ok("OK")]),
            (
                &[b"12345678", b"90\r\nOK\r\n"],
                vec![too_long.clone(), ok("OK")],
            ),
            (&[b"1234567\r"], vec![]),
        ];
        for (chunks, want) in cases {
            assert_eq!(lines(chunks, 8), want, "chunks {chunks:?}");
        }
    }

    #[test]
    fn byte_by_byte_matches_whole() {
        let stream = b"EHLO x\r\nMAIL FROM:<a@b>\r\n0123456789012345\r\nQUIT\r\n";
        let whole = lines(&[stream], 16);
        let split: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(lines(&split, 16), whole);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[2], Err(LineError::TooLong));
    }

    #[test]
    fn over_long_line_across_many_extends_is_bounded_and_discarded() {
        let mut input = Input::new();
        input.extend(b"NOOP\r\n");
        assert_eq!(input.next_line(512), Some(ok("NOOP")));
        for _ in 0..1000 {
            input.extend(&[b'x'; 100]);
            assert_eq!(input.next_line(512), None);
            assert!(input.len() <= 512, "buffered {}", input.len());
        }
        // The CR and the LF of the over-long line arrive in separate reads.
        input.extend(b"xx\r");
        assert_eq!(input.next_line(512), None);
        input.extend(b"\nQUIT\r\n");
        assert_eq!(input.next_line(512), Some(Err(LineError::TooLong)));
        assert_eq!(input.next_line(512), Some(ok("QUIT")));
        assert_eq!(input.next_line(512), None);
        assert!(input.is_empty());
    }

    #[test]
    fn clear_drops_buffer_and_discard_state() {
        let mut input = Input::new();
        input.extend(&[b'x'; 40]);
        assert_eq!(input.next_line(16), None);
        input.clear();
        assert!(input.is_empty());
        input.extend(b"EHLO a\r\n");
        assert_eq!(input.next_line(16), Some(ok("EHLO a")));
    }

    #[test]
    fn take_and_advance() {
        let mut input = Input::new();
        input.extend(b"hello world\r\nQUIT\r\n");
        assert_eq!(input.take(5), b"hello");
        assert_eq!(input.len(), 14);
        input.advance(1);
        assert_eq!(input.take(100), b"world\r\nQUIT\r\n");
        assert!(input.is_empty());
        assert_eq!(input.take(3), b"");
    }

    #[test]
    fn compaction_keeps_unconsumed_bytes() {
        let mut input = Input::new();
        let mut expected = 0u32;
        for i in 0..5000u32 {
            input.extend(format!("L{i}\r\n").as_bytes());
            if i % 3 == 0 {
                while let Some(line) = input.next_line(512) {
                    assert_eq!(line, ok(&format!("L{expected}")));
                    expected += 1;
                }
            }
        }
        while let Some(line) = input.next_line(512) {
            assert_eq!(line, ok(&format!("L{expected}")));
            expected += 1;
        }
        assert_eq!(expected, 5000);
        assert!(input.buf.len() < 3 * COMPACT_MIN);
    }
}
