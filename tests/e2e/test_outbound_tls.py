"""Verified outbound TLS (issue 13), against a Python SMTP peer with STARTTLS and certificates
made by the test with openssl (a test CA; a valid certificate for the right name, a
self-signed one, one for a wrong name, an expired one; no key is ever committed):
`tls = "verify"` delivers to the right one and defers the others with 4.7.5, `opportunistic`
delivers whatever the certificate, and a smart host with AUTH and a wrong certificate never
receives the password (the peer records every AUTH attempt and every byte)."""

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import run_cli
from outbound_support import DnsServer, Postfix, relay_overrides

PASSWORD = "pa55-w0rd-never-in-clear"
MESSAGE = b"From: alice@corvid.test\r\nTo: x@far.test\r\nSubject: tls\r\n\r\nhello\r\n"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class CaFiles:
    """A CA in `directory`, issuing server certificates with openssl."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Corvid e2e CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
        (directory / "index.txt").write_text("")
        (directory / "serial").write_text("1000\n")
        (directory / "ca.cnf").write_text(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
            "default_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n"
            "[p]\ncommonName = supplied\n")
        self.pem = directory / "ca.pem"

    def issue(self, label: str, name: str, kind: str = "valid") -> tuple[Path, Path]:
        """A certificate for `name`: `valid`, `expired` (2019 to 2020) or `self-signed`."""
        key, cert, csr = f"{label}.key", f"{label}.pem", f"{label}.csr"
        san = f"subjectAltName=DNS:{name}"
        if kind == "self-signed":
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}", "-addext", san,
                    cwd=self.dir)
        else:
            openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", f"/CN={name}", "-addext", san, cwd=self.dir)
            dates = (["-startdate", "20190101000000Z", "-enddate", "20200101000000Z"] if kind == "expired"
                     else ["-days", "2"])
            openssl("ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                    "-in", csr, "-out", cert, *dates, cwd=self.dir)
        return self.dir / cert, self.dir / key


class TlsPeer:
    """An SMTP server on loopback offering STARTTLS (and AUTH PLAIN LOGIN after it); records
    the commands, the raw bytes received, and the messages accepted."""

    def __init__(self, cert: Path, key: Path, auth: bool = False, requiretls: bool = False) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.auth = auth
        # Offer REQUIRETLS (RFC 8689) after STARTTLS.
        self.requiretls = requiretls
        self.commands: list[str] = []
        self.raw = b""
        self.messages: list[bytes] = []
        self.handshakes = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn) -> None:
        conn.settimeout(10)
        tls = False
        buf = b""

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    raise EOFError
                with self.lock:
                    self.raw += chunk
                buf += chunk
            out, buf = buf.split(b"\r\n", 1)
            return out.decode("utf-8", "replace")

        try:
            conn.sendall(b"220 peer.test ESMTP\r\n")
            while True:
                cmd = line()
                with self.lock:
                    self.commands.append(cmd)
                verb = cmd.split(" ")[0].upper()
                if verb == "EHLO":
                    ext = ["peer.test", "PIPELINING", "8BITMIME"]
                    ext += ["AUTH PLAIN LOGIN"] if (tls and self.auth) else []
                    ext += ["REQUIRETLS"] if (tls and self.requiretls) else []
                    ext += [] if tls else ["STARTTLS"]
                    conn.sendall("".join(f"250{'-' if i < len(ext) - 1 else ' '}{e}\r\n"
                                         for i, e in enumerate(ext)).encode())
                elif verb == "STARTTLS":
                    conn.sendall(b"220 go ahead\r\n")
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    with self.lock:
                        self.handshakes += 1
                    tls, buf = True, b""
                elif verb == "AUTH":
                    if cmd.upper().startswith("AUTH LOGIN"):
                        conn.sendall(b"334 VXNlcm5hbWU6\r\n")
                        self.commands.append(line())
                        conn.sendall(b"334 UGFzc3dvcmQ6\r\n")
                        self.commands.append(line())
                    conn.sendall(b"235 2.7.0 ok\r\n")
                elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                    conn.sendall(b"250 2.0.0 ok\r\n")
                elif verb == "DATA":
                    conn.sendall(b"354 go\r\n")
                    data = []
                    while (l := line()) != ".":
                        data.append(l)
                    with self.lock:
                        self.messages.append("\r\n".join(data).encode())
                    conn.sendall(b"250 2.0.0 stored\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"500 what\r\n")
        except (EOFError, OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def ca(tmp_path):
    d = tmp_path / "ca"
    d.mkdir()
    return CaFiles(d)


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.stop()


@pytest.fixture
def peers():
    made: list[TlsPeer] = []

    def make(cert_key, auth=False):
        p = TlsPeer(*cert_key, auth=auth)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def reasons(server, rcpt: str) -> list[str]:
    return [e.get("reason", "") for e in server.events()
            if e.get("rcpt") == rcpt and e.get("message") == "recipient deferred"]


def wait_deferred(server, rcpt: str) -> str:
    e = server.wait_log(lambda e: e.get("rcpt") == rcpt and e.get("message") == "recipient deferred")
    return e.get("reason", "")


def test_verify_delivers_to_the_right_certificate_and_defers_the_wrong_ones(make_server, ca, dns, peers):
    good = peers(ca.issue("good", "mx.far.test"))
    # The MX host's name is what counts (RFC 7672 3.2.2), so the MX case is the good one;
    # the wrong ones sit behind routes naming their host, checked the same way.
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    bad = {
        "selfsigned.test": peers(ca.issue("self", "mx.selfsigned.test", "self-signed")),
        "wrongname.test": peers(ca.issue("wrong", "mx.elsewhere.test")),
        "expired.test": peers(ca.issue("old", "mx.expired.test", "expired")),
    }
    routes = []
    for domain, peer in bad.items():
        dns.a(f"mx.{domain}")
        routes.append({"domain": domain, "to": f"smtp://mx.{domain}:{peer.port}", "tls": "verify"})
    overrides = relay_overrides(dns, good.port, routes=routes,
                                tls={"ca_file": str(ca.pem), "domains": {"far.test": "verify"}})
    sender = make_server(overrides, name="snd")
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@far.test",))
    done = sender.wait_log(lambda e: e.get("rcpt") == "x@far.test" and e.get("outcome") == "delivered")
    assert len(good.messages) == 1 and good.handshakes >= 1
    assert done.get("tls", "").endswith(" verified"), done
    for domain, peer in bad.items():
        sender.send(MESSAGE, sender="alice@corvid.test", rcpts=(f"x@{domain}",))
        reason = wait_deferred(sender, f"x@{domain}")
        assert reason.startswith("4.7.5 "), (domain, reason)
        assert peer.messages == [], f"{domain}: delivered despite a bad certificate"
        assert any(c.upper() == "STARTTLS" for c in peer.commands), peer.commands


def test_opportunistic_delivers_whatever_the_certificate(make_server, ca, dns, peers):
    peer = peers(ca.issue("self", "not-the-mx.test", "self-signed"))
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    sender = make_server(relay_overrides(dns, peer.port, tls={"ca_file": str(ca.pem)}), name="snd")
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@far.test",))
    sender.wait_queue_empty()
    assert len(peer.messages) == 1 and peer.handshakes == 1
    e = sender.wait_log(lambda e: "certificate not verified" in e.get("message", ""))
    assert e.get("verified") is False, e
    # The per-recipient record says so too.
    done = sender.wait_log(lambda e: e.get("message") == "recipient done" and e.get("rcpt") == "x@far.test")
    assert " unverified (" in done.get("tls", ""), done


def test_a_smart_host_with_auth_and_a_wrong_certificate_never_gets_the_password(make_server, ca, dns, peers):
    dns.a("relay.far.test")
    for label, kind, name in [("self", "self-signed", "relay.far.test"),
                              ("wrong", "valid", "mx.elsewhere.test"),
                              ("old", "expired", "relay.far.test")]:
        peer = peers(ca.issue(label, name, kind), auth=True)
        route = {"domain": "far.test", "to": f"smtp://relay.far.test:{peer.port}", "tls": "verify",
                 "auth": {"user": "corvid", "password": PASSWORD}}
        sender = make_server(relay_overrides(dns, routes=[route], tls={"ca_file": str(ca.pem)}), name=f"snd-{label}")
        sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@far.test",))
        reason = wait_deferred(sender, "x@far.test")
        assert reason.startswith("4.7.5 "), (label, reason)
        assert not any(c.upper().startswith("AUTH") for c in peer.commands), (label, peer.commands)
        assert PASSWORD.encode() not in peer.raw and peer.messages == [], label
        sender.stop()
    # The right certificate: the password goes, once, inside TLS, and the message follows.
    peer = peers(ca.issue("good", "relay.far.test"), auth=True)
    route = {"domain": "far.test", "to": f"smtp://relay.far.test:{peer.port}", "tls": "verify",
             "auth": {"user": "corvid", "password": PASSWORD}}
    sender = make_server(relay_overrides(dns, routes=[route], tls={"ca_file": str(ca.pem)}), name="snd-good")
    sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("x@far.test",))
    sender.wait_queue_empty()
    assert [c for c in peer.commands if c.upper().startswith("AUTH PLAIN ")], peer.commands
    assert len(peer.messages) == 1
    assert PASSWORD.encode() not in peer.raw, "the password crossed the wire in clear text"
    assert PASSWORD not in sender.log_text(), "the password was logged"


def test_check_config_refuses_auth_without_verify(tmp_path):
    reference = Path(__file__).resolve().parents[2] / "config" / "corvid.toml"
    # check-config loads certificates: the reference one is the administrator's to provide.
    base = reference.read_text().replace(
        '    { cert = "/etc/corvid/tls/mx.example.org.pem", key = "/etc/corvid/tls/mx.example.org.key" },\n', "")
    for tls in ("", 'tls = "opportunistic"\n', 'tls = "none"\n'):
        cfg = tmp_path / "auth.toml"
        cfg.write_text(base + '\n[[delivery.route]]\ndomain = "*"\nto = "smtp://relay.test:587"\n'
                       + tls + 'auth = { user = "u", password = "p" }\n')
        r = run_cli("check-config", str(cfg))
        assert r.returncode != 0, (tls, r.stdout)
        assert "verify" in r.stderr, r.stderr
    cfg.write_text(base + '\n[[delivery.route]]\ndomain = "*"\nto = "smtp://relay.test:587"\n'
                   'tls = "verify"\nauth = { user = "u", password = "p" }\n')
    r = run_cli("check-config", str(cfg))
    assert r.returncode == 0, r.stderr


def postfix_with(cert_key: tuple[Path, Path]) -> Postfix:
    cert, key = cert_key
    return Postfix("far.test", main_cf_extra=(
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
        "smtpd_tls_loglevel = 1\n"))


def test_verify_against_real_postfix(make_server, ca, dns):
    """Postfix as the MX, with a certificate from the test CA: verified TLS delivers when the
    certificate names the MX host, and defers with 4.7.5 when it names another host."""
    dns.mx("far.test", 10, "mx.far.test").a("mx.far.test")
    for label, name, good in [("pf-good", "mx.far.test", True), ("pf-wrong", "mx.elsewhere.test", False)]:
        postfix = postfix_with(ca.issue(label, name))
        try:
            overrides = relay_overrides(dns, postfix.port,
                                        tls={"ca_file": str(ca.pem), "domains": {"far.test": "verify"}})
            sender = make_server(overrides, name=f"snd-{label}")
            sender.send(MESSAGE, sender="alice@corvid.test", rcpts=("someone@far.test",))
            if good:
                [stored] = postfix.wait_messages(1)
                assert b"Subject: tls" in stored
                log = postfix.log()
                assert "TLS connection established from localhost[127.0.0.1]" in log, log
                done = sender.wait_log(lambda e: e.get("message") == "recipient done")
                assert done.get("tls", "").endswith(" verified"), done
            else:
                reason = wait_deferred(sender, "someone@far.test")
                assert reason.startswith("4.7.5 "), reason
                assert postfix.messages() == []
            sender.stop()
        finally:
            print(f"--- postfix log ({label}) ---\n{postfix.log()}")
            postfix.stop()
