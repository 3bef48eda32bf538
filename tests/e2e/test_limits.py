"""Line discipline and resource limits: over-long lines, NUL and invalid UTF-8, garbage,
message size, recipient count, slow clients, connection floods, error and message counts."""

import random
import select
import socket
import time

import pytest

from conftest import domain, split_delivered, with_domains

SMALL = {"limits": {"max_message_size": 10000}}


# --- line length ------------------------------------------------------------------------------


def test_overlong_command_line(server):
    line = b"NOOP " + b"x" * 593  # 600 octets with CRLF
    assert len(line) + 2 == 600
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.expect(line, 500, "5.5.2")
        c.expect("NOOP", 250, "2.0.0")
        c.expect("MAIL FROM:<a@example.org>", 250)


def test_command_line_limit_is_512(server):
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.expect(b"NOOP " + b"x" * 505, 250)  # 512 with CRLF
        c.expect(b"NOOP " + b"x" * 506, 500, "5.5.2")  # 513
        c.expect("NOOP", 250)


def test_overlong_line_in_pieces(server):
    """A 5000-octet line trickled in pieces: one 500 when its CRLF comes, and nothing in it
    is taken for a command."""
    line = (b"MAIL FROM:<evil@x>\r" + b"y" * 4000 + b"\nRCPT TO:<bob@corvid.test>"
            + b"z" * 1000)[:4998]
    assert len(line) + 2 == 5000
    with server.connect() as c:
        c.greet()
        c.ehlo()
        for i in range(0, len(line), 100):
            c.send(line[i:i + 100])
            time.sleep(0.002)  # let the pieces arrive in separate reads
        c.send(b"\r\nNOOP\r\nQUIT\r\n")
        replies = c.replies_until_eof()
    assert [(r.code, r.enhanced) for r in replies] == [(500, "5.5.2"), (250, "2.0.0"), (221, "2.0.0")], [str(r) for r in replies]


def test_overlong_mail_command_between_commands(server):
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.send(b"MAIL FROM:<" + b"a" * 600 + b"@example.org>\r\nMAIL FROM:<a@example.org>\r\n")
        c.expect(None, 500, "5.5.2")
        c.expect(None, 250, "2.1.0")


def test_long_data_lines_delivered_intact(server):
    """Documented rule: text lines over 1000 octets are accepted as they are."""
    long1 = b"A" * 5000
    long2 = b"." + b"B" * 1999  # a stuffed dot at the start of a long line
    content = b"Subject: long lines\r\nX-Long: " + b"h" * 1500 + b"\r\n\r\n" + long1 + b"\r\n" + long2 + b"\r\n"
    qid = server.send(content)
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == content
    assert qid


# --- NUL, invalid UTF-8, garbage ----------------------------------------------------------------


@pytest.mark.parametrize("line,code", [
    (b"NO\x00OP", 500),
    (b"\x00", 500),
    (b"\xff\xfe\xfd", 500),
    (b"NOOP\xc3", 500),
    (b"EHLO client\x00.test", 501),
    (b"HELO \x01", 501),
    (b"VRFY ali\x00ce", 501),
    (b"MAIL FROM:<a\x00@example.org>", 501),
    (b"MAIL FROM:<a@example.org>\x00", 501),
    (b"MAIL FROM:<\xff@example.org>", 500),
    (b"RCPT TO:<alice@corvid.test>\x00", 501),
])
def test_nul_and_invalid_utf8_in_commands(make_server, line, code):
    server = make_server({"limits": {"max_errors": 50}})
    with server.connect() as c:
        c.greet()
        c.ehlo()
        r = c.expect(line, code)
        assert r.enhanced and r.enhanced.startswith("5."), r
        c.expect("NOOP", 250, "2.0.0")
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: after garbage\r\n\r\n\x00 NUL in content is kept\r\n.\r\n")
        c.expect(None, 250, "2.0.0")
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == b"Subject: after garbage\r\n\r\n\x00 NUL in content is kept\r\n"


def test_random_garbage_never_kills_the_server(server):
    rng = random.Random(20231218)
    for round_ in range(25):
        kind = round_ % 3
        if kind == 0:
            blob = rng.randbytes(rng.randrange(1, 20000))
        elif kind == 1:  # garbage lines, so that the command parser sees them
            blob = b"\r\n".join(rng.randbytes(rng.randrange(0, 700)) for _ in range(rng.randrange(1, 40))) + b"\r\n"
        else:  # protocol-ish garbage
            words = [b"MAIL FROM:", b"RCPT TO:", b"DATA", b"BDAT ", b"\r\n", b"<", b">", b"@", b".",
                     b"\r", b"\n", b"\x00", b"EHLO x", b"BDAT 100 LAST", b"\xff", b"SIZE=", b"AUTH"]
            blob = b"".join(rng.choice(words) + rng.randbytes(rng.randrange(0, 5)) for _ in range(rng.randrange(10, 500)))
        try:
            with server.connect(timeout=5) as c:
                c.greet()
                if round_ % 2:
                    c.ehlo()
                for i in range(0, len(blob), 1500):
                    c.send(blob[i:i + 1500])
                c.sock.shutdown(socket.SHUT_WR)
                c.at_eof(timeout=5) or True
        except (OSError, EOFError, AssertionError):
            pass  # the server may close a garbage session at any point; it must not die
        assert server.running(), f"server died in round {round_}"
    # still answers new connections and still works
    assert server.running()
    server.send(b"Subject: alive\r\n\r\nstill here\r\n")
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == b"Subject: alive\r\n\r\nstill here\r\n"


# --- size -----------------------------------------------------------------------------------------


def test_ehlo_advertises_configured_size(make_server):
    server = make_server(SMALL)
    with server.connect() as c:
        c.greet()
        r = c.ehlo()
        assert "SIZE 10000" in r.lines


def test_declared_size_over_limit(make_server):
    server = make_server(SMALL)
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org> SIZE=10001", 552, "5.3.4")
        c.expect("MAIL FROM:<a@example.org> SIZE=18446744073709551615", 552, "5.3.4")
        c.expect("MAIL FROM:<a@example.org> SIZE=10000", 250, "2.1.0")


def test_actual_size_over_limit_at_end_of_data(make_server):
    server = make_server(SMALL)
    big = b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 200  # 20016 octets
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        c.send(big + b".\r\nNOOP\r\n")
        c.expect(None, 552, "5.3.4")
        c.expect(None, 250, "2.0.0")  # the NOOP after the terminator: still in step
        c.expect("RCPT TO:<alice@corvid.test>", 503)  # transaction gone
    server.wait_queue_empty()
    assert server.all_mail() == []


def test_size_limit_is_inclusive(make_server):
    server = make_server(SMALL)
    head = b"Subject: exactly the limit\r\n\r\n"
    body = b"y" * (10000 - len(head) - 2) + b"\r\n"
    content = head + body
    assert len(content) == 10000
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        c.send(content + b".\r\n")
        c.expect(None, 250, "2.0.0")
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 250)
        c.expect("DATA", 354)
        c.send(b"z" + content + b".\r\n")
        c.expect(None, 552, "5.3.4")
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == content


def test_actual_size_over_limit_with_bdat(make_server):
    server = make_server(SMALL)
    chunk = b"x" * 6000
    with server.connect() as c:
        c.begin()
        c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
        c.expect(None, 250)
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk + b"NOOP\r\n")
        c.expect(None, 552, "5.3.4")
        c.expect(None, 250, "2.0.0")
    server.wait_queue_empty()
    assert server.all_mail() == []


# --- recipients -------------------------------------------------------------------------------------


def test_101st_recipient(make_server):
    server = make_server(with_domains(domain("many.test", ["sink"], catch_all="sink")))
    with server.connect() as c:
        c.begin(rcpts=())
        for i in range(100):
            c.expect(f"RCPT TO:<user{i}@many.test>", 250, "2.1.5")
        c.expect("RCPT TO:<user100@many.test>", 452, "4.5.3")
        c.expect("RCPT TO:<alice@corvid.test>", 452, "4.5.3")
        c.expect("DATA", 354)
        c.send(b"Subject: to 100\r\n\r\nhi\r\n.\r\n")
        c.expect(None, 250, "2.0.0")
    [path] = server.wait_mail("sink", domain="many.test")
    server.wait_queue_empty()
    assert len(server.mail_files("sink", domain="many.test")) == 1  # one copy per mailbox
    assert server.mail_files("alice") == []


# --- slow clients -----------------------------------------------------------------------------------

# The rate is measured over sliding windows of data_rate_window (not earned up front).
SLOW = {"limits": {"command_timeout": "1s", "data_timeout": "2s", "min_data_rate": 100000,
                   "data_rate_window": "2s"}}


def test_idle_client_after_ehlo_is_cut_off(make_server):
    server = make_server(SLOW)
    with server.connect() as c:
        c.greet()
        c.ehlo()
        t0 = time.monotonic()
        r = c.reply()  # sends nothing: waits for the server
        elapsed = time.monotonic() - t0
        assert (r.code, r.enhanced) == (421, "4.4.2"), r
        assert c.at_eof(5), "socket not closed after 421"
    assert 0.5 < elapsed < 5, elapsed


def test_client_trickling_a_command_is_cut_off(make_server):
    """The command deadline covers the whole line, not each read."""
    server = make_server(SLOW)
    with server.connect() as c:
        c.greet()
        t0 = time.monotonic()
        got = trickle(c, b"EHLO " + b"a" * 200, 0.1, 10)
        elapsed = time.monotonic() - t0
    assert got is not None, "never cut off"
    assert (got.code, got.enhanced) == (421, "4.4.2"), got
    assert elapsed < 5, elapsed


def trickle(c, data: bytes, interval: float, limit: float):
    """Sends `data` a byte at a time every `interval` s until the server says something;
    returns that reply (or None after `limit` seconds)."""
    deadline = time.monotonic() + limit
    i = 0
    while time.monotonic() < deadline:
        r, _, _ = select.select([c.sock], [], [], interval)
        if r:
            return c.reply()
        try:
            c.send(data[i % len(data):i % len(data) + 1])
        except (BrokenPipeError, ConnectionResetError):
            return c.reply()
        i += 1
    return None


def test_client_trickling_data_is_cut_off(make_server):
    server = make_server(SLOW)
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        t0 = time.monotonic()
        got = trickle(c, b"Subject: slow\r\n\r\nvery slow body\r\n", 0.05, 15)
        elapsed = time.monotonic() - t0
        assert got is not None, "trickling client never cut off"
        assert (got.code, got.enhanced) == (421, "4.4.2"), got
        assert c.at_eof(5)
    assert elapsed < 6, elapsed
    server.wait_queue_empty()
    assert server.all_mail() == []


def test_fair_rate_data_is_not_cut_off(make_server):
    """A message sent steadily at a fair rate finishes even past data_timeout."""
    server = make_server({"limits": {"command_timeout": "2s", "data_timeout": "1s", "min_data_rate": 10000}})
    piece = b"x" * 998 + b"\r\n"
    with server.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 1.6:  # about 30 KB/s for 1.6 s, well above 10 KB/s
            c.send(piece * 3)
            n += 3
            time.sleep(0.1)
        c.send(b".\r\n")
        c.expect(None, 250, "2.0.0")
    [path] = server.wait_mail("alice")
    assert split_delivered(path).content == piece * n


# --- connections and errors -------------------------------------------------------------------------


def admitted(server, timeout: float = 5):
    """A connection that got its 220. A slot of a connection that just closed (the start-up
    probe) is released shortly after the client sees the close, so 421 is retried briefly."""
    deadline = time.monotonic() + timeout
    while True:
        c = server.connect()
        r = c.reply()
        if r.code == 220:
            return c
        c.close()
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
        assert time.monotonic() < deadline, "no connection slot"
        time.sleep(0.02)


def test_connection_flood(make_server):
    server = make_server({"limits": {"max_connections_per_ip": 5}})
    held = []
    try:
        for _ in range(5):
            held.append(admitted(server))
        with server.connect() as sixth:
            r = sixth.reply()
            assert (r.code, r.enhanced) == (421, "4.7.0"), r
            assert sixth.at_eof(5)
        # the five are still served
        for c in held:
            c.expect("NOOP", 250)
        # a slot frees up when one of them leaves
        held[0].expect("QUIT", 221)
        assert held[0].at_eof(5)
        held.pop(0).close()
        with admitted(server) as c:
            c.expect("QUIT", 221)
    finally:
        for c in held:
            c.close()


def test_total_connection_limit(make_server):
    server = make_server({"limits": {"max_connections": 3}})
    held = []
    try:
        for _ in range(3):
            held.append(admitted(server))
        with server.connect() as c:
            r = c.reply()
            assert (r.code, r.enhanced) == (421, "4.7.0"), r
    finally:
        for c in held:
            c.close()


def test_max_errors(make_server):
    server = make_server({"limits": {"max_errors": 3}})
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("FOO", 500)
        c.expect("RCPT TO:<alice@corvid.test>", 503)
        c.send(b"BAR\r\n")
        replies = c.replies_until_eof()
    assert [(r.code, r.enhanced) for r in replies] == [(500, "5.5.2"), (421, "4.7.0")], [str(r) for r in replies]


def test_max_messages_per_connection(make_server):
    server = make_server({"limits": {"max_messages_per_connection": 2}})
    with server.connect() as c:
        c.greet()
        c.ehlo()
        for i in range(2):
            c.expect("MAIL FROM:<a@example.org>", 250)
            c.expect("RCPT TO:<alice@corvid.test>", 250)
            c.expect("DATA", 354)
            c.send(f"Subject: {i}\r\n\r\nx\r\n.\r\n".encode())
            c.expect(None, 250)
        r = c.cmd("MAIL FROM:<a@example.org>")
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
        assert c.at_eof(5)
    server.wait_mail("alice", 2)
