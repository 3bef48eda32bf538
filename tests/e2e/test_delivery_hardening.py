"""Delivery hardening through the binary (issue 10): an MX that leads back to this server's
own listener, or to loopback when that is not allowed, bounces with 5.4.6 (RFC 3463 routing
loop) without a connection; reply text from a peer reaches `corvid queue show`, the log and
the bounce without escape sequences or bare CR/LF."""

import json
import socket
import threading

import pytest

from outbound_support import DnsServer, free_port, relay_overrides

MESSAGE = b"From: alice@corvid.test\r\nTo: x@loop.test\r\nSubject: loop\r\n\r\nhello\r\n"


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.stop()


def dsn_statuses(server) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in server.mail_files("alice"))


def test_an_mx_on_our_own_listener_bounces_with_5_4_6(make_server, dns):
    port = free_port()
    dns.mx("loop.test", 10, "mx.loop.test").a("mx.loop.test")
    # Loopback MX hosts are allowed here, so only the own-listener rule can refuse it.
    overrides = relay_overrides(dns, port)
    overrides["listener"] = [{"name": "smtp", "address": f"127.0.0.1:{port}", "mode": "smtp"}]
    sender = make_server(overrides, name="snd")
    assert sender.port == port
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@loop.test",))
    e = sender.wait_log(lambda e: e.get("message") == "recipient failed" and e.get("rcpt") == "x@loop.test")
    assert e["reason"].startswith("5.4.6 "), e
    assert "own listening address" in e["reason"], e
    sender.wait_mail("alice")
    assert "Status: 5.4.6" in dsn_statuses(sender)
    # The server never talked to itself: the only session was the submitting client's.
    closed = [x for x in sender.events() if x.get("message") == "connection closed"]
    me = sender.config["server"]["hostname"]
    assert closed and not any(x.get("helo") == me for x in closed), closed


def test_a_loopback_mx_bounces_unless_allowed(make_server, dns):
    dns.mx("loop.test", 10, "mx.loop.test").a("mx.loop.test")
    sender = make_server(relay_overrides(dns, free_port(), allow_loopback_mx=False), name="snd")
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@loop.test",))
    e = sender.wait_log(lambda e: e.get("message") == "recipient failed" and e.get("rcpt") == "x@loop.test")
    assert e["reason"].startswith("5.4.6 ") and "loopback" in e["reason"], e


class HostilePeer:
    """Answers RCPT with a reply full of terminal escapes, a bell and a bare CR."""

    REPLY = b"451 4.3.0 \x1b[2J\x1b[31mbusy\rInjected: yes\x07\x1b]0;title\x07 later\r\n"

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                f = conn.makefile("rb")
                conn.sendall(b"220 hostile.test ESMTP\r\n")
                try:
                    for line in f:
                        verb = line[:4].upper()
                        if verb == b"EHLO":
                            conn.sendall(b"250-hostile.test\r\n250 ENHANCEDSTATUSCODES\r\n")
                        elif verb == b"RCPT":
                            conn.sendall(self.REPLY)
                        elif verb == b"QUIT":
                            conn.sendall(b"221 bye\r\n")
                            break
                        else:
                            conn.sendall(b"250 ok\r\n")
                except OSError:
                    pass

    def stop(self) -> None:
        self.sock.close()


def test_peer_reply_text_is_cleaned_before_queue_show_and_logs(make_server):
    peer = HostilePeer()
    try:
        route = {"domain": "hostile.test", "to": f"smtp://127.0.0.1:{peer.port}"}
        sender = make_server(relay_overrides(routes=[route]), name="snd")
        qid = sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@hostile.test",))
        e = sender.wait_log(lambda e: e.get("message") == "recipient deferred" and e.get("queue_id") == qid)
        assert "busyInjected: yes" in e["reason"], e
        shown = sender.cli("queue", "show", qid, "--config", str(sender.config_path))
        assert shown.returncode == 0, shown.stderr
        state = json.loads(shown.stdout.split("--- headers ---")[0])["recipients"][0]
        for text in (state["last_reply"], state.get("diagnostic") or "", shown.stdout, sender.log_text()):
            assert "\x1b" not in text and "\x07" not in text, repr(text)
        assert "\r" not in state["last_reply"] and "busyInjected: yes" in state["last_reply"], state
    finally:
        peer.stop()


def test_what_intake_accepts_is_not_bounced_for_its_own_received_field(make_server):
    """limits.max_hops at the end of DATA and at delivery agree: a message that arrives with
    exactly max_hops Received: fields is accepted, and delivered although this server's own
    Received: field makes one more."""
    srv = make_server({"limits": {"max_hops": 5}})
    trace = b"Received: from a by b; Mon, 7 Dec 2026 00:00:00 +0000\r\n" * 5
    srv.send(trace + b"Subject: five hops\r\n\r\nhi\r\n", rcpts=("alice@corvid.test",))
    [stored] = srv.wait_mail("alice")
    assert stored.read_bytes().count(b"Received: ") == 6
