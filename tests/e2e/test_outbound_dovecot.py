"""Dovecot on the Maildir Corvid writes: IMAP and POP3 read what Corvid delivered, and
Corvid delivers into Dovecot over LMTP (RFC 2033). Dovecot runs as a private instance with its
own config on loopback ports."""

import imaplib
import poplib

import pytest

from outbound_support import Dovecot, chown_tree, relay_overrides, shared_tmpdir, wait_files

PASSWORD = "s3cret-pass"


def message(marker: str, to: str) -> bytes:
    return (
        b"From: Sender <sender@example.org>\r\n"
        b"To: <" + to.encode() + b">\r\n"
        b"Subject: dovecot " + marker.encode() + b"\r\n"
        b"Message-ID: <" + marker.encode() + b"@example.org>\r\n"
        b"\r\n"
        b"Hello through Dovecot.\r\n"
        b".dot line\r\n"
        b"Bye.\r\n"
    )


@pytest.fixture
def mail_root():
    import shutil
    d = shared_tmpdir("corvid-mailroot-")
    yield d / "mail"
    shutil.rmtree(d, ignore_errors=True)


def imap_fetch(dovecot: Dovecot, user: str) -> list[bytes]:
    with imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10) as imap:
        imap.login(user, PASSWORD)
        typ, data = imap.select("INBOX")
        assert typ == "OK", data
        typ, ids = imap.search(None, "ALL")
        out = []
        for num in ids[0].split():
            typ, parts = imap.fetch(num, "(RFC822)")
            assert typ == "OK", parts
            out.append(parts[0][1])
        imap.logout()
        return out


def test_imap_and_pop3_read_what_corvid_delivered(make_server, mail_root):
    server = make_server({"local": {"maildir_root": str(mail_root)}})
    content = message("imap-pop3", "alice@corvid.test")
    server.send(content, rcpts=("alice@corvid.test",))
    wait_files(mail_root / "corvid.test" / "alice" / "Maildir" / "new")
    server.wait_queue_empty()
    # Dovecot refuses to work as root: the mail belongs to the (virtual) mail user.
    chown_tree(mail_root)
    dovecot = Dovecot(mail_root, {"alice@corvid.test": PASSWORD})
    try:
        [fetched] = imap_fetch(dovecot, "alice@corvid.test")
        assert fetched.endswith(content), fetched
        assert fetched.startswith(b"Return-Path: <sender@example.org>\r\n")

        pop = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=10)
        try:
            pop.user("alice@corvid.test")
            pop.pass_(PASSWORD)
            count, _ = pop.stat()
            assert count == 1
            _, lines, _ = pop.retr(1)
            assert b"\r\n".join(lines) + b"\r\n" == fetched
        finally:
            pop.quit()
    finally:
        print(f"--- dovecot log ---\n{dovecot.log()}")
        dovecot.stop()


def test_lmtp_delivery_into_dovecot(make_server, mail_root):
    mail_root.mkdir()
    chown_tree(mail_root)
    dovecot = Dovecot(mail_root, {"bob@far.test": PASSWORD})
    try:
        route = {"domain": "far.test", "to": f"lmtp://127.0.0.1:{dovecot.lmtp_port}"}
        server = make_server(relay_overrides(routes=[route]))
        content = message("lmtp", "bob@far.test")
        qid = server.send(content, sender="alice@corvid.test", rcpts=("bob@far.test", "nobody@far.test"))
        server.wait_queue_empty()
        [fetched] = imap_fetch(dovecot, "bob@far.test")
        assert fetched.endswith(content), fetched
        done = [e for e in server.events() if e.get("message") == "recipient done" and e.get("queue_id") == qid]
        assert [e.get("route") for e in done] == [route["to"]], done
        # The unknown LMTP recipient bounced (one DSN to the sender, a local mailbox here).
        [dsn] = server.wait_mail("alice")
        text = dsn.read_bytes().decode("utf-8", "replace")
        assert "Final-Recipient: rfc822; nobody@far.test\r\nAction: failed\r\nStatus: 5.1.1" in text, text
    finally:
        print(f"--- dovecot log ---\n{dovecot.log()}")
        dovecot.stop()
