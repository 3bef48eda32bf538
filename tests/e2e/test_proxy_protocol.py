"""PROXY protocol v1 and v2 on a listener (`proxy_protocol = true`, `proxy_from`): the client
address of the header is the one the session uses (log, `Received:`); a connection from
outside `proxy_from`, without a header, or with a malformed one is closed before the greeting.
The headers are written by hand here, octet for octet as HAProxy's spec gives them."""

import ipaddress
import struct

from conftest import SmtpClient, split_delivered

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    body = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport))
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    body = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport))
    return V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body


def proxied(make_server, proxy_from=("127.0.0.0/8",)):
    listeners = [
        {"name": "smtp", "address": "127.0.0.1:0"},
        {"name": "behind-lb", "address": "127.0.0.1:0", "proxy_protocol": True, "proxy_from": list(proxy_from)},
    ]
    return make_server({"listener": listeners})


def connect_with(srv, header: bytes):
    c = SmtpClient(srv.ports["behind-lb"])
    c.send(header)
    return c


def send_through(c, subject: str) -> None:
    c.greet()
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<alice@corvid.test>", 250)
    c.expect("DATA", 354)
    c.expect(f"Subject: {subject}\r\n\r\nhello\r\n.", 250)
    c.expect("QUIT", 221)


def test_v1_header_gives_the_real_client(make_server):
    srv = proxied(make_server)
    with connect_with(srv, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n") as c:
        send_through(c, "v1")
    srv.wait_log(lambda e: e.get("message") == "transaction" and e.get("client") == "192.0.2.7")
    [path] = srv.wait_mail("alice")
    assert b"[192.0.2.7]" in split_delivered(path).received


def test_v2_header_gives_the_real_ipv6_client(make_server):
    srv = proxied(make_server)
    with connect_with(srv, v2_tcp6("2001:db8::7", "2001:db8::1", 40000, 25)) as c:
        send_through(c, "v2")
    srv.wait_log(lambda e: e.get("message") == "transaction" and e.get("client") == "2001:db8::7")
    with connect_with(srv, v2_tcp4("198.51.100.9", "127.0.0.1", 1234, 25)) as c:
        send_through(c, "v2 ipv4")
    srv.wait_log(lambda e: e.get("message") == "transaction" and e.get("client") == "198.51.100.9")


def test_v2_local_keeps_the_connection_address(make_server):
    srv = proxied(make_server)
    header = V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
    with connect_with(srv, header) as c:
        send_through(c, "health check")
    srv.wait_log(lambda e: e.get("message") == "transaction" and e.get("client") == "127.0.0.1")


def test_bad_or_missing_headers_and_outsiders_are_closed_before_the_greeting(make_server):
    srv = proxied(make_server)
    for header in (b"EHLO client.test\r\n",                       # no header
                   b"PROXY TCP4 192.0.2.7 127.0.0.1 40000\r\n",    # a field missing
                   b"PROXY TCP4 192.0.2.7 127.0.0.1 040000 25\r\n",  # leading zero
                   V2_SIGNATURE + bytes([0x21, 0x11, 0x00, 0x03, 1, 2, 3])):  # short addresses
        with connect_with(srv, header) as c:
            assert c.at_eof(), header
    srv.wait_log(lambda e: "bad header" in str(e.get("message")))
    # The plain listener next to it is not affected.
    with srv.connect() as c:
        c.greet()
    # A proxy outside proxy_from: closed even with a valid header.
    other = proxied(make_server, proxy_from=["10.0.0.0/8"])
    with connect_with(other, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n") as c:
        assert c.at_eof()
    other.wait_log(lambda e: "outside proxy_from" in str(e.get("message")))


def test_through_haproxy_send_proxy_v2_to_two_nodes(make_server, tmp_path):
    """A real HAProxy (Debian `haproxy`) in front of two nodes, `send-proxy-v2`: each node sees
    the client's own address (127.0.0.2 here), not HAProxy's (127.0.0.1)."""
    import shutil
    import socket
    import subprocess
    import time
    assert shutil.which("haproxy"), "haproxy missing: run tests/setup"
    nodes = [proxied(make_server) for _ in range(2)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "haproxy.cfg"
    servers = "\n".join(f"  server n{i} 127.0.0.1:{n.ports['behind-lb']} send-proxy-v2"
                        for i, n in enumerate(nodes))
    cfg.write_text(f"""global
  log stderr format raw local0
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend smtp
  bind 127.0.0.1:{port}
  default_backend nodes
backend nodes
  balance roundrobin
{servers}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy did not start"
                time.sleep(0.05)
        for i in range(4):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
            c = SmtpClient.__new__(SmtpClient)
            c.sock, c.buf, c.timeout = sock, b"", 10
            with c:
                send_through(c, f"via haproxy {i}")
        # HAProxy's roundrobin need not split four connections two and two (its threads share
        # the rotation), so: every node took at least one, and all four arrived, each stamped
        # with the client's own address.
        for n in nodes:
            n.wait_log(lambda e: e.get("message") == "transaction" and e.get("client") == "127.0.0.2")
        deadline = time.monotonic() + 15
        while sum(len(n.mail_files("alice")) for n in nodes) < 4:
            assert time.monotonic() < deadline, "not all four messages were delivered"
            time.sleep(0.05)
        paths = [p for n in nodes for p in n.mail_files("alice")]
        assert len(paths) == 4
        assert all(b"[127.0.0.2]" in split_delivered(p).received for p in paths)
    finally:
        proc.kill()
        proc.wait()
