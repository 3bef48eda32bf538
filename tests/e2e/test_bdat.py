"""CHUNKING / BDAT (RFC 3030) over a raw socket."""

from conftest import split_delivered

CHUNK1 = b"Subject: chunked\r\nMessage-ID: <bdat@example.org>\r\n\r\n.no unstuffing in BDAT\r\n..two\r\n.\r\nsplit CRLF:\r"
CHUNK2 = b"\nsecond chunk \x00 NUL and \xff kept\r\n"


def bdat(n: int, last: bool = False) -> bytes:
    return f"BDAT {n}{' LAST' if last else ''}\r\n".encode()


def test_bdat_chunks_byte_exact(server):
    with server.connect() as c:
        c.begin()
        c.send(bdat(len(CHUNK1)) + CHUNK1)
        r = c.expect(None, 250, "2.0.0")
        assert r.lines == [f"2.0.0 {len(CHUNK1)} octets received"], r
        c.send(bdat(len(CHUNK2), last=True) + CHUNK2)
        r = c.expect(None, 250, "2.0.0")
        assert "queued as" in r.text
        c.expect("NOOP", 250)
        c.expect("QUIT", 221)
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == CHUNK1 + CHUNK2


def test_bdat_zero_last(server):
    with server.connect() as c:
        c.begin()
        c.send(bdat(len(CHUNK1)) + CHUNK1)
        c.expect(None, 250)
        c.send(bdat(len(CHUNK2)) + CHUNK2)
        c.expect(None, 250)
        r = c.expect("BDAT 0 LAST", 250, "2.0.0")
        assert "queued as" in r.text
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == CHUNK1 + CHUNK2


def test_bdat_pipelined_and_byte_by_byte(server):
    stream = (b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@corvid.test>\r\n"
              + bdat(len(CHUNK1)) + CHUNK1 + bdat(len(CHUNK2), True) + CHUNK2 + b"NOOP\r\n")
    with server.connect() as c:
        c.greet()
        for i in range(len(stream)):  # one byte per send: chunk bytes arrive in many reads
            c.send(stream[i:i + 1])
        codes = [c.reply().code for _ in range(6)]
        assert codes == [250, 250, 250, 250, 250, 250], codes
    [path] = server.wait_mail("bob")
    assert split_delivered(path).content == CHUNK1 + CHUNK2


def test_bdat_without_mail_is_refused_and_its_bytes_are_not_commands(server):
    chunk = b"MAIL FROM:<evil@x>\r\nRCPT TO:<bob@corvid.test>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n"
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.send(bdat(len(chunk), last=True) + chunk + b"NOOP\r\nQUIT\r\n")
        replies = c.replies_until_eof()
    assert [(r.code, r.enhanced) for r in replies] == [(503, "5.5.1"), (250, "2.0.0"), (221, "2.0.0")], [str(r) for r in replies]
    server.wait_queue_empty()
    assert server.all_mail() == []


def test_bdat_without_recipient_is_refused_and_its_bytes_are_not_commands(server):
    chunk = b"RCPT TO:<bob@corvid.test>\r\nDATA\r\n"
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<nobody@corvid.test>", 550)
        c.send(bdat(len(chunk)) + chunk + b"NOOP\r\n")
        c.expect(None, 503, "5.5.1")
        c.expect(None, 250, "2.0.0")
        c.expect("QUIT", 221)
    assert server.all_mail() == []


def test_data_after_bdat_is_refused(server):
    """After a BDAT chunk only BDAT, RSET or QUIT continue (RFC 3030 2): anything else is
    refused and ends the transaction, so a partial message cannot be parked in memory."""
    with server.connect() as c:
        c.begin()
        c.send(bdat(len(CHUNK1)) + CHUNK1)
        c.expect(None, 250)
        c.expect("DATA", 503, "5.5.1")
        # the refused DATA did not switch to content mode: this is still a command, refused
        # because the transaction is gone; its chunk is read and dropped
        c.send(bdat(len(CHUNK2), True) + CHUNK2)
        c.expect(None, 503, "5.5.1")
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        c.send(bdat(len(CHUNK1)) + CHUNK1)
        c.expect(None, 250)
        c.expect("NOOP", 503, "5.5.1")
        c.expect("QUIT", 221)
    server.wait_queue_empty()
    assert server.all_mail() == []


def test_bdat_after_rset_starts_over(server):
    fresh = b"\nSubject: after RSET\r\n\r\nok\r\n"
    with server.connect() as c:
        c.begin()
        # the first chunk ends in CR; after RSET nothing of it may be left over
        c.send(bdat(5) + b"junk\r")
        c.expect(None, 250)
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        # starts with LF: bare in a new message (it would only complete a CRLF of the old one)
        c.send(bdat(len(fresh), True) + fresh)
        c.expect(None, 554, "5.5.2")
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        c.send(bdat(len(fresh) - 1, True) + fresh[1:])
        c.expect(None, 250, "2.0.0")
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == fresh[1:]


def test_end_of_data_inside_bdat_is_just_content(server):
    """A `CRLF.CRLF` and commands inside a BDAT chunk are message content, nothing else."""
    chunk = b"Subject: inner\r\n\r\nhi\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<bob@corvid.test>\r\nDATA\r\n"
    with server.connect() as c:
        c.begin()
        c.send(bdat(len(chunk), True) + chunk + b"NOOP\r\n")
        c.expect(None, 250, "2.0.0")
        c.expect(None, 250, "2.0.0")
        c.expect("QUIT", 221)
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == chunk
    server.wait_queue_empty()
    assert server.mail_files("bob") == []
