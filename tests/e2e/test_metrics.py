"""The Prometheus endpoint ([metrics] listen): /metrics during a small load shows every family
of docs/metrics.md with exactly the labels the doc lists, and the values move; /healthz says
when the server is ready; the HTTP server stays small (404, 405, 400)."""

import re
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import IO_TIMEOUT, REPO, bundled_plugins
from outbound_support import free_port

DOC = REPO / "docs" / "metrics.md"
LOAD = 12  # messages accepted in the load
BODY = b"Subject: metrics\r\n\r\n" + b"x" * 1000 + b"\r\n"


def documented() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels) from the tables of docs/metrics.md."""
    out = {}
    row = re.compile(r"^\| `(corvid_[a-z0-9_]+)` \| (counter|gauge|histogram) \|([^|]*)\|")
    for line in DOC.read_text().splitlines():
        m = row.match(line)
        if m:
            labels = set(re.findall(r"`([a-z_]+)`", m.group(3)))
            out[m.group(1)] = (m.group(2), labels)
    return out


class Scrape:
    """One /metrics answer: the families (`# TYPE`) and the samples, by family."""

    SAMPLE = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*)(?:\{(.*)\})? (\S+)$")
    LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

    def __init__(self, text: str):
        assert text.endswith("# EOF\n"), text[-200:]
        self.types: dict[str, str] = {}
        self.samples: dict[str, list[tuple[dict, float]]] = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                self.types[name] = kind
                self.samples.setdefault(name, [])
            elif line.startswith("#") or not line:
                continue
            else:
                m = self.SAMPLE.match(line)
                assert m, f"not a sample line: {line!r}"
                name, labels, value = m.groups()
                family = self.family_of(name)
                self.samples[family].append((dict(self.LABEL.findall(labels or "")), float(value)))

    def family_of(self, sample: str) -> str:
        for suffix in ("_total", "_bucket", "_sum", "_count", ""):
            if suffix and sample.endswith(suffix) and sample[: -len(suffix)] in self.types:
                return sample[: -len(suffix)]
        assert sample in self.types, f"sample {sample} of no family"
        return sample

    def value(self, family: str, **labels) -> float:
        """Sum of the family's samples (without histogram buckets) matching `labels`."""
        total = 0.0
        for l, v in self.samples.get(family, []):
            if "le" in l:
                continue
            if all(l.get(k) == want for k, want in labels.items()):
                total += v
        return total


def http_get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=IO_TIMEOUT) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def metrics_port(srv) -> int:
    e = srv.wait_log(lambda e: e.get("message") == "metrics endpoint listening", this_run=True)
    return int(str(e["address"]).rsplit(":", 1)[1])


def scrape(port: int) -> Scrape:
    status, ctype, body = http_get(port, "/metrics")
    assert status == 200, body
    assert ctype.startswith("application/openmetrics-text"), ctype
    return Scrape(body)


def metrics_server(make_server):
    plugins = [p for p in bundled_plugins() if p["name"] in ("rate-limit", "recipient-list")]
    for p in plugins:
        if p["name"] == "rate-limit":
            # The load's messages pass; the extra ones of one connection are refused.
            p["config"]["messages_per_window"] = LOAD + 3
    closed = free_port()  # nothing listens here: mail routed to it is deferred
    return make_server({
        "metrics": {"listen": "127.0.0.1:0"},
        "plugin": plugins,
        "auth": {"failure_delay": "100ms"},
        "server": {"relay_networks": ["127.0.0.0/8"]},
        "dsn": {"notify_success_from": "anyone"},
        "delivery": {"route": [{"domain": "later.test", "to": f"smtp://127.0.0.1:{closed}"}],
                     "timeouts": {"connect": "2s"}},
    })


def test_metrics_families_match_the_doc_and_move_under_load(make_server):
    srv = metrics_server(make_server)
    port = metrics_port(srv)
    assert http_get(port, "/healthz")[:1] == (200,)
    before = scrape(port)

    # The load: accepted messages, one refused at the end of DATA (a bare LF, 554 5.5.2), a
    # recipient the recipient-list plugin refuses, one deferred message (closed port), one
    # success report, a failed AUTH over STARTTLS, and the rate limit reached.
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        for _ in range(LOAD):
            s.sendmail("sender@example.org", ["alice@corvid.test"], BODY)
        code, _ = s.rcpt("<blocked@corvid.test>") if s.mail("sender@example.org")[0] == 250 else (0, "")
        assert code == 550
        s.rset()
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<sender@example.org>", 250)
        c.expect("RCPT TO:<bob@corvid.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: bare\r\n\r\nline\nend\r\n.\r\n")
        assert c.reply().code == 554
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<bob@corvid.test>", 250)
        c.expect("RCPT TO:<alice@corvid.test> NOTIFY=SUCCESS", 250)
        c.expect("RCPT TO:<carol@later.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: report\r\n\r\nplease\r\n.\r\n")
        assert c.reply().code == 250
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=IO_TIMEOUT) as s:
        s.starttls(context=ctx)
        s.ehlo()
        try:
            s.login("nobody@corvid.test", "wrong")
            raise AssertionError("AUTH succeeded")
        except smtplib.SMTPAuthenticationError as e:
            assert e.smtp_code == 535
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        refused = 0
        for _ in range(5):
            try:
                s.sendmail("sender@example.org", ["bob@corvid.test"], BODY)
            except smtplib.SMTPException:
                refused += 1
                s.rset()
        assert refused > 0, "the rate limit never applied"
    srv.wait_mail("alice", LOAD + 1)
    srv.wait_log(lambda e: e.get("message") == "recipient deferred")

    # The queue gauges are sampled every 5 s: wait for the deferred message to be seen.
    deadline = time.monotonic() + 15
    while True:
        after = scrape(port)
        if after.value("corvid_queue_messages", state="active") >= 1 and \
                after.value("corvid_queue_oldest_message_age_seconds") >= 1 and \
                after.value("corvid_dsns") >= 1:
            break
        assert time.monotonic() < deadline, "queue gauges or DSN count never moved"
        time.sleep(0.5)

    # Every family exposed is documented, with exactly the documented labels.
    doc = documented()
    assert len(doc) >= 20, doc
    for family, kind in after.types.items():
        if family.startswith("corvid_plugin_metric_"):
            continue  # defined by plugins; checked below
        assert family in doc, f"{family} is not in docs/metrics.md"
        assert kind == doc[family][0], f"{family}: {kind} exposed, {doc[family][0]} documented"
        for labels, _ in after.samples[family]:
            names = set(labels) - {"le"}
            assert names == doc[family][1], f"{family}: labels {names}, documented {doc[family][1]}"
    # ... and every documented family is exposed after this load.
    missing = set(doc) - set(after.types)
    assert not missing, f"documented but not exposed: {sorted(missing)}"

    def grew(family: str, by: float = 1, **labels) -> None:
        a, b = before.value(family, **labels), after.value(family, **labels)
        assert b - a >= by, f"{family}{labels}: {a} -> {b}, expected +{by}"

    grew("corvid_smtp_connections", LOAD and 4, listener="smtp")
    grew("corvid_smtp_connections", 1, listener="submission")
    grew("corvid_smtp_transactions", LOAD + 1, listener="smtp", **{"class": "2xx", "enhanced": "2.0.0"})
    grew("corvid_smtp_transactions", 1, listener="smtp", **{"class": "5xx", "enhanced": "5.5.2"})
    grew("corvid_messages_accepted", LOAD + 1)
    grew("corvid_message_bytes_accepted", (LOAD + 1) * len(BODY) // 2)
    grew("corvid_tls_handshakes", 1, listener="submission", version="TLSv1.3")
    grew("corvid_auth_failures", 1, listener="submission")
    grew("corvid_deliveries", LOAD + 1, outcome="delivered", destination="local")
    grew("corvid_deliveries", 1, outcome="deferred", destination="smtp")
    grew("corvid_dsns", 1)
    grew("corvid_plugin_calls", 1, plugin="recipient-list", stage="rcpt")
    grew("corvid_plugin_outcomes", 1, plugin="recipient-list", stage="rcpt", outcome="reject")
    grew("corvid_plugin_hook_duration_seconds", 1, plugin="recipient-list", stage="rcpt")
    # Real buckets (1 µs .. 5 s, then +Inf), cumulative, and every call within the 5 s bound.
    rows = [(l["le"], v) for l, v in after.samples["corvid_plugin_hook_duration_seconds"]
            if l.get("plugin") == "recipient-list" and l.get("stage") == "rcpt" and "le" in l]
    assert len(rows) == 17 and rows[-1][0] == "+Inf", rows
    counts = [v for _, v in rows]
    assert counts == sorted(counts) and counts[-2] == counts[-1] >= 1, str(rows)
    assert after.value("corvid_plugin_engine_memory_bytes", kind="limit") > 0
    # the bundled chain keeps pooled instances: some are alive, never more than the limit
    alive = after.value("corvid_plugin_engine_instances", kind="used")
    assert 1 <= alive <= after.value("corvid_plugin_engine_instances", kind="limit"), alive
    assert after.value("corvid_plugin_instantiations", plugin="recipient-list") >= 1
    # The metric the rate-limit plugin records through the `metrics` import, under its name.
    family = "corvid_plugin_metric_rate_limit_rate_limited"
    assert after.types.get(family) == "counter", sorted(after.types)
    assert after.value(family, plugin="rate-limit") >= 1


def test_healthz_and_the_small_http_server(make_server):
    srv = make_server({"metrics": {"listen": "127.0.0.1:0"}})
    port = metrics_port(srv)
    status, _, body = http_get(port, "/healthz")
    assert (status, body) == (200, "ok\n")
    assert http_get(port, "/nothing")[0] == 404
    assert raw_http(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw_http(port, b"GET /metrics\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # A request head that never ends is cut at 8 KiB and answered 400, not read forever.
    assert raw_http(port, b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n") \
        .startswith(b"HTTP/1.1 400 ")
    head = raw_http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), head[-100:]
    # Without [metrics] nothing listens (off by default): the server's log never says so.
    plain = make_server()
    assert not [e for e in plain.events() if e.get("message") == "metrics endpoint listening"]


def test_healthz_is_not_ready_while_the_server_stops(make_server):
    srv = make_server({"metrics": {"listen": "127.0.0.1:0"}, "limits": {"shutdown_grace": "5s"}})
    port = metrics_port(srv)
    # A session in the middle of DATA holds the shutdown for the grace period.
    c = srv.connect()
    c.greet()
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<alice@corvid.test>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: slow\r\n\r\n")
    assert srv.proc is not None
    srv.proc.send_signal(15)
    srv.wait_log(lambda e: e.get("message") == "shutting down", this_run=True)
    deadline = time.monotonic() + 5
    while http_get(port, "/healthz")[0] != 503:
        assert time.monotonic() < deadline, "/healthz still 200 during the shutdown"
        time.sleep(0.1)
    c.send(b"done\r\n.\r\n")
    assert c.reply().code == 250
    c.close()
    assert srv.proc.wait(timeout=20) == 0
