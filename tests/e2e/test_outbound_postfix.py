"""Real Postfix as the receiving MX: a private instance on a loopback port with its own
config and queue directories, found through an MX record on a loopback DNS server. Corvid
delivers, Postfix stores."""

import pytest

from outbound_support import DnsServer, Postfix, body_of, relay_overrides

BODY = (
    b"Dear Postfix,\r\n"
    b".a line with a leading dot\r\n"
    b"\r\n"
    b"8-bit: gr\xc3\xbc\xc3\x9fe\r\n"
    b"end.\r\n"
)


def message(marker: str) -> bytes:
    return (
        b"From: alice@corvid.test\r\n"
        b"To: someone@far.test\r\n"
        b"Subject: to postfix " + marker.encode() + b"\r\n"
        b"Message-ID: <" + marker.encode() + b"@corvid.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + BODY
    )


@pytest.fixture
def postfix():
    p = Postfix("far.test")
    yield p
    print(f"--- postfix log ---\n{p.log()}")
    p.stop()


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.stop()


def test_corvid_delivers_to_postfix_over_mx(make_server, postfix, dns):
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    sender = make_server(relay_overrides(dns, postfix.port), name="snd")
    sender.send(message("pf-1"), sender="alice@corvid.test", rcpts=("someone@far.test", "other@far.test"),
                mail_options=("BODY=8BITMIME",))
    sender.send(message("pf-2"), sender="alice@corvid.test", rcpts=("someone@far.test",))
    sender.wait_queue_empty(timeout=30)
    stored = postfix.wait_messages(3)
    for m in stored:
        # Postfix writes Maildir files with Unix (LF) line endings.
        assert body_of(m) == BODY.replace(b"\r\n", b"\n"), m
        assert b"Return-Path: <alice@corvid.test>" in m
        assert b"Received: from client.test" in m, "Corvid's trace header travelled along"
    log = postfix.log()
    assert log.count("status=sent (delivered to maildir)") == 3, log
    assert "client=localhost[127.0.0.1]" in log
    done = [e for e in sender.events() if e.get("message") == "recipient done"]
    assert len(done) == 3 and all(e.get("route") == "mx:far.test" for e in done), done
    assert all("mx.far.test[127.0.0.1]" in e.get("reply", "") for e in done), done
