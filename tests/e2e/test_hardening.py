"""Limits an Internet-facing server needs, over real sockets (issue 10): pregreet, junk
commands, session time, RCPT counting, mail loops, header bombs, the memory ceiling, and plain
logs when stderr is not a terminal."""

import socket
import subprocess
import time

from conftest import BIN


def test_a_client_talking_before_the_greeting_is_refused(make_server):
    server = make_server({"limits": {"greet_delay": "1s"}})
    with server.connect() as c:
        c.send(b"EHLO fast.test\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (554, "5.5.0"), r
        assert c.sock.recv(100) == b"", "connection left open after a pregreet"
    # A client that waits is greeted after the delay and served.
    started = time.monotonic()
    with server.connect() as c:
        c.greet()
        assert time.monotonic() - started >= 0.9
        c.ehlo()
        c.expect("QUIT", 221)
    server.wait_log(lambda e: e.get("message", "").startswith("pregreet"))


def test_junk_commands_are_capped(make_server):
    server = make_server({"limits": {"max_junk_commands": 5}})
    with server.connect() as c:
        c.greet()
        c.ehlo()
        for _ in range(5):
            c.expect("NOOP", 250)
        c.expect("NOOP", 421, "4.7.0")
        assert c.sock.recv(100) == b""


def test_session_time_is_capped(make_server):
    server = make_server({"limits": {"max_session_time": "2s"}})
    started = time.monotonic()
    with server.connect() as c:
        c.greet()
        c.ehlo()
        r = c.reply()  # nothing sent: the server speaks when the session time is over
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
    assert 1.5 < time.monotonic() - started < 10


def test_the_101st_rcpt_gets_452_even_for_a_repeated_address(server):
    with server.connect() as c:
        c.begin(rcpts=())
        for _ in range(100):
            c.expect("RCPT TO:<alice@corvid.test>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 452, "4.5.3")
        c.expect("QUIT", 221)


def _data(c, content: bytes):
    c.expect("DATA", 354)
    c.send(content + b".\r\n")
    return c.reply()


def test_more_than_100_received_fields_is_a_loop(server):
    hops = b"".join(b"Received: from h%d by h%d; Mon, 7 Dec 2026 00:00:00 +0000\r\n" % (i, i + 1)
                    for i in range(101))
    with server.connect() as c:
        c.begin()
        r = _data(c, hops + b"Subject: loop\r\n\r\nbody\r\n")
        assert (r.code, r.enhanced) == (554, "5.4.6"), r
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        r = _data(c, hops[hops.index(b"\r\n") + 2:] + b"Subject: 100 hops\r\n\r\nbody\r\n")
        assert r.code == 250, r
    server.wait_mail("alice")


def test_header_bombs_are_refused(server):
    bomb = b"".join(b"X-H%d: v\r\n" % i for i in range(1001))
    with server.connect() as c:
        c.begin()
        r = _data(c, bomb + b"\r\nbody\r\n")
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
    server.wait_queue_empty()
    assert server.all_mail() == []


def test_content_beyond_the_memory_ceiling_gets_452(make_server):
    server = make_server({"limits": {"max_inflight_bytes": 50_000}})
    with server.connect() as c:
        c.begin()
        r = _data(c, b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 100)
        assert (r.code, r.enhanced) == (452, "4.3.1"), r
        # The charge was released: a small message fits afterwards.
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        r = _data(c, b"Subject: small\r\n\r\nok\r\n")
        assert r.code == 250, r
    server.wait_mail("alice")


def test_logs_have_no_colours_when_stderr_is_not_a_terminal(make_server):
    server = make_server(start=False)
    proc = subprocess.Popen([str(BIN), "serve", "--config", str(server.config_path), "--log-format", "human"],
                            cwd=server.workdir, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        out = b""
        deadline = time.monotonic() + 30
        while b"listening" not in out and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            out += line
        assert b"listening" in out, out
        assert b"\x1b[" not in out, out
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_plugin_cannot_make_an_unauthenticated_client_relay(make_server):
    """Issue 11's open-relay path: a plugin adding a remote recipient (here address-rewrite
    mapping a local address to another domain) is held to the client's relay rights, so the
    message is not relayed; a local target is added as usual."""
    from conftest import REPO
    rewrite = {
        "name": "address-rewrite",
        "path": str(REPO / "target/plugins/wasm32-wasip2/release/address_rewrite.wasm"),
        "order": 20,
        "config": {"recipient": {"webmaster@corvid.test": "x@remote.test",
                                 "info@corvid.test": "alice@corvid.test"}},
    }
    server = make_server({"plugin": [rewrite]})
    with server.connect() as c:
        c.begin(rcpts=("webmaster@corvid.test",))
        # The plugin replaced webmaster by x@remote.test; the target was dropped (relay
        # denied), so the transaction has no recipient left.
        c.expect("DATA", 503, "5.5.1")
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<info@corvid.test>", 250)
        r = _data(c, b"Subject: local alias\r\n\r\nbody\r\n")
        assert r.code == 250, r
    server.wait_log(lambda e: e.get("message") == "policy add-recipient dropped" and e.get("rcpt") == "x@remote.test")
    server.wait_mail("alice")
    server.wait_queue_empty()
    text = server.log_text()
    assert "remote.test" not in "".join(l for l in text.splitlines() if '"delivery' in l or "attempt" in l), text
