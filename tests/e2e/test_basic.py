"""Accepting and delivering mail with Python's smtplib: byte-exact Maildir files, aliases,
address extensions, postmaster, refusals."""

import re

import pytest

from conftest import HOSTNAME, queue_id_of, split_delivered

SENDER = "sender@example.org"


def message(marker: str, extra_body: bytes = b"") -> bytes:
    return (
        b"From: Sender <sender@example.org>\r\n"
        b"To: Alice <alice@corvid.test>\r\n"
        b"Subject: byte-exact test " + marker.encode() + b"\r\n"
        b"Message-ID: <" + marker.encode() + b"@example.org>\r\n"
        b"X-Spaces:   kept   \t\r\n"
        b"\r\n"
        b"First line.\r\n"
        b".A line that starts with a dot (stuffed by the client, unstuffed by the server)\r\n"
        b"..Two dots\r\n"
        b".\r\n"
        b" .\r\n"
        b"Trailing spaces   \r\n"
        b"\tTabbed\r\n"
        b"\r\n"
        + extra_body
        + b"Last line.\r\n"
    )


def test_smtplib_delivery_is_byte_exact(server):
    content = message("exact-1")
    with server.smtp() as s:
        code, _ = s.ehlo()
        assert code == 250
        assert s.mail(SENDER) == (250, b"2.1.0 Sender <sender@example.org> OK")
        code, _ = s.rcpt("alice@corvid.test")
        assert code == 250
        code, msg = s.data(content)
        assert code == 250, msg
        qid = queue_id_of(msg.decode())
        assert msg.decode() == f"2.0.0 Ok: queued as {qid}"
    [path] = server.wait_mail("alice")
    d = split_delivered(path)
    assert d.return_path == b"Return-Path: <sender@example.org>\r\n"
    received = d.received.decode()
    assert received.startswith("Received: from client.test ")
    assert f"by {HOSTNAME}" in received
    assert re.search(rf"\bid {qid}\b", received), received
    assert d.content == content
    server.wait_queue_empty()
    assert server.mail_files("alice") == [path]
    assert server.mail_files("bob") == []


def test_a_large_message_is_delivered_byte_exact(server):
    # Over 64 KiB the delivery reads the queued content on a blocking thread (a large value
    # may be a file of its own in the queue); 1 MiB here, beyond sled's log segment too.
    body = b"".join(b"%07d " % i + b"y" * 62 + b"\r\n" for i in range(15000))
    content = message("large-1", extra_body=body)
    assert len(content) > 1 << 20
    with server.smtp() as s:
        s.ehlo()
        assert s.sendmail(SENDER, ["alice@corvid.test"], content) == {}
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == content
    server.wait_queue_empty()


def test_maildir_layout_and_modes(server):
    server.send(message("layout"))
    [path] = server.wait_mail("alice")
    md = server.maildir("alice")
    for sub in ("tmp", "new", "cur"):
        assert (md / sub).is_dir(), sub
    assert path.parent == md / "new"
    assert list((md / "tmp").iterdir()) == [], "tmp/ must be empty after delivery"
    assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
    # Dovecot reads the size from the name: ,S=<octets of the file>
    m = re.search(r",S=([0-9]+)", path.name)
    assert m and int(m.group(1)) == path.stat().st_size, path.name


def test_alias_delivers_one_copy_to_each_target(server):
    content = message("team-alias")
    server.send(content, rcpts=["team@corvid.test"])
    [a] = server.wait_mail("alice")
    [b] = server.wait_mail("bob")
    server.wait_queue_empty()
    assert len(server.mail_files("alice")) == 1
    assert len(server.mail_files("bob")) == 1
    assert split_delivered(a).content == content
    assert split_delivered(b).content == content


def test_alias_and_mailbox_together_still_one_copy(server):
    content = message("team-and-alice")
    server.send(content, rcpts=["team@corvid.test", "alice@corvid.test", "info@corvid.test"])
    server.wait_mail("alice")
    server.wait_mail("bob")
    server.wait_queue_empty()
    assert len(server.mail_files("alice")) == 1, "alice got more than one copy"
    assert len(server.mail_files("bob")) == 1


def test_recipient_delimiter(server):
    content = message("plus-tag")
    server.send(content, rcpts=["alice+tag@corvid.test"])
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == content
    assert not (server.mail_root / "corvid.test" / "alice+tag").exists()


@pytest.mark.parametrize("rcpt", ["<postmaster>", "<Postmaster>", "<POSTMASTER@corvid.test>"])
def test_postmaster_accepted(server, rcpt):
    with server.connect() as c:
        c.begin(rcpts=())
        r = c.expect(f"RCPT TO:{rcpt}", 250, "2.1.5")
        c.expect("DATA", 354)
        c.send(message("pm").replace(b"\r\n.", b"\r\n..") + b".\r\n")
        c.expect(None, 250, "2.0.0")
        c.expect("QUIT", 221)
    [path] = server.wait_mail("postmaster")
    assert split_delivered(path).content == message("pm")


def test_unknown_user_refused(server):
    with server.connect() as c:
        c.begin(rcpts=())
        r = c.expect("RCPT TO:<nobody@corvid.test>", 550, "5.1.1")
        # the transaction is still open: a valid recipient is accepted after the refusal
        c.expect("RCPT TO:<alice@corvid.test>", 250, "2.1.5")


def test_unknown_user_smtplib(server):
    with server.smtp() as s:
        s.ehlo()
        s.mail(SENDER)
        code, msg = s.rcpt("nobody@corvid.test")
        assert code == 550 and msg.startswith(b"5.1.1 "), (code, msg)


@pytest.mark.parametrize("rcpt", ["someone@example.com", "alice@corvid.test.evil.example", "alice@[127.0.0.1]"])
def test_relay_refused(server, rcpt):
    with server.connect() as c:
        c.begin(rcpts=())
        c.expect(f"RCPT TO:<{rcpt}>", 550, "5.7.1")
        c.expect("DATA", 503, "5.5.1")
    assert server.all_mail() == []


def test_null_sender(server):
    content = message("bounce")
    with server.smtp() as s:
        s.ehlo()
        assert s.mail("<>") == (250, b"2.1.0 Sender <> OK")
        assert s.rcpt("bob@corvid.test")[0] == 250
        code, msg = s.data(content)
        assert code == 250, msg
    [path] = server.wait_mail("bob")
    d = split_delivered(path)
    assert d.return_path == b"Return-Path: <>\r\n"
    assert d.content == content


def test_several_messages_in_one_session(server):
    with server.smtp() as s:
        s.ehlo()
        for i in range(3):
            s.mail(SENDER)
            s.rcpt("alice@corvid.test")
            code, msg = s.data(message(f"multi-{i}"))
            assert code == 250, msg
        assert s.rset()[0] == 250
    server.wait_mail("alice", 3)
    server.wait_queue_empty()
    contents = sorted(split_delivered(p).content for p in server.mail_files("alice"))
    assert contents == sorted(message(f"multi-{i}") for i in range(3))


def test_received_header_names_single_recipient(server):
    qid = server.send(message("rcvd"), rcpts=["alice@corvid.test"])
    [path] = server.wait_mail("alice")
    received = split_delivered(path).received.decode()
    assert "[127.0.0.1]" in received
    assert "for <alice@corvid.test>" in received
    assert f"id {qid}" in received
