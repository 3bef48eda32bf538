#!/usr/bin/env python3
"""Intake rate with the plugins' kv on sled and on a shared Redis (docs/scaling.md).

Runs, on loopback, with the bundled plugin chain of config/dev.toml (the rate limiter made to
count every loopback message, so that each message costs kv calls):
  1. one node, `[kv] backend = "sled"`;
  2. one node, `[kv] backend = "redis"`;
  3. two nodes sharing one redis-server, the senders split between them.
Prints messages per second accepted (250 after DATA) for each. A benchmark: it reports, it
does not fail on the numbers.

    cargo build --release -p corvid && make plugins
    CORVID_BIN=target/release/corvid python3 tests/bench/kv_intake.py [--messages 2000] [--concurrency 8]
"""

import argparse
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from conftest import Corvid, bundled_plugins  # noqa: E402


def start_redis(workdir: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def chain() -> list[dict]:
    plugins = bundled_plugins()
    for p in plugins:
        if p["name"] == "rate-limit":
            p["config"] = {"messages_per_window": 1_000_000_000, "connections_per_window": 1_000_000_000,
                           "window_secs": 3600, "exempt": []}
    return plugins


def node(workdir: Path, kv: dict) -> Corvid:
    workdir.mkdir(parents=True)
    overrides = {"kv": kv, "plugin": chain(),
                 "limits": {"max_connections_per_ip": 1000, "max_messages_per_connection": 1000}}
    c = Corvid(workdir, overrides)
    return c.start(180)


def blast(ports: list[int], messages: int, concurrency: int) -> float:
    """Sends `messages` over `concurrency` connections spread over `ports`; messages/s."""
    per = messages // concurrency
    errors: list[str] = []

    def worker(i: int) -> None:
        port = ports[i % len(ports)]
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=60) as s:
                s.ehlo()
                for n in range(per):
                    s.sendmail("sender@example.org", ["alice@corvid.test"],
                               f"Subject: bench {i}/{n}\r\n\r\n{'x' * 900}\r\n")
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        print(f"  {len(errors)} sender(s) failed, first: {errors[0]}")
    return per * concurrency / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corvid-kv-bench-"))
    redis, port = start_redis(work)
    url = f"redis://127.0.0.1:{port}/"
    nodes: list[Corvid] = []
    try:
        runs = [("one node, sled kv", [{"backend": "sled"}]),
                ("one node, redis kv", [{"backend": "redis", "url": url}]),
                ("two nodes, shared redis kv", [{"backend": "redis", "url": url}] * 2)]
        for i, (name, kvs) in enumerate(runs):
            nodes = [node(work / f"run{i}-node{j}", kv) for j, kv in enumerate(kvs)]
            blast([n.port for n in nodes], args.messages // 10, args.concurrency)  # warm-up
            rate = blast([n.port for n in nodes], args.messages, args.concurrency)
            print(f"{name:30} {rate:8.0f} msg/s  ({args.messages} x 1 KB, {args.concurrency} connections)")
            for n in nodes:
                n.stop()
    finally:
        for n in nodes:
            if n.running():
                n.kill()
        redis.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
