//! The DATA content reader (RFC 5321 4.1.1.4 and 4.5.2): streaming, strict about the end of
//! data, exact about dot-unstuffing.
//!
//! The end of data is only `CRLF "." CRLF`, where the start of the content counts as following
//! a CRLF (so `.` CRLF at once is an empty message). `LF "." LF`, `LF "." CRLF`, `CRLF "." LF`,
//! `CR "." CR` and the like are content; the bare CR or LF in them makes the outcome
//! [`DataOutcome::BareLineEnding`], so the session refuses the whole message once the real end
//! arrives, and nothing smuggled inside it is ever read as a command (CVE-2023-51764/5/6).
//!
//! Lines longer than 1000 octets (RFC 5321 4.5.3.1.6) are accepted as content: only `max_size`
//! bounds the message. NUL and non-UTF-8 octets are kept as they are.

use crate::content::{DataOutcome, Store};
use crate::input::Input;

/// Where the reader is relative to the line structure of the raw stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// After a CRLF, or at the start of the content.
    LineStart,
    /// `.` at the start of a line, not kept (it is either stuffing or the terminator).
    Dot,
    /// `.` CR at the start of a line: an LF now ends the data.
    DotCr,
    /// Inside a line; the last byte was not a CR.
    Mid,
    /// Inside a line; the last byte was a CR (already stored).
    Cr,
    /// The terminator was consumed.
    Done,
}

/// Reads DATA content out of an [`Input`] across as many calls as the bytes need.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    store: Store,
    bare: bool,
}

impl DataReader {
    /// A reader that keeps at most `max_size` octets of (unstuffed) content.
    /// Drops what was kept and keeps nothing more; the transfer is still read to its end so
    /// the session stays in step, and finishes as [`DataOutcome::TooBig`].
    pub fn abandon(&mut self) {
        self.store.abandon();
    }

    pub fn new(max_size: usize) -> Self {
        DataReader {
            state: State::LineStart,
            store: Store::new(max_size),
            bare: false,
        }
    }

    /// Consumes bytes from `input`; returns true once the end of data (CRLF "." CRLF) was
    /// consumed. Bytes after the terminator stay in `input` (pipelined commands, RFC 2920).
    /// Each byte is looked at once, whatever the number of calls. After the end, nothing more is
    /// consumed and the answer stays true.
    pub fn consume(&mut self, input: &mut Input) -> bool {
        let buf = input.buffered();
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Mid {
                // Fast path: copy the run up to the next CR or LF in one go.
                let run = buf[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(buf.len() - i);
                self.store.push(&buf[i..i + run]);
                i += run;
                if i == buf.len() {
                    break;
                }
            }
            self.step(buf[i]);
            i += 1;
        }
        input.advance(i);
        self.is_done()
    }

    /// True once the terminator was consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The outcome; meant to be called after [`consume`](Self::consume) returned true.
    pub fn finish(self) -> DataOutcome {
        self.store.finish(self.bare)
    }

    fn step(&mut self, b: u8) {
        match self.state {
            State::LineStart if b == b'.' => self.state = State::Dot,
            State::LineStart | State::Mid => self.in_line(b),
            State::Dot if b == b'\r' => self.state = State::DotCr,
            // RFC 5321 4.5.2: the first dot of a line that has more is removed.
            State::Dot => self.in_line(b),
            State::DotCr if b == b'\n' => self.state = State::Done,
            // `.` CR then something else: the dot was stuffing, the CR content (and bare).
            State::DotCr => {
                self.store.push(b"\r");
                self.state = State::Cr;
                self.after_cr(b);
            }
            State::Cr => self.after_cr(b),
            State::Done => {}
        }
    }

    /// A byte inside a line, the previous one not a CR.
    fn in_line(&mut self, b: u8) {
        self.store.push(&[b]);
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                self.bare = true;
                self.state = State::Mid;
            }
            _ => self.state = State::Mid,
        }
    }

    /// A byte after a CR: LF completes the line; anything else leaves that CR bare.
    fn after_cr(&mut self, b: u8) {
        self.store.push(&[b]);
        match b {
            b'\n' => self.state = State::LineStart,
            b'\r' => self.bare = true,
            _ => {
                self.bare = true;
                self.state = State::Mid;
            }
        }
    }
}

#[cfg(test)]
mod tests;
