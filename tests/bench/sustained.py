"""Sustained mode of the load benchmark (tests/bench/load.py --sustained SECONDS): smtp-source
runs in a loop against one Corvid for that long, and the queue depth is printed once a second,
then while the queue drains; with whether flow control engaged (issue 17: "queue depth bounded
in the sustained run"). A Postfix instance gets the same run (its backlog from smtp-source's
DATA counter and its Maildir, its queue files in place of the gauge), so that the two queue
depths can be read side by side. Python 3 standard library only."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.request

from benchutil import HELO, SENDER, SMTP_SOURCE, count_files, log, read_pss_kb, set_aside

# Postfix's queues that hold a message not yet delivered (queue_directory subdirectories).
POSTFIX_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

# The flow control log messages of host/server/src/flow.rs, by the state they enter.
FLOW_MESSAGES = (
    ("flow control on", "delay"),
    ("flow control off", "open"),
    ("flow control: queue backlog over the hard limit", "451"),
)
# Defaults of host/server/src/flow.rs (FlowControl::default), shown when no option sets them.
FLOW_DEFAULTS = {"flow_delay_backlog": "10000", "flow_delay": '"1s"', "flow_hard_backlog": "50000"}
METRIC_RE = r"^{name}(?:_total)?(?:\{{{labels}[^}}]*\}})?\s+([0-9.eE+-]+)\s*$"


def scrape(port):
    """The text of GET /metrics, or None (no endpoint, or it did not answer within 1 s)."""
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return r.read().decode("utf-8", "replace")
    except OSError:
        return None


def metric(text, name, labels=""):
    """The value of the first sample of `name` (with `labels` a prefix of its label set)."""
    if text is None:
        return None
    m = re.search(METRIC_RE.format(name=re.escape(name), labels=re.escape(labels)), text, flags=re.M)
    return float(m.group(1)) if m else None


def metrics_port_from_log(server):
    """The metrics endpoint's port from Corvid's "metrics endpoint listening" log line."""
    if server.metrics_port:
        return server.metrics_port
    with open(server.log_path, errors="replace") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("message") == "metrics endpoint listening":
                m = re.search(r":(\d+)$", str(ev.get("address", "")))
                if m:
                    server.metrics_port = int(m.group(1))
    return server.metrics_port


class LogFollower:
    """Reads Corvid's JSON log from an offset on, counting the flow control transitions."""

    def __init__(self, path, offset):
        self.path, self.offset = path, offset
        self.state = "open"
        self.counts = {label: 0 for label, _ in FLOW_MESSAGES}
        self.first = {}  # label -> seconds from the start when first seen
        self.partial = b""

    def poll(self, t):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()  # an unfinished last line waits for the next poll
        for line in lines:
            try:
                msg = str(json.loads(line).get("message", ""))
            except ValueError:
                continue
            for label, state in FLOW_MESSAGES:
                if msg.startswith(label):
                    self.counts[label] += 1
                    self.first.setdefault(label, round(t, 1))
                    self.state = state


class CorvidProbe:
    """What a sample reads from a Corvid: /metrics (accepted counter, queue gauge) and its log
    (flow control state)."""

    def __init__(self, server):
        self.server = server
        self.port = metrics_port_from_log(server)
        self.acc0 = metric(scrape(self.port), "corvid_messages_accepted")
        if self.acc0 is None:
            log("no corvid_messages_accepted from /metrics: accepted = smtp-source's DATA counter "
                "(it also counts DATA commands that were refused)")
        self.follower = LogFollower(server.log_path, server.log_offset)

    def sample(self, t, loop):
        """(accepted, queue gauge or None, flow state) at time t."""
        text = scrape(self.port)
        acc = metric(text, "corvid_messages_accepted")
        accepted = int(acc - self.acc0) if (acc is not None and self.acc0 is not None) else loop.data_done()
        self.follower.poll(t)
        return accepted, metric(text, "corvid_queue_messages", 'state="active"'), self.follower.state

    def pss_kb(self):
        return read_pss_kb(self.server.proc.pid)


class PostfixProbe:
    """The same for the private Postfix: accepted is smtp-source's DATA counter, the gauge the
    files in its queue directories (a message not yet delivered is one file there), and its
    flow control (`in_flow_delay`, on by default) logs nothing: its state is shown as `-`."""

    def __init__(self, server):
        self.server = server
        self.follower = None
        self.queues = [os.path.join(server.dir, "spool", q) for q in POSTFIX_QUEUES]

    def sample(self, t, loop):
        files = 0
        for q in self.queues:
            for _, _, names in os.walk(q):
                files += len(names)
        return loop.data_done(), files, "-"

    def pss_kb(self):
        return sum(read_pss_kb(pid) for pid in self.server.pids())


class SourceLoop(threading.Thread):
    """smtp-source runs of `batch` messages, one after the other, until stop() (which ends the
    current run). -A: a 451 (or a delayed reply's timeout) does not end smtp-source."""

    def __init__(self, server, conc, size, batch):
        super().__init__(daemon=True)
        self.cmd = [SMTP_SOURCE, "-A", "-c", "-s", str(conc), "-m", str(batch), "-l", str(size),
                    "-M", HELO, "-f", SENDER, "-t", server.rcpt, f"127.0.0.1:{server.port}"]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.proc = None
        self.done_before = 0  # DATA completions of the finished runs
        self.current = 0      # of the run going on (smtp-source -c's counter)
        self.runs = 0
        self.err_lines = []

    def data_done(self):
        with self.lock:
            return self.done_before + self.current

    def run(self):
        while not self.stopping.is_set():
            proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            with self.lock:
                self.proc = proc
                if self.stopping.is_set():  # stop() came while this run was being started
                    proc.terminate()
            errs = []
            t = threading.Thread(target=lambda: errs.extend(proc.stderr.read().splitlines()), daemon=True)
            t.start()
            while True:  # the counter is written as "\r<n>" as each DATA completes
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                nums = re.findall(rb"(\d+)", chunk)
                if nums:
                    with self.lock:
                        self.current = int(nums[-1])
            proc.wait()
            t.join(timeout=5)
            with self.lock:
                self.done_before += self.current
                self.current = 0
                self.runs += 1
                self.err_lines.extend(l.decode("utf-8", "replace") for l in errs if l.strip())

    def stop(self):
        with self.lock:
            self.stopping.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        self.join(timeout=30)


def run_sustained(server, seconds, conc, size, batch, drain_timeout, flow):
    """Drives `server` for `seconds`, then waits (at most drain_timeout) for the queue to drain.
    Prints a line a second; returns a dict for the JSON output."""
    set_aside(server.maildir_new)
    server.mark_log()
    postfix = server.name == "postfix"
    probe = PostfixProbe(server) if postfix else CorvidProbe(server)
    shown = ", ".join(f"{k}={flow.get(k, FLOW_DEFAULTS[k] + ' (default)')}" for k in FLOW_DEFAULTS)
    if postfix:
        shown = "Postfix defaults (in_flow_delay = 1s); backlog = smtp-source DATA count - Maildir, gauge = queue files"
    print(f"\n# sustained: {server.name}, {seconds:g} s at concurrency {conc}, {size} byte messages, "
          f"smtp-source runs of {batch}; {shown}")
    print(f"{'t_s':>5} {'phase':<6} {'accepted':>8} {'delivered':>9} {'backlog':>7} {'queue_gauge':>11} "
          f"{'in/s':>6} {'dlv/s':>6} {'pss_MB':>6}  flow", flush=True)
    loop = SourceLoop(server, conc, size, batch)
    samples = []
    t0 = time.monotonic()
    loop.start()
    try:
        prev_acc = prev_dlv = 0
        phase = "load"
        tick = 0
        while True:
            tick += 1
            time.sleep(max(0.0, t0 + tick - time.monotonic()))  # once a second, without drift
            t = time.monotonic() - t0
            if phase == "load" and t >= seconds:
                loop.stop()
                phase = "drain"
            accepted, gauge, flow_state = probe.sample(t, loop)
            delivered = count_files(server.maildir_new)
            pss_mb = probe.pss_kb() / 1024
            s = {"t": round(t, 1), "phase": phase, "accepted": accepted, "delivered": delivered,
                 "backlog": accepted - delivered, "queue_gauge": gauge, "flow": flow_state,
                 "pss_mb": round(pss_mb, 1)}
            samples.append(s)
            print(f"{t:>5.0f} {phase:<6} {accepted:>8} {delivered:>9} {accepted - delivered:>7} "
                  f"{'-' if gauge is None else int(gauge):>11} {accepted - prev_acc:>6} "
                  f"{delivered - prev_dlv:>6} {pss_mb:>6.1f}  {flow_state}", flush=True)
            prev_acc, prev_dlv = accepted, delivered
            if phase == "drain" and (delivered >= accepted or t >= seconds + drain_timeout):
                break
            if not server.alive():
                print(f"{'':>6}{server.name} exited")
                break
    finally:
        loop.stop()  # also on Ctrl-C: no smtp-source is left running
    loaded = [s for s in samples if s["phase"] == "load"]
    peak = max((s["backlog"] for s in samples), default=0)
    # The backlog of the last third against the middle third: still growing at the end, or flat.
    third = max(1, len(loaded) // 3)
    mid = max((s["backlog"] for s in loaded[third:2 * third]), default=0)
    end = max((s["backlog"] for s in loaded[-third:]), default=0)
    hard = int(str(flow.get("flow_hard_backlog", FLOW_DEFAULTS["flow_hard_backlog"])))
    tempfails = sum(1 for l in loop.err_lines if re.search(r"\b451\b", l))
    total_acc = samples[-1]["accepted"] if samples else 0
    load_s = min(seconds, loaded[-1]["t"]) if loaded else seconds
    res = {
        "server": server.name, "mode": "sustained", "seconds": seconds, "concurrency": conc,
        "size": size, "flow_settings": dict(FLOW_DEFAULTS, **flow),
        "accepted": total_acc, "delivered": samples[-1]["delivered"] if samples else 0,
        "intake_msg_s": round(loaded[-1]["accepted"] / load_s, 1) if loaded and load_s else 0.0,
        "delivered_msg_s_under_load": round(loaded[-1]["delivered"] / load_s, 1) if loaded and load_s else 0.0,
        "peak_backlog": peak, "peak_pss_mb": max((s["pss_mb"] for s in samples), default=0.0),
        "backlog_middle_third_max": mid, "backlog_last_third_max": end,
        "drained": bool(samples) and samples[-1]["delivered"] >= samples[-1]["accepted"],
        "smtp_source_runs": loop.runs, "smtp_source_451_lines": tempfails,
        "smtp_source_error_count": len(loop.err_lines), "smtp_source_errors": loop.err_lines[:20],
        "samples": samples,
    }
    follower = probe.follower
    if follower is not None:
        res.update(flow_log_lines=follower.counts, flow_first_seen_s=follower.first)
    print(f"{'':>6}intake {res['intake_msg_s']:.0f} msg/s, delivered under load "
          f"{res['delivered_msg_s_under_load']:.0f} msg/s; peak backlog {peak} (middle third {mid}, "
          f"last third {end}); drained: {'yes' if res['drained'] else 'NO'}; peak PSS {res['peak_pss_mb']:.1f} MB")
    if follower is not None:
        engaged = follower.counts["flow control on"] + follower.counts[FLOW_MESSAGES[2][0]]
        print(f"{'':>6}flow control engaged: {'yes' if engaged else 'no'} (log: "
              + ", ".join(f"\"{k}\" x{v}" + (f" first at {follower.first[k]}s" if k in follower.first else "")
                          for k, v in follower.counts.items())
              + f"); 451 replies seen by smtp-source: {tempfails}; smtp-source error lines: {len(loop.err_lines)}")
    bounded = peak <= hard + conc and end <= max(mid, 1) * 1.1 + conc
    if postfix:
        # Postfix has no hard limit here: only whether its backlog stopped growing.
        bounded = end <= max(mid, 1) * 1.1 + conc
        print(f"{'':>6}[postfix: backlog not growing in the last third: {'yes' if bounded else 'NO'}; "
              f"smtp-source error lines: {len(loop.err_lines)}]", flush=True)
    else:
        print(f"{'':>6}[target: queue depth bounded (peak <= flow_hard_backlog + concurrency, and not "
              f"growing in the last third): {'met' if bounded else 'MISSED'}]", flush=True)
    for line in loop.err_lines[:3]:
        print(f"{'':>6}smtp-source: {line}")
    res["bounded"] = bounded
    return res
