#!/usr/bin/env python3
"""Outbound TLS benchmark (issue 13, "Performance"): what MTA-STS policy lookups and verified
TLS cost a remote delivery. Everything runs on loopback with the e2e tests' parts, imported
from tests/e2e: the dnslib DNS server (MX, A, TXT), the test CA made with openssl at run time
(no key is ever written to the repository), the HTTPS policy server, and STARTTLS peers.

1. Time to first byte (TTFB) of a delivery, MTA-STS cache cold vs warm. The sender Corvid
   (`connection_reuse_time = "0s"`, so every message opens its own connection and TLS session)
   delivers to a Python STARTTLS peer (test_outbound_tls.TlsPeer) presenting a certificate from
   the test CA for the MX name `mx.bench.test`. For each sample one message is sent with smtplib
   and the next only after it arrived. Two times are taken on one clock (time.monotonic() in
   this process), both from the moment smtplib has read the sender's 250 reply to the end of
   DATA:
     ttfb     until the peer's accept() returns the sender's TCP connection for that message
              (its first byte, before the 220 greeting, EHLO, STARTTLS and the message);
     arrival  until the peer has read the message's final "." (before it answers 250).
   Kinds, interleaved round by round so that the machine's load hits all alike:
     sts-cold    first message to a new domain with an `enforce` policy: the TXT lookup, the
                 HTTPS fetch from mta-sts.<domain>, then delivery over verified TLS;
     sts-warm    a later message to a domain whose policy is cached (fetched once, beforehand);
     plain-cold  first message to a new domain without policy (TXT lookup answers NXDOMAIN):
                 the DNS part of "cold" without the policy fetch;
     plain-warm  a later message to such a domain (opportunistic TLS).
   For both cold kinds the domain's MX and _mta-sts TXT lookups are new (all domains share the
   MX host, whose address is cached after the first message), so sts-cold - plain-cold is the
   policy fetch, and sts-warm - plain-warm what a cached enforce policy costs per message.
   Should the sender connect before smtplib has read its 250 (possible under load), ttfb is
   negative: it is recorded as it is.

2. End-to-end rate of remote delivery to a local peer, `verify` vs `opportunistic`, in the same
   run: smtp-source (-s concurrency, -m messages, -l size, a new connection per message) injects
   into the sender Corvid, which relays over STARTTLS to a receiving Corvid (certificate for
   mx.bench.test from the test CA) delivering to Maildir. Per-domain policies
   (`delivery.tls.domains`) choose verify or opportunistic; connection reuse stays at its
   default (--reuse-time "0s": a new connection and TLS handshake per message). The rate is
   messages in the peer's Maildir new/ divided by the time from smtp-source's start to the last
   of them (the load benchmark's "delivered msg/s"); the CPU of both Corvids per message is
   read from /proc. An `opportunistic` session verifies the chain too (after the handshake, to
   record verified or not), so the two modes do the same certificate work.

Not a test: it reports and does not fail on the numbers (it does fail if mail goes astray or
is not delivered over verified TLS where the policy says so). Needs dnslib, pytest (imported
by the e2e helpers), openssl, smtp-source (Postfix), and a release binary:

    cargo build --release -p corvid
    python3 tests/bench/tls_delivery.py --binary target/release/corvid
    python3 tests/bench/tls_delivery.py --samples 5 --messages 200 --json out.json   # quick
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import CLK_TCK, HELO, REPO, SENDER, SMTP_SOURCE, count_files, log, read_stat

sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import conftest  # noqa: E402  (the e2e harness: Corvid process, config writer)
from outbound_support import relay_overrides  # noqa: E402
from test_mta_sts import Dns, PolicyServer, issue_many  # noqa: E402
from test_outbound_tls import CaFiles, TlsPeer  # noqa: E402

MX = "mx.bench.test"
KINDS = ("sts-cold", "sts-warm", "plain-cold", "plain-warm")
RATE_DOMAINS = {"opportunistic": "opp.bench.test", "verify": "verify.bench.test"}
ARRIVAL_TIMEOUT = 30.0


class Stamped(list):
    """A list that also records when each item was appended (time.monotonic())."""

    def __init__(self):
        super().__init__()
        self.times = []

    def append(self, item):
        self.times.append(time.monotonic())
        super().append(item)


class StampedPeer(TlsPeer):
    """TlsPeer that timestamps each accepted connection and each stored message."""

    def __init__(self, cert, key):
        self.accepts = Stamped()
        super().__init__(cert, key)
        self.messages = Stamped()

    def _session(self, conn):
        self.accepts.append(None)
        # TlsPeer answers pipelined MAIL, RCPT and DATA with one write each; with Nagle on, the
        # second waits for the sender's delayed ACK (~40 ms on Linux) and would be measured as
        # Corvid's. Real peers (Postfix, Corvid) send such replies together.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._session(conn)


def quiet(dns):
    """dnslib's server logs every query and reply to stdout; the report is printed there."""
    from dnslib.server import DNSLogger
    dns.server.server.logger = DNSLogger(logf=lambda _: None)
    return dns


def first_after(times, t0):
    return next((t for t in times if t >= t0), None)


def send_one(port, rcpt):
    """One message through smtplib; returns time.monotonic() right after the 250 to DATA."""
    import smtplib
    body = f"From: bench@bench.test\r\nTo: {rcpt}\r\nSubject: tlsbench {rcpt}\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO, timeout=30) as s:
        s.sendmail(SENDER, [rcpt], body.encode())
        t = time.monotonic()
    return t


def pct(values, q):
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ----------------------------------------------------------------------------------------------
# 1. TTFB, MTA-STS cache cold vs warm
# ----------------------------------------------------------------------------------------------

def measure_ttfb(workdir, ca, samples):
    cold = {k: [f"c{i}.{k.split('-')[0]}.bench.test" for i in range(samples)] for k in ("sts", "plain")}
    warm = {"sts": "w.sts.bench.test", "plain": "w.plain.bench.test"}
    sts_domains = cold["sts"] + [warm["sts"]]
    dns = quiet(Dns())
    policy = PolicyServer(*issue_many(ca, "policy", [f"mta-sts.{d}" for d in sts_domains]))
    peer = StampedPeer(*ca.issue("mx", MX))
    dns.a(MX)
    for d in cold["sts"] + cold["plain"] + list(warm.values()):
        dns.mx(d, 10, MX)
    for d in sts_domains:
        dns.a(f"mta-sts.{d}").txt(f"_mta-sts.{d}", "v=STSv1; id=20261207T000000;")
        policy.publish(d, "enforce", [MX])
    overrides = relay_overrides(dns, peer.port, tls={"ca_file": str(ca.pem)},
                                mta_sts={"port": policy.port, "fetch_timeout": "5s"},
                                connection_reuse_time="0s")
    (workdir / "ttfb-sender").mkdir()
    sender = conftest.Corvid(workdir / "ttfb-sender", overrides)
    sender.start()
    results = {k: {"ttfb_ms": [], "arrival_ms": []} for k in KINDS}
    try:
        for kind in ("sts", "plain"):  # prime the warm domains: policy and DNS cached
            wait_arrival(peer, send_one(sender.port, f"prime@{warm[kind]}"), f"prime@{warm[kind]}")
        for i in range(samples):
            for kind in KINDS:
                family, temp = kind.split("-")
                rcpt = f"r{i}@{cold[family][i] if temp == 'cold' else warm[family]}"
                t_start = time.monotonic()
                t0 = send_one(sender.port, rcpt)
                t_arrival = wait_arrival(peer, t_start, rcpt)
                t_accept = first_after(peer.accepts.times, t_start)
                results[kind]["ttfb_ms"].append(round((t_accept - t0) * 1000, 2))
                results[kind]["arrival_ms"].append(round((t_arrival - t0) * 1000, 2))
                time.sleep(0.05)
        # Every sts message went over verified TLS; each sts domain's policy was fetched once.
        done = [e for e in sender.events() if e.get("outcome") == "delivered" and ".sts." in e.get("rcpt", "")]
        unverified = [e for e in done if not e.get("tls", "").endswith(" verified")]
        if len(done) != 2 * samples + 1 or unverified:
            raise SystemExit(f"sts deliveries: {len(done)} logged, unverified: {unverified[:3]}")
        fetches = {d: policy.fetched(d) for d in sts_domains}
        if any(n != 1 for n in fetches.values()):
            raise SystemExit(f"policy fetched other than once per domain: {fetches}")
    finally:
        sender.signal_and_wait(signal.SIGTERM, 20)
        policy.stop()
        peer.stop()
        dns.stop()
    return results


def wait_arrival(peer, t0, rcpt):
    """The time the peer stored the message for `rcpt` (sent after t0)."""
    marker = f"Subject: tlsbench {rcpt}".encode()
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while time.monotonic() < deadline:
        for t, m in zip(list(peer.messages.times), list(peer.messages)):
            if t >= t0 and marker in m:
                return t
        time.sleep(0.002)
    raise SystemExit(f"{rcpt}: not delivered to the peer within {ARRIVAL_TIMEOUT}s")


# ----------------------------------------------------------------------------------------------
# 2. e2e rate, verify vs opportunistic
# ----------------------------------------------------------------------------------------------

def measure_rate(workdir, ca, modes, messages, concurrency, size, repeat, warmup, timeout, reuse_time, settle):
    cert, key = ca.issue("peer", MX)
    for name in ("rate-peer", "rate-sender"):
        (workdir / name).mkdir()
    peer = conftest.Corvid(workdir / "rate-peer", {
        "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]},
        **conftest.with_domains(*[conftest.domain(d, ["box"]) for d in RATE_DOMAINS.values()]),
    })
    peer.start()
    dns = quiet(Dns())
    dns.a(MX)
    for d in RATE_DOMAINS.values():
        dns.mx(d, 10, MX)
    overrides = relay_overrides(dns, peer.port, tls={"ca_file": str(ca.pem), "domains": {
        d: mode for mode, d in RATE_DOMAINS.items()}})
    if reuse_time is not None:
        overrides["delivery"]["connection_reuse_time"] = reuse_time
    else:  # relay_overrides shortens it for tests; the rate is measured at the server's default
        del overrides["delivery"]["connection_reuse_time"]
    overrides["limits"] = {"max_connections_per_ip": max(50, 2 * concurrency)}
    sender = conftest.Corvid(workdir / "rate-sender", overrides)
    sender.start()
    runs = []
    try:
        for mode in modes:  # unmeasured: sessions, DNS cache and the peer's files warmed up
            rate_run(sender, peer, RATE_DOMAINS[mode], warmup, concurrency, size, timeout, settle)
        for rnd in range(repeat):
            # A, B, then B, A: a drift in the machine's load does not favour one mode.
            for mode in (modes if rnd % 2 == 0 else modes[::-1]):
                r = rate_run(sender, peer, RATE_DOMAINS[mode], messages, concurrency, size, timeout, settle)
                r.update(mode=mode, round=rnd + 1, reuse_time=reuse_time or "server default")
                log(f"rate {mode} round {rnd + 1}: {r['delivered_msg_s']} msg/s delivered, "
                    f"{r['intake_msg_s']} msg/s intake, load {r['loadavg_1m']}")
                runs.append(r)
        tls = {}
        for e in sender.events():
            if e.get("outcome") == "delivered":
                tls.setdefault(e.get("rcpt", "").split("@")[-1], set()).add(
                    "verified" if e.get("tls", "").endswith(" verified") else "unverified")
        if tls.get(RATE_DOMAINS["verify"], {"verified"}) != {"verified"}:
            raise SystemExit(f"verify domain delivered without verified TLS: {tls}")
    finally:
        sender.signal_and_wait(signal.SIGTERM, 30)
        peer.signal_and_wait(signal.SIGTERM, 30)
        dns.stop()
    return runs


def cpu_ticks(server):
    st = read_stat(server.proc.pid)
    if st is None:
        raise SystemExit(f"corvid {server.workdir} exited:\n{server.log_text()[-2000:]}")
    return st[1] + st[2]


def sessions(server):
    """SMTP sessions the server has ended so far (its "connection closed" log lines)."""
    return sum(1 for e in server.events() if e.get("message") == "connection closed")


def rate_run(sender, peer, domain, messages, concurrency, size, timeout, settle):
    new = peer.maildir("box", domain) / "new"
    before = count_files(new)
    cmd = [SMTP_SOURCE, "-s", str(concurrency), "-m", str(messages), "-l", str(size), "-M", HELO,
           "-f", SENDER, "-t", f"box@{domain}", f"127.0.0.1:{sender.port}"]
    cpu0 = [cpu_ticks(sender), cpu_ticks(peer)]
    sessions0 = sessions(peer)
    t0 = time.monotonic()
    src = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    t_intake = time.monotonic() - t0
    if src.returncode != 0:
        raise SystemExit(f"smtp-source failed ({src.returncode}): {src.stderr.decode()[-500:]}")
    deadline = time.monotonic() + timeout
    delivered = 0
    while time.monotonic() < deadline:
        delivered = count_files(new) - before
        if delivered >= messages:
            break
        time.sleep(0.02)
    t_done = time.monotonic() - t0
    # The idle sessions close (connection_reuse_time, 2s by default) and the last queue
    # removals finish: both belong to this run's sessions and CPU.
    time.sleep(settle)
    cpu = [(cpu_ticks(x) - c) / CLK_TCK for x, c in zip((sender, peer), cpu0)]
    if delivered < messages:
        raise SystemExit(f"{domain}: {delivered}/{messages} delivered at the peer after {timeout}s")
    return {"domain": domain, "messages": messages, "concurrency": concurrency, "size": size,
            "intake_s": round(t_intake, 3), "delivered_s": round(t_done, 3),
            "intake_msg_s": round(messages / t_intake, 1),
            "delivered_msg_s": round(delivered / t_done, 1),
            # Sessions the peer ended during the run and the settle time after it.
            "peer_sessions": sessions(peer) - sessions0,
            # CPU time (user+system) per message: less disturbed by the machine's load than
            # wall-clock rates, though cache and scheduler effects still show.
            "sender_cpu_us_per_msg": round(cpu[0] * 1e6 / messages),
            "peer_cpu_us_per_msg": round(cpu[1] * 1e6 / messages),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def fmt(v):
    return "-" if v is None else f"{v:.1f}"


def report(ttfb, runs, header):
    lines = list(header)
    if ttfb:
        lines += ["", "1. TTFB after the sender's 250 (ms), one new connection per message",
                  f"{'kind':<11} {'n':>3} {'ttfb med':>9} {'ttfb p90':>9} {'arrival med':>12} {'arrival p90':>12}"]
    summary = {}
    for kind, r in (ttfb or {}).items():
        s = {"n": len(r["ttfb_ms"]), "ttfb_median_ms": statistics.median(r["ttfb_ms"]),
             "ttfb_p90_ms": pct(r["ttfb_ms"], 90), "arrival_median_ms": statistics.median(r["arrival_ms"]),
             "arrival_p90_ms": pct(r["arrival_ms"], 90)}
        summary[kind] = s
        lines.append(f"{kind:<11} {s['n']:>3} {fmt(s['ttfb_median_ms']):>9} {fmt(s['ttfb_p90_ms']):>9} "
                     f"{fmt(s['arrival_median_ms']):>12} {fmt(s['arrival_p90_ms']):>12}")
    if runs:
        r0 = runs[0]
        lines += ["", f"2. e2e rate, smtp-source -> Corvid -> STARTTLS -> Corvid -> Maildir "
                      f"({r0['messages']} x {r0['size']} B, concurrency {r0['concurrency']}, "
                      f"connection_reuse_time {r0['reuse_time']})",
                  f"{'mode':<14} {'round':>5} {'intake msg/s':>13} {'dlv msg/s':>10} {'dlv s':>7} "
                  f"{'sessions':>8} {'snd cpu us/msg':>15} {'peer cpu us/msg':>16} {'load 1m':>8}"]
        for r in runs:
            lines.append(f"{r['mode']:<14} {r['round']:>5} {r['intake_msg_s']:>13} {r['delivered_msg_s']:>10} "
                         f"{r['delivered_s']:>7} {r['peer_sessions']:>8} {r['sender_cpu_us_per_msg']:>15} {r['peer_cpu_us_per_msg']:>16} "
                         f"{r['loadavg_1m']:>8}")
        for mode in dict.fromkeys(r["mode"] for r in runs):
            mine = [r for r in runs if r["mode"] == mode]
            med = {k: statistics.median(r[k] for r in mine)
                   for k in ("delivered_msg_s", "sender_cpu_us_per_msg", "peer_cpu_us_per_msg")}
            summary[f"rate-{mode}"] = med
            lines.append(f"median {mode:<14} {med['delivered_msg_s']} msg/s delivered, sender "
                         f"{med['sender_cpu_us_per_msg']} us/msg, peer {med['peer_cpu_us_per_msg']} us/msg")
    return "\n".join(lines), summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "corvid"))
    ap.add_argument("--samples", type=int, default=30, help="TTFB samples per kind")
    ap.add_argument("--messages", type=int, default=1000, help="messages per rate run")
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024, help="message size for smtp-source -l")
    ap.add_argument("--repeat", type=int, default=5, help="rate rounds (each runs every mode)")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured messages per mode before the rate rounds")
    ap.add_argument("--modes", default="opportunistic,verify")
    ap.add_argument("--reuse-time", help='rate: the sender\'s delivery.connection_reuse_time, e.g. "0s" '
                    "for a new connection and TLS handshake per delivery (default: the server's)")
    ap.add_argument("--settle", type=float, default=2.5,
                    help="rate: seconds after the last delivery before sessions and CPU are read "
                         "(longer than connection_reuse_time)")
    ap.add_argument("--skip", choices=("ttfb", "rate"), help="leave out one part")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", help="write the samples and summary to this file")
    args = ap.parse_args()
    binary = Path(args.binary).resolve()
    if not binary.exists():
        raise SystemExit(f"{binary}: not found (cargo build --release -p corvid)")
    conftest.BIN = binary
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in RATE_DOMAINS for m in modes):
        raise SystemExit(f"--modes: choose from {', '.join(RATE_DOMAINS)}")
    workdir = Path(tempfile.mkdtemp(prefix="tlsbench-"))
    load0 = os.getloadavg()
    with open(binary, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:12]
    mtime = datetime.datetime.fromtimestamp(binary.stat().st_mtime, datetime.timezone.utc)
    try:
        (workdir / "ca").mkdir()
        ca = CaFiles(workdir / "ca")
        ttfb = measure_ttfb(workdir, ca, args.samples) if args.skip != "ttfb" else None
        runs = (measure_rate(workdir, ca, modes, args.messages, args.concurrency, args.size, args.repeat,
                             args.warmup, args.timeout, args.reuse_time,
                             args.settle) if args.skip != "rate" else [])
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load1 = os.getloadavg()
    header = [f"corvid {binary} sha256 {sha} built {mtime:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs",
              f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
              f"at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (shared machine: wall-clock numbers are noisy)"]
    text, summary = report(ttfb, runs, header)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"binary": str(binary), "sha256": sha, "loadavg_start": load0, "loadavg_end": load1,
                       "ttfb": ttfb, "rate_runs": runs, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
