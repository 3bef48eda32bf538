//! The BDAT chunk reader (RFC 3030 2): each chunk is exactly `size` octets, taken as they are,
//! with no dot-unstuffing and no terminator.
//!
//! The same bare CR / bare LF rule as for DATA applies to the whole message, across chunk
//! boundaries (a CR ending one chunk and an LF starting the next form a CRLF), so that BDAT is not
//! a way around the smuggling defence.

use crate::content::{DataOutcome, LineEndings, Store};
use crate::input::Input;

/// Reads the chunks of one message out of an [`Input`].
#[derive(Debug)]
pub struct BdatReader {
    store: Store,
    endings: LineEndings,
    /// Octets of the current chunk still to read.
    remaining: u64,
    /// Octets of all chunks read so far.
    received: u64,
}

impl BdatReader {
    /// A reader that keeps at most `max_size` octets of the message.
    /// Drops what was kept and keeps nothing more; the transfer is still read to its end so
    /// the session stays in step, and finishes as [`DataOutcome::TooBig`].
    pub fn abandon(&mut self) {
        self.store.abandon();
    }

    pub fn new(max_size: usize) -> Self {
        BdatReader {
            store: Store::new(max_size),
            endings: LineEndings::default(),
            remaining: 0,
            received: 0,
        }
    }

    /// Starts a chunk of `size` octets (`BDAT size [LAST]`). A chunk not yet complete is
    /// abandoned: the session only calls this after `consume` returned true.
    pub fn begin_chunk(&mut self, size: u64) {
        self.remaining = size;
    }

    /// Consumes up to the rest of the current chunk from `input`; true when the chunk is
    /// complete. Bytes after the chunk stay in `input` (the next command).
    pub fn consume(&mut self, input: &mut Input) -> bool {
        let n = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        let bytes = input.take(n);
        self.endings.feed(bytes);
        self.store.push(bytes);
        // n <= remaining, so neither operation wraps.
        self.remaining -= n as u64;
        self.received = self.received.saturating_add(n as u64);
        self.remaining == 0
    }

    /// Octets received so far, over all chunks.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Octets of the current chunk still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The outcome, after the LAST chunk. A CR at the very end of the message is bare.
    pub fn finish(self) -> DataOutcome {
        self.store.finish(self.endings.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends each chunk as `BDAT len` with its bytes delivered `step` octets per read.
    fn run(chunks: &[&[u8]], max: usize, step: usize) -> (DataOutcome, u64) {
        let mut reader = BdatReader::new(max);
        let mut input = Input::new();
        for chunk in chunks {
            reader.begin_chunk(chunk.len() as u64);
            let mut done = reader.consume(&mut input);
            for piece in chunk.chunks(step) {
                assert!(!done);
                input.extend(piece);
                done = reader.consume(&mut input);
            }
            assert!(done);
            assert!(input.is_empty());
        }
        let received = reader.received();
        (reader.finish(), received)
    }

    #[test]
    fn chunk_table() {
        let complete = |b: &[u8]| DataOutcome::Complete(b.to_vec());
        let cases: Vec<(Vec<&[u8]>, usize, DataOutcome)> = vec![
            (vec![b""], 10, complete(b"")),
            (vec![b"abc\r\n"], 10, complete(b"abc\r\n")),
            // No dot-unstuffing, no terminator handling: the bytes are the message.
            (vec![b"..\r\n.\r\n"], 10, complete(b"..\r\n.\r\n")),
            (vec![b"a\r", b"\nb\r\n"], 10, complete(b"a\r\nb\r\n")),
            (vec![b"a\r\n", b"", b"b\r\n"], 10, complete(b"a\r\nb\r\n")),
            (vec![b"\0\xff\r\n"], 10, complete(b"\0\xff\r\n")),
            (vec![b"a\nb"], 10, DataOutcome::BareLineEnding),
            (vec![b"a\r", b"b"], 10, DataOutcome::BareLineEnding),
            (vec![b"a\r"], 10, DataOutcome::BareLineEnding),
            (vec![b"a\r", b"\r\n"], 10, DataOutcome::BareLineEnding),
            (vec![b"a\r\n", b"\n"], 10, DataOutcome::BareLineEnding),
            (vec![b"0123456789"], 10, complete(b"0123456789")),
            (vec![b"01234", b"56789", b"x"], 10, DataOutcome::TooBig),
            (vec![b"01234\n", b"56789"], 10, DataOutcome::TooBig),
        ];
        for (chunks, max, want) in cases {
            let total: usize = chunks.iter().map(|c| c.len()).sum();
            for step in [1, 2, 3, 1000] {
                let (got, received) = run(&chunks, max, step);
                assert_eq!(got, want, "{chunks:?} step {step}");
                assert_eq!(received, total as u64);
            }
        }
    }

    #[test]
    fn pipelined_command_after_chunk_stays() {
        let mut reader = BdatReader::new(100);
        let mut input = Input::new();
        input.extend(b"hello\r\nBDAT 3 LAST\r\nabcQUIT\r\n");
        reader.begin_chunk(7);
        assert!(reader.consume(&mut input));
        assert_eq!(input.next_line(512), Some(Ok(b"BDAT 3 LAST".to_vec())));
        reader.begin_chunk(3);
        assert!(reader.consume(&mut input));
        assert_eq!(input.buffered(), b"QUIT\r\n");
        assert_eq!(reader.received(), 10);
        assert_eq!(
            reader.finish(),
            DataOutcome::Complete(b"hello\r\nabc".to_vec())
        );
    }

    #[test]
    fn huge_declared_chunk_is_only_counted() {
        let mut reader = BdatReader::new(10);
        let mut input = Input::new();
        reader.begin_chunk(u64::MAX);
        for _ in 0..100 {
            input.extend(&[b'z'; 1000]);
            assert!(!reader.consume(&mut input));
        }
        assert_eq!(reader.received(), 100_000);
        assert_eq!(reader.remaining(), u64::MAX - 100_000);
        assert_eq!(reader.finish(), DataOutcome::TooBig);
    }
}
