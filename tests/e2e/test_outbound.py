"""Outbound delivery between two Corvid instances on loopback: the sender relays for a client
in its relay networks to the receiver, found through MX records served by a DNS server on
loopback; bounces (RFC 3464 DSNs) come back to the sender; deferred mail is retried and shows
its route in `corvid queue show`."""

import json
import time

import pytest

from conftest import domain, split_delivered, with_domains
from outbound_support import DnsServer, free_port, relay_overrides

MESSAGE = (
    b"From: Alice <alice@corvid.test>\r\n"
    b"To: Carol <carol@far.test>\r\n"
    b"Subject: across the MX\r\n"
    b"Message-ID: <outbound-1@corvid.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Line one.\r\n"
    b".A line starting with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"caf\xc3\xa9 cr\xc3\xa8me\r\n"
    b"Last line.\r\n"
)


@pytest.fixture
def dns():
    server = DnsServer()
    yield server
    server.stop()


def receiver_for(make_server, name: str = "far.test", port: int | None = None):
    overrides = with_domains(domain(name, ["carol", "dave"]))
    if port is not None:
        overrides["listener"] = [{"name": "smtp", "address": f"127.0.0.1:{port}", "mode": "smtp"}]
    return make_server(overrides, name="rcv")


def test_relay_through_mx_to_another_corvid(make_server, dns):
    receiver = receiver_for(make_server)
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    sender = make_server(relay_overrides(dns, receiver.port), name="snd")

    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("carol@far.test", "dave@far.test"),
                      mail_options=("BODY=8BITMIME",))
    [carol] = receiver.wait_mail("carol", domain="far.test")
    [dave] = receiver.wait_mail("dave", domain="far.test")
    sender.wait_queue_empty()
    receiver.wait_queue_empty()
    for path in (carol, dave):
        d = split_delivered(path)
        assert d.return_path == b"Return-Path: <alice@corvid.test>\r\n"
        # What follows the receiver's trace header: the sender's Received, then the message
        # exactly as the client sent it (dots unstuffed, 8-bit kept, CRLF everywhere).
        assert d.content.startswith(b"Received: from client.test "), d.content[:200]
        assert d.content.endswith(MESSAGE)
        assert f"id {qid}".encode() in d.content
    done = [e for e in sender.events() if e.get("message") == "recipient done"]
    assert {e.get("route") for e in done} == {"mx:far.test"}, done
    accepted = [e for e in receiver.events() if e.get("message") == "transaction"]
    assert len(accepted) == 1, "one message on the receiver for both recipients"


def test_remote_refusal_bounces_to_the_sender_once(make_server, dns):
    receiver = receiver_for(make_server)
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    sender = make_server(relay_overrides(dns, receiver.port), name="snd")

    qid = sender.send(MESSAGE, sender="alice@corvid.test",
                      rcpts=("nobody@far.test", "ghost@far.test", "carol@far.test"))
    receiver.wait_mail("carol", domain="far.test")
    [dsn_path] = sender.wait_mail("alice")
    sender.wait_queue_empty()
    dsn = dsn_path.read_bytes()
    text = dsn.decode("utf-8", "replace")
    for want in [
        "Return-Path: <>\r\n",
        "Subject: Undelivered Mail Returned to Sender\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Content-Type: message/delivery-status\r\n",
        "Reporting-MTA: dns; mx.corvid.test\r\n",
        f"X-Corvid-Queue-ID: {qid}\r\n",
        "Final-Recipient: rfc822; nobody@far.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Remote-MTA: dns; mx.far.test\r\nDiagnostic-Code: smtp; 550 5.1.1 ",
        "Final-Recipient: rfc822; ghost@far.test\r\n",
        "Content-Type: message/rfc822\r\n",
        "Subject: across the MX\r\n",
    ]:
        assert want in text, f"missing {want!r} in\n{text}"
    assert "carol@far.test\r\nAction" not in text, "the delivered recipient is not in the DSN"
    assert b"\n" not in dsn.replace(b"\r\n", b""), "DSN lines end in CRLF"

    # A message from the null sender is never bounced (RFC 5321 4.5.5, RFC 3461 6.2).
    sender.send(MESSAGE, sender="", rcpts=("nobody@far.test",))
    sender.wait_log(lambda e: e.get("message") == "recipient failed" and e.get("rcpt") == "nobody@far.test"
                    and e.get("queue_id") != qid)
    sender.wait_queue_empty()
    time.sleep(0.5)
    assert len(sender.mail_files("alice")) == 1, "no second DSN"
    assert not [e for e in sender.events() if e.get("message") == "DSN queued" and e.get("queue_id") != qid]


def test_deferred_mail_shows_its_route_and_is_retried(make_server):
    port = free_port()
    route = {"domain": "later.test", "to": f"smtp://127.0.0.1:{port}"}
    sender = make_server(relay_overrides(routes=[route]), name="snd")
    qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("carol@later.test",))
    sender.wait_log(lambda e: e.get("message") == "recipient deferred" and e.get("queue_id") == qid)

    shown = sender.cli("queue", "show", qid, "--config", str(sender.config_path))
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout.split("--- headers ---")[0])["recipients"][0]
    assert state["route"] == f"smtp://127.0.0.1:{port}"
    assert state["status"] == "pending"
    assert state["attempts"] >= 1
    assert state["next_attempt"] > 0
    assert state["last_reply"].startswith("4.4.1 "), state

    # The next hop comes up: the retry schedule (1s here) delivers the message.
    receiver = receiver_for(make_server, "later.test", port)
    receiver.wait_mail("carol", domain="later.test")
    sender.wait_queue_empty()
    assert len(receiver.mail_files("carol", "later.test")) == 1
