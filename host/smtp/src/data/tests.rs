use super::*;

const MAX: usize = 1 << 20;

/// What feeding a stream should give: the outcome (None = end not reached) and what stays in
/// the input.
struct Case {
    stream: Vec<u8>,
    outcome: Option<DataOutcome>,
    left: &'static [u8],
}

fn complete(content: &[u8]) -> Option<DataOutcome> {
    Some(DataOutcome::Complete(content.to_vec()))
}

const BARE: Option<DataOutcome> = Some(DataOutcome::BareLineEnding);

fn case(stream: &[u8], outcome: Option<DataOutcome>, left: &'static [u8]) -> Case {
    Case {
        stream: stream.to_vec(),
        outcome,
        left,
    }
}

fn cases() -> Vec<Case> {
    let long_line = [vec![b'x'; 5000], b"\r\n.\r\n".to_vec()].concat();
    let mut long_content = vec![b'x'; 5000];
    long_content.extend_from_slice(b"\r\n");
    vec![
        // The start of the content is the start of a line.
        case(b".\r\n", complete(b""), b""),
        case(b".\r\nQUIT\r\n", complete(b""), b"QUIT\r\n"),
        case(b"\r\n.\r\n", complete(b"\r\n"), b""),
        case(b"hello\r\n.\r\n", complete(b"hello\r\n"), b""),
        case(
            b"a\r\nb\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT",
            complete(b"a\r\nb\r\n"),
            b"MAIL FROM:<a@b>\r\nRCPT",
        ),
        // RFC 5321 4.5.2 dot-unstuffing: exactly the first dot of a line goes.
        case(b"..\r\n.\r\n", complete(b".\r\n"), b""),
        case(
            b"..foo\r\n.bar\r\n...\r\n.\r\n",
            complete(b".foo\r\nbar\r\n..\r\n"),
            b"",
        ),
        case(b"a.\r\n.a.\r\n.\r\n", complete(b"a.\r\na.\r\n"), b""),
        case(b". \r\n.\r\n", complete(b" \r\n"), b""),
        case(b"..\r\n..\r\n.\r\n", complete(b".\r\n.\r\n"), b""),
        // Content is kept as is: NUL, non-UTF-8, long lines.
        case(b"\0\xff\xfe\r\n.\r\n", complete(b"\0\xff\xfe\r\n"), b""),
        case(&long_line, complete(&long_content), b""),
        // Smuggling (CVE-2023-51764/5/6): none of these end the data; the content is refused.
        case(b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n", BARE, b""),
        case(b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n", BARE, b""),
        case(b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", BARE, b""),
        case(b"a\r.\rMAIL FROM:<x@y>\r\n.\r\n", BARE, b""),
        case(b"a\r\n.\r\r\nMAIL FROM:<x@y>\r\n.\r\n", BARE, b""),
        case(b"a\r\n.\rMAIL FROM:<x@y>\r\n.\r\n", BARE, b""),
        case(b"a\r.\r\nMAIL FROM:<x@y>\r\n.\r\n", BARE, b""),
        case(b"a\n.\r\n.\r\nQUIT\r\n", BARE, b"QUIT\r\n"),
        case(b"a\n\r\n.\r\n", BARE, b""),
        case(b"a\r\r\n.\r\n", BARE, b""),
        case(b"\n.\r\n", None, b""),
        case(b"\n.\n", None, b""),
        case(b"a\r\n.\n", None, b""),
        case(b"a\r.\r", None, b""),
        case(b"a\r\n.\r\r\n", None, b""),
        case(b"a\r\n.\r", None, b""),
        case(b"a\r\n. \r\n", None, b""),
        case(b"a\r\n..\r\n", None, b""),
        case(b"", None, b""),
    ]
}

/// Feeds `chunks` one by one, stopping at the end of data, then appends the rest to the input.
fn run(chunks: &[&[u8]], max: usize) -> (Option<DataOutcome>, Vec<u8>) {
    let mut input = Input::new();
    let mut reader = DataReader::new(max);
    let mut done = false;
    for chunk in chunks {
        input.extend(chunk);
        if !done {
            done = reader.consume(&mut input);
        }
    }
    let left = input.buffered().to_vec();
    (done.then(|| reader.finish()), left)
}

fn check(c: &Case, chunks: &[&[u8]], how: &str) {
    let (outcome, left) = run(chunks, MAX);
    let shown = String::from_utf8_lossy(&c.stream);
    assert_eq!(outcome, c.outcome, "{how}: {shown:?}");
    assert_eq!(left, c.left, "{how}: {shown:?}");
}

#[test]
fn whole() {
    for c in cases() {
        check(&c, &[&c.stream], "whole");
    }
}

#[test]
fn byte_by_byte() {
    for c in cases() {
        let chunks: Vec<&[u8]> = c.stream.chunks(1).collect();
        check(&c, &chunks, "byte by byte");
    }
}

#[test]
fn split_at_every_position() {
    for c in cases() {
        for at in 0..=c.stream.len() {
            let (a, b) = c.stream.split_at(at);
            check(&c, &[a, b], &format!("split at {at}"));
        }
    }
}

#[test]
fn size_limit() {
    let table: &[(&[u8], usize, Option<DataOutcome>)] = &[
        (b"abcd\r\n.\r\n", 6, complete(b"abcd\r\n")),
        (b"abcd\r\n.\r\n", 5, Some(DataOutcome::TooBig)),
        // Stuffing dots do not count: the limit is on the message as stored.
        (b"..\r\n.\r\n", 3, complete(b".\r\n")),
        (b".\r\n", 0, complete(b"")),
        // TooBig takes precedence over BareLineEnding.
        (b"a\nbcdef\r\n.\r\n", 4, Some(DataOutcome::TooBig)),
        (b"a\nb\r\n.\r\n", 40, BARE),
    ];
    for (stream, max, want) in table {
        let (got, left) = run(&[stream], *max);
        assert_eq!(&got, want, "{stream:?} max {max}");
        assert!(left.is_empty());
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            &run(&bytes, *max).0,
            want,
            "{stream:?} max {max} byte by byte"
        );
    }
}

#[test]
fn too_big_keeps_reading_to_the_end() {
    let mut input = Input::new();
    let mut reader = DataReader::new(1000);
    for _ in 0..1000 {
        input.extend(&[b'y'; 1000]);
        input.extend(b"\r\n");
        assert!(!reader.consume(&mut input));
        assert!(input.is_empty());
    }
    input.extend(b".\r\nQUIT\r\n");
    assert!(reader.consume(&mut input));
    assert_eq!(input.buffered(), b"QUIT\r\n");
    assert_eq!(reader.finish(), DataOutcome::TooBig);
}

#[test]
fn nothing_is_consumed_after_the_end() {
    let mut input = Input::new();
    let mut reader = DataReader::new(MAX);
    input.extend(b"x\r\n.\r\n");
    assert!(reader.consume(&mut input));
    input.extend(b".\r\nNOOP\r\n");
    assert!(reader.consume(&mut input));
    assert_eq!(input.buffered(), b".\r\nNOOP\r\n");
    assert!(reader.is_done());
    assert_eq!(Some(reader.finish()), complete(b"x\r\n"));
}
