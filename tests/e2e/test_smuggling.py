"""SMTP smuggling (CVE-2023-51764/5/6): DATA ends only at CRLF "." CRLF. Corvid's documented
rule is to refuse a message with a bare CR or LF as a whole (554 5.5.2); nothing smuggled
inside it may ever be read as a command or delivered."""

import pytest

from conftest import split_delivered

VARIANTS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-crcrlf": b"\r\n.\r\r\n",
    # a few more of the family
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "lf-dot-cr": b"\n.\r",
    "crlf-dot-nul-crlf": b"\r\n.\x00\r\n\n",
}

SMUGGLED = (
    b"MAIL FROM:<evil@x>\r\n"
    b"RCPT TO:<bob@corvid.test>\r\n"
    b"DATA\r\n"
    b"From: evil@x\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
)


@pytest.mark.parametrize("pieces", ["whole", "bytewise"])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS.keys()))
def test_smuggling_variant_refused(server, variant, pieces):
    payload = (b"From: alice@corvid.test\r\nSubject: legit\r\n\r\nhello" + variant + SMUGGLED
               + b".\r\n" + b"NOOP\r\nQUIT\r\n")
    with server.connect() as c:
        c.begin(rcpts=["alice@corvid.test"])
        c.expect("DATA", 354)
        if pieces == "whole":
            c.send(payload)
        else:
            # the fake terminator arrives split over several reads
            for i in range(len(payload)):
                c.send(payload[i:i + 1])
        replies = c.replies_until_eof()
    got = [(r.code, r.enhanced) for r in replies]
    # ONE reply for the whole message, then the NOOP and the QUIT: the session is in step.
    assert got == [(554, "5.5.2"), (250, "2.0.0"), (221, "2.0.0")], [str(r) for r in replies]
    server.wait_queue_empty()
    assert server.mail_files("bob") == []
    assert server.mail_files("alice") == []
    assert server.all_mail() == []


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS.keys()))
def test_smuggling_variant_then_session_still_works(server, variant):
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        c.send(b"Subject: legit\r\n\r\nhello" + variant + SMUGGLED + b".\r\n")
        c.expect(None, 554, "5.5.2")
        # the transaction is over: RCPT needs a new MAIL
        c.expect("RCPT TO:<bob@corvid.test>", 503, "5.5.1")
        c.expect("MAIL FROM:<good@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: good\r\n\r\nfine\r\n.\r\n")
        c.expect(None, 250, "2.0.0")
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == b"Subject: good\r\n\r\nfine\r\n"
    server.wait_queue_empty()
    assert server.mail_files("bob") == []
    assert len(server.mail_files("alice")) == 1


@pytest.mark.parametrize("content", [
    b"Subject: x\r\n\r\nbare\nLF\r\n",
    b"Subject: x\r\n\r\nbare\rCR\r\n",
    b"Subject: x\nTo: y\r\n\r\nbody\r\n",
    b"Subject: x\r\n\r\nends in bare CR\r",
])
def test_bare_line_endings_in_data_refused(server, content):
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        c.send(content + b"\r\n.\r\n" if content.endswith(b"\r") else content + b".\r\n")
        c.expect(None, 554, "5.5.2")
        c.expect("NOOP", 250)
    server.wait_queue_empty()
    assert server.all_mail() == []


@pytest.mark.parametrize("chunks", [
    [b"Subject: x\r\n\r\nbare\nLF\r\n"],
    [b"Subject: x\r\n\r\nhi\r\n.\n", b"MAIL FROM:<evil@x>\r\n"],
    [b"Subject: x\r\n\r\nends with CR\r"],
    [b"Subject: x\r\n\r\nCR then chunk\r", b"X\r\n"],
])
def test_bare_line_endings_in_bdat_refused(server, chunks):
    with server.connect() as c:
        c.begin()
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            c.send(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
            if last:
                c.expect(None, 554, "5.5.2")
            else:
                c.expect(None, 250)
        c.expect("NOOP", 250)
    server.wait_queue_empty()
    assert server.all_mail() == []


def test_dot_stuffing_exact(server):
    """Transparency (RFC 5321 4.5.2): a leading dot is removed once, nothing else changes."""
    sent = (b"Subject: dots\r\n\r\n"
            b"..\r\n"          # -> "."
            b"...\r\n"         # -> ".."
            b"..x\r\n"         # -> ".x"
            b".y\r\n"          # -> "y" (an unstuffed dot line: the dot goes)
            b" .\r\n"          # unchanged
            b"a.\r\n"          # unchanged
            b".. \r\n"         # -> ". "
            )
    want = b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\ny\r\n .\r\na.\r\n. \r\n"
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        c.send(sent + b".\r\n")
        c.expect(None, 250, "2.0.0")
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == want


def test_empty_message_and_immediate_terminator(server):
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        c.send(b".\r\n")
        c.expect(None, 250, "2.0.0")
        c.expect("NOOP", 250)
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == b""
