#!/usr/bin/env python3
"""Per-command latency of one SMTP server, one session at a time (no concurrency): how long
the client waits for the greeting, each reply, and the 250 after the message. Run it against
a Corvid started by `make serve` and against smtp-sink (`smtp-sink -u nobody 127.0.0.1:30025
100`) on the same machine to see what Corvid adds to each step. A zero `limits.greet_delay`
once cost every connection a tokio timer tick (about 1 ms) before its greeting; the `banner`
line is where that shows.

    python3 tests/bench/latency.py --port 2525 --sessions 300

A benchmark: it prints medians and 90th percentiles and never fails on them."""

import argparse
import socket
import statistics
import time

BODY = (b"From: <sender@bench.test>\r\nTo: <alice@corvid.test>\r\nSubject: latency\r\n\r\n"
        + b"La de da de da 1.\r\n" * 50 + b".\r\n")


def read_reply(sock):
    """Reads one whole (possibly multi-line) reply; its last line has a space after the code."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {buf[:80]!r}")
        buf += chunk
        lines = buf.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return buf


def session(port, sender, rcpt, times):
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port))
    read_reply(sock)
    times.setdefault("banner", []).append(time.perf_counter() - started)
    steps = [("ehlo", b"EHLO bench.test\r\n"), ("mail", f"MAIL FROM:<{sender}>\r\n".encode()),
             ("rcpt", f"RCPT TO:<{rcpt}>\r\n".encode()), ("data", b"DATA\r\n"),
             ("message", BODY), ("quit", b"QUIT\r\n")]
    for name, line in steps:
        t = time.perf_counter()
        sock.sendall(line)
        reply = read_reply(sock)
        times.setdefault(name, []).append(time.perf_counter() - t)
        if name != "quit" and reply[:1] not in (b"2", b"3"):
            raise SystemExit(f"{name}: {reply.decode(errors='replace').strip()}")
    sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="the server's SMTP port on 127.0.0.1")
    ap.add_argument("--sessions", type=int, default=300, help="sessions to time (after 20 warm-up ones)")
    ap.add_argument("--sender", default="sender@bench.test")
    ap.add_argument("--rcpt", default="alice@corvid.test")
    args = ap.parse_args()
    warm = {}
    for _ in range(20):
        session(args.port, args.sender, args.rcpt, warm)
    times = {}
    for _ in range(args.sessions):
        session(args.port, args.sender, args.rcpt, times)
    for name, values in times.items():
        values.sort()
        p90 = values[int(len(values) * 0.9)]
        print(f"{name:8s} median {statistics.median(values) * 1000:6.2f} ms   p90 {p90 * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
