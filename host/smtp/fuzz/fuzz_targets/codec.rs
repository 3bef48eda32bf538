//! Feeds arbitrary bytes to every entry point of the codec: the input buffer and its line limit,
//! the command parser, the DATA reader (checked against a slow reference model) and the BDAT
//! reader, then a small session loop that switches between them.

#![no_main]

use corvid_smtp::{parse_command, BdatReader, Command, DataOutcome, DataReader, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let max = usize::from(ctl);
    let step = usize::from(ctl % 7) + 1;
    let _ = parse_command(stream);
    lines(stream, max, step);
    data_reader(stream, max, step);
    bdat(stream, max, step);
    session(stream, step);
});

/// Command lines under a small limit; the buffer never holds much more than the limit.
fn lines(stream: &[u8], max: usize, step: usize) {
    let mut input = Input::new();
    for piece in stream.chunks(step) {
        input.extend(piece);
        while let Some(line) = input.next_line(max) {
            if let Ok(line) = line {
                assert!(line.len() + 2 <= max);
                let _ = parse_command(&line);
            }
        }
        assert!(input.len() <= max.max(1));
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

/// RFC 5321 4.1.1.4 / 4.5.2 the slow way: the end is the first CRLF "." CRLF counting the start
/// as after a CRLF; a "." right after CRLF is removed.
fn data_model(stream: &[u8], max: usize) -> Option<(DataOutcome, Vec<u8>)> {
    let s = [b"\r\n".as_slice(), stream].concat();
    let end = find(&s, b"\r\n.\r\n")?;
    let raw = &s[2..end + 2];
    let content: Vec<u8> = raw
        .iter()
        .enumerate()
        .filter(|&(i, &b)| !(b == b'.' && s[i] == b'\r' && s[i + 1] == b'\n'))
        .map(|(_, &b)| b)
        .collect();
    let outcome = if content.len() > max {
        DataOutcome::TooBig
    } else if has_bare_line_ending(raw) {
        DataOutcome::BareLineEnding
    } else {
        DataOutcome::Complete(content)
    };
    Some((outcome, s[end + 5..].to_vec()))
}

fn data_reader(stream: &[u8], max: usize, step: usize) {
    let mut input = Input::new();
    let mut reader = DataReader::new(max);
    let mut done = false;
    for piece in stream.chunks(step) {
        input.extend(piece);
        if !done {
            done = reader.consume(&mut input);
        }
    }
    let got = done.then(|| (reader.finish(), input.buffered().to_vec()));
    assert_eq!(got, data_model(stream, max));
}

/// Chunk sizes taken from the stream itself.
fn bdat(stream: &[u8], max: usize, step: usize) {
    let mut reader = BdatReader::new(max);
    let mut input = Input::new();
    input.extend(stream);
    let mut sizes = stream.iter().map(|&b| u64::from(b % 16) * step as u64);
    let mut total = 0u64;
    while !input.is_empty() {
        let size = sizes.next().unwrap_or(u64::MAX);
        reader.begin_chunk(size);
        let before = input.len() as u64;
        let complete = reader.consume(&mut input);
        total += before - input.len() as u64;
        assert_eq!(complete, before >= size);
    }
    assert_eq!(reader.received(), total);
    let _ = reader.finish();
}

/// A session-shaped loop: commands, DATA and BDAT sharing one input.
fn session(stream: &[u8], step: usize) {
    let mut input = Input::new();
    let mut data: Option<DataReader> = None;
    let mut chunking: Option<BdatReader> = None;
    for piece in stream.chunks(step) {
        input.extend(piece);
        loop {
            if let Some(reader) = data.as_mut() {
                if !reader.consume(&mut input) {
                    break;
                }
                data.take().map(DataReader::finish);
            }
            if let Some(reader) = chunking.as_mut() {
                if !reader.consume(&mut input) {
                    break;
                }
            }
            let Some(line) = input.next_line(512) else {
                break;
            };
            match line.map(|l| parse_command(&l)) {
                Ok(Ok(Command::Data)) => data = Some(DataReader::new(64)),
                Ok(Ok(Command::Bdat { size, .. })) => chunking
                    .get_or_insert_with(|| BdatReader::new(64))
                    .begin_chunk(size),
                Ok(Ok(Command::Rset)) => chunking = None,
                _ => {}
            }
        }
    }
}
