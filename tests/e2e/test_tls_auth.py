"""TLS (STARTTLS, implicit TLS), SMTP AUTH and relay control, with real TLS clients: Python's
smtplib and ssl, swaks and openssl s_client."""

import base64
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

import os

from conftest import BIN, HOSTNAME, IO_TIMEOUT, split_delivered

PASSWORD = "correct horse"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def cli(srv, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    """`corvid ARGS --config <the server's config>`, with `input_text` on standard input."""
    return subprocess.run([str(BIN), *args, "--config", str(srv.config_path)], cwd=srv.workdir,
                          input=input_text, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})


def tls_client_context() -> ssl.SSLContext:
    # The test server's certificate is self-signed: encryption is what is tested here.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def auth_server(make_server):
    """A server with user alice@corvid.test and quick AUTH failure delays."""
    srv = make_server({"auth": {"failure_delay": "200ms", "max_failures_per_connection": 3}})
    r = cli(srv, "user", "add", "alice@corvid.test", "--address", "sales@corvid.test",
            "--password-stdin", input_text=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    return srv


def submission(srv) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="client.test", timeout=IO_TIMEOUT)
    s.ehlo()
    s.starttls(context=tls_client_context())
    s.ehlo()
    return s


def test_starttls_login_and_relay_on_submission(auth_server):
    with submission(auth_server) as s:
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        assert "starttls" not in s.esmtp_features, "STARTTLS must not be offered again inside TLS"
        s.login("alice@corvid.test", PASSWORD)
        s.sendmail("alice@corvid.test", ["bob@corvid.test", "friend@elsewhere.test"],
                   b"Subject: via submission\r\n\r\nhi\r\n")
    [path] = auth_server.wait_mail("bob")
    received = split_delivered(path).received.decode()
    assert "with ESMTPSA id" in received, received
    assert "using TLSv1.3 with cipher TLS13_" in received, received


def test_implicit_tls_on_submissions(auth_server):
    port = auth_server.ports["submissions"]
    with smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test", timeout=IO_TIMEOUT,
                          context=tls_client_context()) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert "starttls" not in s.esmtp_features
        s.login("alice@corvid.test", PASSWORD)
        s.sendmail("sales@corvid.test", ["bob@corvid.test"], b"Subject: 465\r\n\r\nhi\r\n")
    auth_server.wait_mail("bob")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by tests/setup")
@pytest.mark.parametrize("listener,flag,mech", [("submission", "--tls", "LOGIN"), ("submissions", "--tlsc", "PLAIN")])
def test_swaks_tls_and_auth(auth_server, listener, flag, mech):
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{auth_server.ports[listener]}", flag, "--auth", mech,
         "--auth-user", "alice@corvid.test", "--auth-password", PASSWORD,
         "--from", "alice@corvid.test", "--to", "bob@corvid.test", "--ehlo", "client.test"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0" in r.stdout and "250 2.0.0 Ok: queued as" in r.stdout, r.stdout


def test_pipelined_command_after_starttls_is_discarded(auth_server):
    """CVE-2011-0411: plaintext sent after STARTTLS, before the handshake, must not run."""
    with socket.create_connection(("127.0.0.1", auth_server.port), timeout=IO_TIMEOUT) as raw:
        f = raw.makefile("rb")
        assert f.readline().startswith(b"220 ")
        raw.sendall(b"EHLO client.test\r\n")
        while not f.readline()[3:4] == b" ":
            pass
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        assert f.readline().startswith(b"220 2.0.0")
        tls = tls_client_context().wrap_socket(raw)
        tf = tls.makefile("rb")
        tls.sendall(b"EHLO client.test\r\n")
        while not tf.readline()[3:4] == b" ":
            pass
        # Had the injected MAIL run, this would be "503 Nested MAIL".
        tls.sendall(b"MAIL FROM:<real@example.org>\r\n")
        assert tf.readline().startswith(b"250 2.1.0"), "injected command was executed"
        tls.sendall(b"QUIT\r\n")


# TLS 1.0 and 1.1 (RFC 8996 deprecates both): the version each puts in its hello.
OLD_PROTOCOLS = {"-tls1": "03 01", "-tls1_1": "03 02"}


def old_protocol_client(port: int, flag: str) -> subprocess.CompletedProcess:
    """openssl s_client forced to `flag`, with security level 0 (OpenSSL 3 refuses TLS 1.0/1.1
    at its default level before sending anything); -msg dumps the handshake messages."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", flag, "-cipher", "DEFAULT@SECLEVEL=0", "-msg"],
        input="QUIT\r\n", capture_output=True, text=True, timeout=30)


def old_protocol_control(tls_dir, flag: str) -> subprocess.CompletedProcess:
    """old_protocol_client against an `openssl s_server` that allows only `flag` (with
    Corvid's key), for one connection."""
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", flag, "-cipher", "DEFAULT@SECLEVEL=0",
         "-cert", str(tls_dir / "selfsigned-cert.pem"), "-key", str(tls_dir / "selfsigned-key.pem")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert srv.stdout is not None
        for line in srv.stdout:
            m = re.match(r"ACCEPT .*:([0-9]+)$", line.strip())
            if m:
                return old_protocol_client(int(m.group(1)), flag)
        raise AssertionError(f"openssl s_server did not start ({srv.wait()})")
    finally:
        srv.kill()
        srv.wait()


def hello_version(msg_dump: str, kind: str, direction: str) -> str | None:
    """The version field of the first ClientHello (sent, `>>>`) or ServerHello (received, `<<<`)
    in s_client's -msg dump: bytes 4 and 5 of the handshake message."""
    m = re.search(direction + r" [^\n]*, " + kind + r"\n\s+((?:[0-9a-f]{2} ){6})", msg_dump)
    return " ".join(m.group(1).split()[4:6]) if m else None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is installed by tests/setup")
def test_openssl_starttls_injection_and_old_protocols(auth_server):
    # s_client sends its own EHLO and STARTTLS; the inject is the line it passes through after.
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{auth_server.port}", "-starttls", "smtp",
         "-quiet"],
        input="EHLO client.test\r\nQUIT\r\n", capture_output=True, text=True, timeout=30)
    assert "250 " in r.stdout and "221 2.0.0" in r.stdout, r.stdout + r.stderr
    tls_dir = auth_server.data_dir / "tls"
    for old, version in OLD_PROTOCOLS.items():
        # Control: this openssl really offers `old` and completes it with a server that allows
        # it, so the refusal below is Corvid's and not the client's own policy.
        control = old_protocol_control(tls_dir, old)
        assert hello_version(control.stdout, "ClientHello", ">>>") == version, control.stdout + control.stderr
        assert hello_version(control.stdout, "ServerHello", "<<<") == version, control.stdout + control.stderr
        r = old_protocol_client(auth_server.ports["submissions"], old)
        assert hello_version(r.stdout, "ClientHello", ">>>") == version, f"{old} was not offered: {r.stdout}"
        assert hello_version(r.stdout, "ServerHello", "<<<") is None, f"{old} was accepted: {r.stdout}"
        assert "220 " not in r.stdout, f"{old} was accepted: {r.stdout}"
    # TLS 1.2 is accepted. QUIT only after the 220 (a client that talks first is refused as a
    # pregreet); -ign_eof: read until the server closes after QUIT, not until our input ends.
    p = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{auth_server.ports['submissions']}", "-tls1_2",
         "-ign_eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(30, p.kill)
    guard.start()
    out = []
    try:
        assert p.stdout is not None and p.stdin is not None
        for line in p.stdout:
            out.append(line)
            if line.startswith("220 "):
                p.stdin.write("QUIT\r\n")
                p.stdin.flush()
        p.wait()
    finally:
        guard.cancel()
    text = "".join(out)
    assert f"220 {HOSTNAME}" in text and "221 " in text, text


@pytest.mark.parametrize("listener", ["smtp", "submission", "submissions"])
def test_no_unauthenticated_relay_on_any_listener(auth_server, listener):
    port = auth_server.ports[listener]
    if listener == "submissions":
        s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test", timeout=IO_TIMEOUT,
                             context=tls_client_context())
        s.ehlo()
    elif listener == "submission":
        s = submission(auth_server)
    else:
        s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=IO_TIMEOUT)
        s.ehlo()
    with s:
        code, msg = s.mail("someone@example.org")
        if listener == "smtp":
            assert code == 250
            code, msg = s.rcpt("victim@elsewhere.test")
            assert (code, msg[:5]) == (550, b"5.7.1"), (code, msg)
        else:
            assert (code, msg[:5]) == (530, b"5.7.0"), (code, msg)


def test_auth_negative_replies(auth_server):
    with submission(auth_server) as s:
        assert s.docmd("AUTH", "CRAM-MD5")[0] == 504
        assert s.docmd("AUTH", "PLAIN !!!notbase64")[0] == 501
        code, _ = s.docmd("AUTH", "LOGIN")
        assert code == 334
        code, msg = s.docmd("*")
        assert (code, msg[:5]) == (501, b"5.0.0"), (code, msg)
        code, msg = s.docmd("AUTH", "PLAIN " + b64("\0alice@corvid.test\0wrong"))
        assert (code, msg[:5]) == (535, b"5.7.8"), (code, msg)
        code, msg = s.docmd("AUTH", "PLAIN " + b64("\0alice@corvid.test\0" + PASSWORD))
        assert code == 235, msg
        code, msg = s.docmd("AUTH", "PLAIN " + b64("\0alice@corvid.test\0" + PASSWORD))
        assert (code, msg[:5]) == (503, b"5.5.1"), (code, msg)
        code, msg = s.mail("bob@corvid.test")
        assert (code, msg[:5]) == (553, b"5.7.1"), "an authenticated user may not use another's address"
    # AUTH inside a transaction, on port 25 after STARTTLS.
    with smtplib.SMTP("127.0.0.1", auth_server.port, local_hostname="client.test", timeout=IO_TIMEOUT) as s:
        s.ehlo()
        assert "auth" not in s.esmtp_features, "AUTH must not be offered without TLS"
        code, msg = s.docmd("AUTH", "PLAIN " + b64("\0alice@corvid.test\0" + PASSWORD))
        assert (code, msg[:6]) == (538, b"5.7.11"), (code, msg)
        s.starttls(context=tls_client_context())
        s.ehlo()
        assert s.mail("x@example.org")[0] == 250
        code, msg = s.docmd("AUTH", "PLAIN " + b64("\0alice@corvid.test\0" + PASSWORD))
        assert (code, msg[:5]) == (503, b"5.5.1"), (code, msg)


def test_failed_auth_is_slowed_and_limited(auth_server):
    bad = "PLAIN " + b64("\0alice@corvid.test\0guess")
    with submission(auth_server) as s:
        timings = []
        for _ in range(2):
            t0 = time.monotonic()
            assert s.docmd("AUTH", bad)[0] == 535
            timings.append(time.monotonic() - t0)
        # failure_delay is 200ms times the recent failures from this address.
        assert timings[0] >= 0.2 and timings[1] >= 0.4, timings
        code, msg = s.docmd("AUTH", bad)
        assert code == 535
        code, msg = s.getreply()
        assert (code, msg[:5]) == (421, b"4.7.0"), (code, msg)


def make_cert(dir, cn: str):
    key, cert = dir / f"{cn}.key", dir / f"{cn}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def served_cn(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        with tls_client_context().wrap_socket(raw) as t:
            der = t.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                         capture_output=True, check=True).stdout.decode()
    return out.strip().split("CN", 1)[1].lstrip(" =")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is installed by tests/setup")
def test_certificate_reload_on_sighup_keeps_sessions(make_server, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = make_cert(certs, "old.corvid.test")
    srv = make_server({"tls": {"certificates": [{"cert": str(cert), "key": str(key)}]}})
    port = srv.ports["submissions"]
    assert served_cn(port) == "old.corvid.test"
    # A session open across the reload must keep working.
    live = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test", timeout=IO_TIMEOUT,
                            context=tls_client_context())
    live.ehlo()
    new_cert, new_key = make_cert(certs, "new.corvid.test")
    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(lambda e: e.get("message") == "TLS certificates reloaded", this_run=True)
    assert served_cn(port) == "new.corvid.test"
    assert live.noop()[0] == 250
    live.quit()


def test_user_cli_list_passwd_del(auth_server):
    r = cli(auth_server, "user", "list")
    assert r.returncode == 0 and "alice@corvid.test\tsales@corvid.test" in r.stdout, r.stdout
    users_file = auth_server.data_dir / "users"
    assert users_file.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in users_file.read_text() and "$argon2id$" in users_file.read_text()
    r = cli(auth_server, "user", "passwd", "alice@corvid.test", "--password-stdin",
            input_text="new password\n")
    assert r.returncode == 0, r.stderr
    with submission(auth_server) as s:
        s.login("alice@corvid.test", "new password")  # the running server re-read the file
    r = cli(auth_server, "user", "del", "alice@corvid.test")
    assert r.returncode == 0, r.stderr
    with submission(auth_server) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice@corvid.test", "new password")
    assert PASSWORD not in auth_server.log_text() and "new password" not in auth_server.log_text()


def test_from_header_must_be_the_users_own_when_restricted(make_server):
    srv = make_server({"auth": {"restrict_from_header": True}})
    r = cli(srv, "user", "add", "alice@corvid.test", "--address", "sales@corvid.test",
            "--password-stdin", input_text=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    with submission(srv) as s:
        s.login("alice@corvid.test", PASSWORD)
        # Her own address (listed in the users file) in From: is accepted.
        ok = b"From: Sales <sales@corvid.test>\r\nSubject: ours\r\n\r\nhi\r\n"
        assert s.sendmail("alice@corvid.test", ["bob@corvid.test"], ok) == {}
        # Someone else's address in From: is refused after DATA, even with her own MAIL FROM.
        forged = b"From: The Boss <bob@corvid.test>\r\nSubject: pay this\r\n\r\nhi\r\n"
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("alice@corvid.test", ["bob@corvid.test"], forged)
        assert e.value.smtp_code == 550 and b"5.7.1" in e.value.smtp_error, e.value
    [path] = srv.wait_mail("bob")
    assert b"Subject: ours" in path.read_bytes()
