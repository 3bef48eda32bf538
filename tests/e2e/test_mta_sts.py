"""MTA-STS (RFC 8461) on the sending side, with real parts on loopback: the `_mta-sts` TXT
records, MX and A records from a dnslib server; the policy files from a Python HTTPS server
whose certificate comes from a test CA made at test time (openssl, no key committed); the MX
peers are an SMTP server with STARTTLS that picks its certificate by SNI, so one MX name gets
the right certificate and another a certificate for a wrong name.

Cases: enforce with a good certificate delivers; enforce with a wrong certificate or an MX the
policy does not name defers 4.7.5; testing delivers anyway; a policy that cannot be fetched
leaves the domain without policy; a cached policy still applies after a restart during a DNS
outage; two domains sharing one MX, only one with enforce, each get their own fate."""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from outbound_support import DnsServer, relay_overrides
from test_outbound_tls import CaFiles, TlsPeer, openssl

DOMAINS = ["good.test", "bad.test", "stray.test", "trial.test", "nofetch.test", "cache.test",
           "shared.test", "other.test"]


def message(rcpt: str) -> bytes:
    return f"From: alice@corvid.test\r\nTo: {rcpt}\r\nSubject: sts {rcpt}\r\n\r\nhello\r\n".encode()


class Dns(DnsServer):
    """The loopback DNS server with TXT records, and names that answer SERVFAIL."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        inner = self.server.server.resolver
        outer = self
        resolve = inner.resolve

        def resolve_or_fail(request, handler):
            if str(request.q.qname).lower() in outer.failing:
                reply = request.reply()
                reply.header.rcode = outer._dnslib.RCODE.SERVFAIL
                return reply
            return resolve(request, handler)

        inner.resolve = resolve_or_fail

    def txt(self, name: str, text: str) -> "Dns":
        d = self._dnslib
        rr = d.RR(self._key(name), d.QTYPE.TXT, rdata=d.TXT([text.encode()]), ttl=60)
        self.records.setdefault(self._key(name), []).append(rr)
        return self

    def fail(self, name: str) -> None:
        self.failing.add(self._key(name))


class PolicyServer:
    """HTTPS on loopback serving `/.well-known/mta-sts.txt` by Host; records the requests."""

    def __init__(self, cert, key) -> None:
        self.policies: dict[str, str] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                outer.requests.append(f"{host}{self.path}")
                body = outer.policies.get(host)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, domain: str, mode: str, mx: list[str], max_age: int = 86400) -> None:
        lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], f"max_age: {max_age}"]
        self.policies[f"mta-sts.{domain}"] = "\r\n".join(lines) + "\r\n"

    def fetched(self, domain: str) -> int:
        return sum(1 for r in self.requests if r.startswith(f"mta-sts.{domain}/"))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def issue_many(ca: CaFiles, label: str, names: list[str]):
    """A certificate from the test CA for several DNS names."""
    san = "subjectAltName=" + ",".join(f"DNS:{n}" for n in names)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{label}.key", "-out", f"{label}.csr", "-subj", f"/CN={names[0]}",
            "-addext", san, cwd=ca.dir)
    openssl("ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
            "-in", f"{label}.csr", "-out", f"{label}.pem", "-days", "2", cwd=ca.dir)
    return ca.dir / f"{label}.pem", ca.dir / f"{label}.key"


@pytest.fixture
def world(tmp_path):
    """CA, DNS, policy server and the MX peer; `world.certs[name]` chooses what the peer
    presents for an SNI name (default: a certificate naming that MX host)."""
    d = tmp_path / "ca"
    d.mkdir()
    ca = CaFiles(d)
    dns = Dns()
    policy = PolicyServer(*issue_many(ca, "policy", [f"mta-sts.{x}" for x in DOMAINS]))
    for x in DOMAINS:
        dns.a(f"mta-sts.{x}")
    peer = TlsPeer(*ca.issue("mx-default", "mx.default.test"))
    contexts: dict[str, ssl.SSLContext] = {}

    def present(mx: str, cert_key) -> None:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_cert_chain(*cert_key)
        contexts[mx] = c

    def pick(sslobj, name, _ctx):
        if name in contexts:
            sslobj.context = contexts[name]

    peer.ctx.sni_callback = pick

    class World:
        pass

    w = World()
    w.ca, w.dns, w.policy, w.peer, w.present = ca, dns, policy, peer, present
    yield w
    policy.stop()
    peer.stop()
    dns.stop()


def sender_for(make_server, w, name="snd"):
    overrides = relay_overrides(w.dns, w.peer.port, tls={"ca_file": str(w.ca.pem)},
                                mta_sts={"port": w.policy.port, "fetch_timeout": "5s"})
    return make_server(overrides, name=name)


def mx_domain(w, domain: str, mx: str, cert: str = "good") -> None:
    """`domain` has MX `mx` (127.0.0.1); the peer shows a valid certificate for `mx`
    (`good`) or one for another name (`wrong`)."""
    w.dns.mx(domain, 10, mx).a(mx)
    name = mx if cert == "good" else "mx.elsewhere.test"
    w.present(mx, w.ca.issue(mx.replace(".", "-") + "-" + cert, name))


def delivered(w, rcpt: str) -> bool:
    return any(f"Subject: sts {rcpt}".encode() in m for m in w.peer.messages)


def deferred_reason(server, rcpt: str) -> str:
    e = server.wait_log(lambda e: e.get("rcpt") == rcpt and e.get("message") == "recipient deferred")
    return e.get("reason", "")


def done(server, rcpt: str) -> dict:
    return server.wait_log(lambda e: e.get("rcpt") == rcpt and e.get("outcome") == "delivered")


def queue_show(server, qid: str) -> dict:
    r = server.cli("queue", "--config", str(server.config_path), "show", qid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.split("--- headers ---")[0])


def test_enforce_delivers_over_verified_tls_and_defers_a_wrong_certificate(make_server, world):
    w = world
    mx_domain(w, "good.test", "mx.good.test")
    mx_domain(w, "bad.test", "mx.bad.test", cert="wrong")
    for d in ("good.test", "bad.test"):
        w.dns.txt(f"_mta-sts.{d}", "v=STSv1; id=20261207T000000;")
        w.policy.publish(d, "enforce", [f"mx.{d}"])
    s = sender_for(make_server, w)
    s.send(message("x@good.test"), sender="alice@corvid.test", rcpts=("x@good.test",))
    e = done(s, "x@good.test")
    assert e.get("tls", "").endswith(" verified"), e
    assert delivered(w, "x@good.test")
    qid = s.send(message("x@bad.test"), sender="alice@corvid.test", rcpts=("x@bad.test",))
    reason = deferred_reason(s, "x@bad.test")
    assert reason.startswith("4.7.5 "), reason
    assert not delivered(w, "x@bad.test")
    # The attempt's TLS record in the queue says which policy refused and why.
    [r] = queue_show(s, qid)["recipients"]
    tls = r["tls"]
    assert tls["policy"] == "mta-sts" and tls["policy_domain"] == "bad.test", tls
    assert tls["source"].startswith("enforce, "), tls
    assert tls["verified"] is False and tls["failure"], tls
    assert w.policy.fetched("good.test") == 1 and w.policy.fetched("bad.test") == 1


def test_enforce_defers_when_no_mx_is_in_the_policy(make_server, world):
    w = world
    mx_domain(w, "stray.test", "mx.stray.test")
    w.dns.txt("_mta-sts.stray.test", "v=STSv1; id=1")
    w.policy.publish("stray.test", "enforce", ["mx.elsewhere.test", "*.stray-other.test"])
    s = sender_for(make_server, w)
    qid = s.send(message("x@stray.test"), sender="alice@corvid.test", rcpts=("x@stray.test",))
    reason = deferred_reason(s, "x@stray.test")
    assert reason.startswith("4.7.5 ") and "mx.stray.test" in reason and "MTA-STS" in reason, reason
    assert not delivered(w, "x@stray.test")
    # The valid certificate does not help: the MX is never contacted.
    assert not any("stray" in c for c in w.peer.commands), w.peer.commands
    [r] = queue_show(s, qid)["recipients"]
    assert r["tls"]["policy"] == "mta-sts" and "not in the MTA-STS policy" in r["tls"]["failure"], r


def test_testing_mode_delivers_despite_a_wrong_certificate(make_server, world):
    w = world
    mx_domain(w, "trial.test", "mx.trial.test", cert="wrong")
    w.dns.txt("_mta-sts.trial.test", "v=STSv1; id=1")
    w.policy.publish("trial.test", "testing", ["mx.trial.test"])
    s = sender_for(make_server, w)
    s.send(message("x@trial.test"), sender="alice@corvid.test", rcpts=("x@trial.test",))
    e = done(s, "x@trial.test")
    assert " unverified (" in e.get("tls", ""), e
    assert delivered(w, "x@trial.test")
    assert w.policy.fetched("trial.test") == 1


def test_a_policy_that_cannot_be_fetched_is_no_policy(make_server, world):
    w = world
    mx_domain(w, "nofetch.test", "mx.nofetch.test", cert="wrong")
    # The record is published, the policy file is not (404).
    w.dns.txt("_mta-sts.nofetch.test", "v=STSv1; id=1")
    s = sender_for(make_server, w)
    s.send(message("x@nofetch.test"), sender="alice@corvid.test", rcpts=("x@nofetch.test",))
    done(s, "x@nofetch.test")
    assert delivered(w, "x@nofetch.test")
    e = s.wait_log(lambda e: e.get("message") == "MTA-STS policy fetch failed")
    assert "404" in e.get("error", ""), e
    assert w.policy.fetched("nofetch.test") >= 1


def test_a_cached_policy_holds_through_a_restart_and_a_dns_outage(make_server, world):
    w = world
    w.dns.mx("cache.test", 10, "mx.cache.test").a("mx.cache.test")
    good = w.ca.issue("cache-good", "mx.cache.test")
    w.present("mx.cache.test", good)
    w.dns.txt("_mta-sts.cache.test", "v=STSv1; id=1")
    w.policy.publish("cache.test", "enforce", ["mx.cache.test"])
    s = sender_for(make_server, w)
    s.send(message("a@cache.test"), sender="alice@corvid.test", rcpts=("a@cache.test",))
    done(s, "a@cache.test")
    s.stop()
    # Now the TXT lookup fails, the policy server has nothing, and the MX shows a wrong
    # certificate: without the cached enforce policy this would go out unverified.
    w.dns.fail("_mta-sts.cache.test")
    w.policy.policies.clear()
    w.present("mx.cache.test", w.ca.issue("cache-wrong", "mx.elsewhere.test"))
    s.restart()
    s.send(message("b@cache.test"), sender="alice@corvid.test", rcpts=("b@cache.test",))
    reason = deferred_reason(s, "b@cache.test")
    assert reason.startswith("4.7.5 "), reason
    assert delivered(w, "a@cache.test") and not delivered(w, "b@cache.test")
    assert w.policy.fetched("cache.test") == 1


def test_two_domains_sharing_an_mx_each_follow_their_own_policy(make_server, world):
    """KumoMTA#484: the policy is the recipient domain's, not the MX host's."""
    w = world
    mx_domain(w, "shared.test", "mx.shared.test", cert="wrong")
    w.dns.mx("other.test", 10, "mx.shared.test")
    w.dns.txt("_mta-sts.shared.test", "v=STSv1; id=1")
    w.policy.publish("shared.test", "enforce", ["mx.shared.test"])
    s = sender_for(make_server, w)
    # One message for both: the recipients are split by domain.
    s.send(message("both"), sender="alice@corvid.test", rcpts=("x@shared.test", "y@other.test"))
    reason = deferred_reason(s, "x@shared.test")
    assert reason.startswith("4.7.5 "), reason
    e = done(s, "y@other.test")
    assert " unverified (" in e.get("tls", ""), e
    rcpts = [c for c in w.peer.commands if c.upper().startswith("RCPT")]
    assert any("y@other.test" in c for c in rcpts), rcpts
    assert not any("x@shared.test" in c for c in rcpts), rcpts
    # And in the other order, with the enforce domain's policy now cached.
    s.send(message("again"), sender="alice@corvid.test", rcpts=("y@other.test", "x@shared.test"))
    deadline = time.monotonic() + 15
    while len([e for e in s.events() if e.get("rcpt") == "y@other.test"
               and e.get("outcome") == "delivered"]) < 2:
        assert time.monotonic() < deadline, "second message to other.test not delivered"
        time.sleep(0.1)
    rcpts = [c for c in w.peer.commands if c.upper().startswith("RCPT")]
    assert not any("x@shared.test" in c for c in rcpts), rcpts


def test_tls_rpt_report_is_mailed_to_the_rua_and_parses(make_server, world):
    """RFC 8460: the counts per policy domain go, gzip-compressed JSON in a
    multipart/report, to the `rua` of `_smtp._tls` (here a local mailbox of the sender)."""
    import email
    import gzip
    w = world
    mx_domain(w, "good.test", "mx.good.test")
    mx_domain(w, "bad.test", "mx.bad.test", cert="wrong")
    for d in ("good.test", "bad.test"):
        w.dns.txt(f"_mta-sts.{d}", "v=STSv1; id=1")
        w.policy.publish(d, "enforce", [f"mx.{d}"])
        w.dns.txt(f"_smtp._tls.{d}", "v=TLSRPTv1; rua=mailto:postmaster@corvid.test")
    overrides = relay_overrides(w.dns, w.peer.port, tls={"ca_file": str(w.ca.pem)},
                                mta_sts={"port": w.policy.port}, tls_rpt={"interval": "4s"})
    s = make_server(overrides, name="snd")
    s.send(message("x@good.test"), sender="alice@corvid.test", rcpts=("x@good.test",))
    s.send(message("x@bad.test"), sender="alice@corvid.test", rcpts=("x@bad.test",))
    done(s, "x@good.test")
    deferred_reason(s, "x@bad.test")
    files = s.wait_mail("postmaster", count=2, timeout=20)
    reports = {}
    for f in files:
        msg = email.message_from_bytes(f.read_bytes())
        assert msg.get_content_type() == "multipart/report", msg
        assert msg.get_param("report-type") == "tlsrpt"
        domain = msg["TLS-Report-Domain"]
        assert msg["Subject"].startswith(f"Report Domain: {domain} Submitter: ")
        [part] = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        assert part.get_filename().endswith(".json.gz") and f"!{domain}!" in part.get_filename()
        reports[domain] = json.loads(gzip.decompress(part.get_payload(decode=True)))
    good, bad = reports["good.test"], reports["bad.test"]
    for r in (good, bad):
        assert {"organization-name", "date-range", "contact-info", "report-id", "policies"} <= set(r)
        assert r["date-range"]["start-datetime"].endswith("Z")
    [g] = good["policies"]
    assert g["policy"]["policy-type"] == "sts" and g["policy"]["policy-domain"] == "good.test"
    assert "mode: enforce" in g["policy"]["policy-string"]
    assert g["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 0}
    [b] = bad["policies"]
    assert b["summary"]["total-successful-session-count"] == 0
    assert b["summary"]["total-failure-session-count"] >= 1
    assert b["failure-details"][0]["result-type"] == "certificate-host-mismatch", b
    assert b["failure-details"][0]["receiving-mx-hostname"] == "mx.bad.test"


def test_a_policy_host_that_never_answers_is_given_up_after_fetch_timeout(make_server, world):
    """`delivery.mta_sts.fetch_timeout` bounds the fetch (here a TCP peer that accepts and
    says nothing, not even the TLS handshake); the domain then has no policy this time."""
    import socket
    w = world
    mx_domain(w, "nofetch.test", "mx.nofetch.test")
    w.dns.txt("_mta-sts.nofetch.test", "v=STSv1; id=1")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        overrides = relay_overrides(w.dns, w.peer.port, tls={"ca_file": str(w.ca.pem)},
                                    mta_sts={"port": silent.getsockname()[1], "fetch_timeout": "1s"})
        s = make_server(overrides, name="snd")
        t0 = time.monotonic()
        s.send(message("x@nofetch.test"), sender="alice@corvid.test", rcpts=("x@nofetch.test",))
        e = s.wait_log(lambda e: e.get("message") == "MTA-STS policy fetch failed")
        assert "timed out" in e.get("error", ""), e
        done(s, "x@nofetch.test")
        assert time.monotonic() - t0 < 8
        assert delivered(w, "x@nofetch.test")
    finally:
        silent.close()
