//! Property-style tests: pseudo-random and garbage input through every entry point, checked
//! against small reference models. No panics, and the streaming readers agree with the models
//! whatever the read boundaries.

use corvid_smtp::{parse_command, BdatReader, Command, DataOutcome, DataReader, Input, LineError};

/// xorshift64*: tiny, deterministic, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Bytes biased towards what matters to SMTP framing and syntax.
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"\r",
            b"\n",
            b"\r\n",
            b".",
            b"\r\n.\r\n",
            b"\r\n.",
            b" ",
            b"<",
            b">",
            b"@",
            b":",
            b"\"",
            b"\\",
            b"=",
            b",",
            b";",
            b"+",
            b"[",
            b"]",
            b"\0",
            b"\xff",
            b"\xc3\xa9",
            b"a",
            b"MAIL FROM:",
            b"RCPT TO:",
            b"<a@b.c>",
            b"SIZE=",
            b"BODY=8BITMIME",
            b"SMTPUTF8",
            b"NOTIFY=",
            b"ORCPT=rfc822;",
            b"BDAT ",
            b"LAST",
            b"EHLO ",
            b"AUTH PLAIN ",
            b"1",
            b"postmaster",
            b"IPv6:",
            b"1.2.3.4",
        ];
        let len = self.below(max_len + 1);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            if self.below(4) == 0 {
                out.push(self.next() as u8);
            } else {
                out.extend_from_slice(PIECES[self.below(PIECES.len())]);
            }
        }
        out
    }

    /// Splits `data` into random-sized reads.
    fn split<'a>(&mut self, data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = 1 + self.below(rest.len().min(64));
            let (a, b) = rest.split_at(n);
            out.push(a);
            rest = b;
        }
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn has_bare_line_ending(b: &[u8]) -> bool {
    (0..b.len()).any(|i| {
        (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n'))
            || (b[i] == b'\n' && (i == 0 || b[i - 1] != b'\r'))
    })
}

/// The DATA rules, written the slow and obvious way: the end is the first CRLF "." CRLF when the
/// stream is preceded by CRLF; a "." right after CRLF is removed.
fn data_model(stream: &[u8], max: usize) -> Option<(DataOutcome, Vec<u8>)> {
    let s = [b"\r\n".as_slice(), stream].concat();
    let end = find(&s, b"\r\n.\r\n")?;
    let raw = &s[2..end + 2];
    let mut content = Vec::new();
    for (i, &b) in raw.iter().enumerate() {
        let at_line_start = s[i] == b'\r' && s[i + 1] == b'\n';
        if !(b == b'.' && at_line_start) {
            content.push(b);
        }
    }
    let outcome = if content.len() > max {
        DataOutcome::TooBig
    } else if has_bare_line_ending(raw) {
        DataOutcome::BareLineEnding
    } else {
        DataOutcome::Complete(content)
    };
    Some((outcome, s[end + 5..].to_vec()))
}

#[test]
fn data_reader_matches_model() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let stream = rng.bytes(80);
        let max = rng.below(60);
        let mut input = Input::new();
        let mut reader = DataReader::new(max);
        let mut done = false;
        for piece in rng.split(&stream) {
            input.extend(piece);
            if !done {
                done = reader.consume(&mut input);
            }
        }
        let got = done.then(|| (reader.finish(), input.buffered().to_vec()));
        assert_eq!(got, data_model(&stream, max), "stream {stream:?} max {max}");
        if !done {
            assert!(input.is_empty());
        }
    }
}

/// Lines as `next_line` must return them: split on CRLF, too long past `max` with the CRLF.
fn lines_model(stream: &[u8], max: usize) -> Vec<Result<Vec<u8>, LineError>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some(i) = find(rest, b"\r\n") {
        out.push(if i + 2 > max {
            Err(LineError::TooLong)
        } else {
            Ok(rest[..i].to_vec())
        });
        rest = &rest[i + 2..];
    }
    out
}

#[test]
fn input_lines_match_model_and_stay_bounded() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let stream = rng.bytes(120);
        let max = rng.below(40);
        let mut input = Input::new();
        let mut got = Vec::new();
        for piece in rng.split(&stream) {
            input.extend(piece);
            while let Some(line) = input.next_line(max) {
                got.push(line);
            }
            assert!(
                input.len() <= max.max(1),
                "buffered {} max {max}",
                input.len()
            );
        }
        assert_eq!(
            got,
            lines_model(&stream, max),
            "stream {stream:?} max {max}"
        );
    }
}

#[test]
fn bdat_matches_model() {
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let message = rng.bytes(100);
        let max = rng.below(120);
        let chunks = rng.split(&message);
        let mut reader = BdatReader::new(max);
        let mut input = Input::new();
        for chunk in &chunks {
            reader.begin_chunk(chunk.len() as u64);
            for piece in rng.split(chunk) {
                assert!(!reader.consume(&mut input));
                input.extend(piece);
            }
            assert!(reader.consume(&mut input));
        }
        assert_eq!(reader.received(), message.len() as u64);
        let want = if message.len() > max {
            DataOutcome::TooBig
        } else if has_bare_line_ending(&message) {
            DataOutcome::BareLineEnding
        } else {
            DataOutcome::Complete(message.clone())
        };
        assert_eq!(reader.finish(), want, "message {message:?} max {max}");
    }
}

#[test]
fn parse_command_never_panics_and_replies_are_well_formed() {
    let mut rng = Rng(0xDEAD_BEEF);
    for _ in 0..100_000 {
        let line = rng.bytes(100);
        match parse_command(&line) {
            Ok(Command::Mail {
                sender: Some(a),
                params,
            }) => assert!(!a.is_utf8() || params.smtputf8),
            Ok(_) => {}
            Err(e) => {
                assert!(
                    matches!(e.reply.code, 500 | 501 | 553 | 555),
                    "{line:?}: {}",
                    e.reply
                );
                assert!(e.reply.enhanced.is_some(), "{line:?}");
                let wire = e.reply.to_wire();
                assert!(wire.len() <= 512 && wire.ends_with(b"\r\n"));
                assert!(!wire[..wire.len() - 2].contains(&b'\r'));
                assert!(!wire[..wire.len() - 2].contains(&b'\n'));
            }
        }
    }
}

#[test]
fn a_whole_session_of_garbage_does_not_panic() {
    let mut rng = Rng(1);
    for _ in 0..2_000 {
        let stream = rng.bytes(400);
        let mut input = Input::new();
        input.extend(&stream);
        let mut data: Option<DataReader> = None;
        let mut bdat: Option<(BdatReader, bool)> = None;
        for _ in 0..1000 {
            if let Some(reader) = data.as_mut() {
                if !reader.consume(&mut input) {
                    break;
                }
                data = None;
            } else if let Some((reader, last)) = bdat.as_mut() {
                if !reader.consume(&mut input) {
                    break;
                }
                if *last {
                    bdat = None;
                }
            }
            match input.next_line(512) {
                None => break,
                Some(Ok(line)) => match parse_command(&line) {
                    Ok(Command::Data) => data = Some(DataReader::new(100)),
                    Ok(Command::Bdat { size, last }) => {
                        let (reader, is_last) =
                            bdat.get_or_insert_with(|| (BdatReader::new(100), last));
                        reader.begin_chunk(size);
                        *is_last = last;
                    }
                    _ => {}
                },
                Some(Err(LineError::TooLong)) => {}
            }
        }
    }
}
