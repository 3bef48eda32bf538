//! What DATA and BDAT share: the outcome, a size-bounded store, and the bare CR / bare LF check.

/// What a DATA or BDAT transfer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// The message exactly as sent (after dot-unstuffing for DATA). For DATA it ends with the
    /// CRLF that preceded the terminating `.` (empty when the client sent `.` right away).
    Complete(Vec<u8>),
    /// More than `max_size` octets: storing stopped but the transfer was read to its end, so
    /// the session stays in step. The server answers 552 5.3.4 (RFC 5321 4.5.3.1.10,
    /// RFC 3463 3.4).
    TooBig,
    /// A CR not followed by LF, or an LF not preceded by CR, somewhere in the content
    /// (RFC 5321 2.3.8 and 4.1.1.4). Refusing such a message whole is the defence against SMTP
    /// smuggling (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766).
    BareLineEnding,
}

/// Message bytes kept up to a limit; past it, only counted.
#[derive(Debug)]
pub(crate) struct Store {
    bytes: Vec<u8>,
    max: usize,
    too_big: bool,
}

impl Store {
    pub(crate) fn new(max: usize) -> Self {
        Store {
            bytes: Vec::new(),
            max,
            too_big: false,
        }
    }

    /// Appends `data`, or drops everything once the total passes `max`.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.too_big {
            return;
        }
        if data.len() > self.max - self.bytes.len() {
            self.too_big = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Stops keeping bytes, as if the limit had been passed (the server is out of memory for
    /// messages): the transfer is still read to its end and ends as `TooBig`.
    pub(crate) fn abandon(&mut self) {
        self.too_big = true;
        self.bytes = Vec::new();
    }

    /// TooBig wins over BareLineEnding: the size is the first thing a client can act on.
    pub(crate) fn finish(self, bare: bool) -> DataOutcome {
        match (self.too_big, bare) {
            (true, _) => DataOutcome::TooBig,
            (false, true) => DataOutcome::BareLineEnding,
            (false, false) => DataOutcome::Complete(self.bytes),
        }
    }
}

/// Finds bare CRs and bare LFs in a stream fed in pieces; a CRLF split between two pieces is
/// fine.
#[derive(Debug, Default)]
pub(crate) struct LineEndings {
    /// The last byte seen was a CR.
    pending_cr: bool,
    pub(crate) bare: bool,
}

impl LineEndings {
    pub(crate) fn feed(&mut self, data: &[u8]) {
        for &b in data {
            match (self.pending_cr, b) {
                (true, b'\n') => self.pending_cr = false,
                (true, b'\r') => self.bare = true,
                (true, _) => {
                    self.bare = true;
                    self.pending_cr = false;
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => self.bare = true,
                (false, _) => {}
            }
        }
    }

    /// True when a bare line ending was seen, counting a CR left at the very end.
    pub(crate) fn finish(&self) -> bool {
        self.bare || self.pending_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ending_table() {
        let cases: &[(&[&[u8]], bool)] = &[
            (&[b""], false),
            (&[b"a\r\nb\r\n"], false),
            (&[b"a\r", b"\nb"], false),
            (&[b"a\r", b"", b"\n"], false),
            (&[b"a\nb"], true),
            (&[b"a\rb"], true),
            (&[b"a\r\r\n"], true),
            (&[b"a\r"], true),
            (&[b"a\r", b"b"], true),
            (&[b"\n"], true),
            (&[b"a\r\n\n"], true),
        ];
        for (pieces, want) in cases {
            let mut check = LineEndings::default();
            pieces.iter().for_each(|p| check.feed(p));
            assert_eq!(check.finish(), *want, "{pieces:?}");
        }
    }

    #[test]
    fn store_limit_is_inclusive() {
        let mut store = Store::new(4);
        store.push(b"ab");
        store.push(b"cd");
        assert_eq!(store.finish(false), DataOutcome::Complete(b"abcd".to_vec()));
        let mut store = Store::new(4);
        store.push(b"abc");
        store.push(b"de");
        store.push(b"f");
        assert_eq!(store.finish(true), DataOutcome::TooBig);
        assert_eq!(Store::new(0).finish(true), DataOutcome::BareLineEnding);
    }
}
