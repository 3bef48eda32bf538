"""ESMTP extensions with real clients: swaks (Debian) for PIPELINING and 8-bit content,
smtplib for BODY=8BITMIME and SMTPUTF8 (swaks has no SMTPUTF8 option)."""

import re
import shutil
import subprocess

import pytest

from conftest import domain, queue_id_of, split_delivered

SWAKS = shutil.which("swaks") or "/usr/bin/swaks"

UTF8_CONFIG = {
    "local": {
        "domain": [
            domain("corvid.test", ["alice", "bob", "postmaster", "jörg"], {"team": ["alice", "bob"]}),
            domain("bücher.test", ["jörg"]),
        ]
    }
}


def swaks(server, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SWAKS, "--server", "127.0.0.1", "--port", str(server.port), "--helo", "client.test",
         "--timeout", "10", *args],
        capture_output=True, timeout=60,
    )


def out(p: subprocess.CompletedProcess) -> str:
    return p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")


def test_swaks_pipelining(server, tmp_path):
    body = b"Subject: pipelined with swaks\r\nMessage-ID: <swaks-pipe@example.org>\r\n\r\nHello over PIPELINING.\r\n.leading dot"
    f = tmp_path / "msg.eml"
    f.write_bytes(body)
    p = swaks(server, "--pipeline", "--from", "s@example.org", "--to", "alice@corvid.test,bob@corvid.test", "--data", f"@{f}")
    text = out(p)
    assert p.returncode == 0, text
    # swaks really pipelined: MAIL, both RCPTs and DATA went out before any reply to them.
    assert re.search(r"-> MAIL FROM:<s@example.org>\s*\n\s*-> RCPT TO:<alice@corvid.test>\s*\n\s*-> RCPT TO:<bob@corvid.test>\s*\n\s*-> DATA", text), text
    assert "250-PIPELINING" in text
    qid = queue_id_of(re.search(r"<-\s+250 2\.0\.0 (Ok: queued as \S+)", text).group(1))
    [a] = server.wait_mail("alice")
    [b] = server.wait_mail("bob")
    # swaks dot-stuffs, and ends the data with CRLF "." CRLF
    for path in (a, b):
        d = split_delivered(path)
        assert d.content == body + b"\r\n"
        assert f"id {qid}".encode() in d.received


def test_swaks_8bit_content(server, tmp_path):
    body = "Subject: 8-bit Grüße\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÄpfel, Birnen, 10 €\r\n\xa0 Latin-1 byte:".encode() + b"\xe9\xff\r\nend"
    f = tmp_path / "msg8.eml"
    f.write_bytes(body)
    p = swaks(server, "--from", "s@example.org", "--to", "alice@corvid.test", "--data", f"@{f}")
    assert p.returncode == 0, out(p)
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == body + b"\r\n"


def test_smtplib_body_8bitmime(server):
    content = "Subject: BODY=8BITMIME\r\n\r\nKäse und Brötchen\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    qid = server.send(content, mail_options=["BODY=8BITMIME"])
    [path] = server.wait_mail("alice")
    d = split_delivered(path)
    assert d.content == content
    assert f"id {qid}".encode() in d.received


def test_smtputf8_smtplib(make_server):
    server = make_server(UTF8_CONFIG)
    content = "From: André <andré@example.org>\r\nTo: Jörg <jörg@corvid.test>\r\nSubject: Grüße\r\n\r\nHallo Jörg!\r\n".encode()
    with server.smtp() as s:
        s.ehlo()
        assert s.has_extn("smtputf8")
        code, msg = s.mail("andré@example.org", ["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250, msg
        code, msg = s.rcpt("jörg@corvid.test")
        assert code == 250, msg
        code, msg = s.rcpt("jörg@bücher.test")
        assert code == 250, msg
        code, msg = s.data(content)
        assert code == 250, msg
        qid = queue_id_of(msg.decode())
    [p1] = server.wait_mail("jörg")
    [p2] = server.wait_mail("jörg", domain="bücher.test")
    for p in (p1, p2):
        d = split_delivered(p)
        assert d.return_path == "Return-Path: <andré@example.org>\r\n".encode()
        assert d.content == content
        assert f"id {qid}".encode() in d.received
        assert b"UTF8SMTP" in d.received, d.received


def test_smtputf8_raw(make_server):
    server = make_server(UTF8_CONFIG)
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<andré@example.org> SMTPUTF8", 250, "2.1.0")
        c.expect("RCPT TO:<JÖRG@corvid.test>", 250, "2.1.5")
        c.expect("DATA", 354)
        c.send("Subject: ü\r\n\r\nö\r\n.\r\n".encode())
        c.expect(None, 250, "2.0.0")
    [p] = server.wait_mail("jörg")
    assert split_delivered(p).content == "Subject: ü\r\n\r\nö\r\n".encode()


def test_non_ascii_address_without_smtputf8_swaks(make_server):
    server = make_server(UTF8_CONFIG)
    p = swaks(server, "--from", "s@example.org", "--to", "jörg@corvid.test")
    text = out(p)
    assert p.returncode != 0, text
    assert re.search(r"553 5\.6\.7", text), text
    assert server.all_mail() == []


@pytest.mark.parametrize("cmds", [
    ["MAIL FROM:<andré@example.org>"],
    ["MAIL FROM:<s@bücher.test>"],
    ["MAIL FROM:<s@example.org>", "RCPT TO:<jörg@corvid.test>"],
    ["MAIL FROM:<s@example.org>", "RCPT TO:<jörg@bücher.test>"],
    ["MAIL FROM:<s@example.org> BODY=8BITMIME", "RCPT TO:<alice@bücher.test>"],
])
def test_non_ascii_address_without_smtputf8_raw(make_server, cmds):
    server = make_server(UTF8_CONFIG)
    with server.connect() as c:
        c.greet()
        c.ehlo()
        for line in cmds[:-1]:
            c.expect(line, 250)
        c.expect(cmds[-1], 553, "5.6.7")
        c.expect("NOOP", 250)


def test_utf8_content_without_smtputf8_is_fine(server):
    """SMTPUTF8 is about addresses; 8-bit headers under 8BITMIME are delivered as sent."""
    content = "Subject: =?utf-8?q?x?= ü\r\n\r\nü\r\n".encode()
    server.send(content)
    [p] = server.wait_mail("alice")
    assert split_delivered(p).content == content
