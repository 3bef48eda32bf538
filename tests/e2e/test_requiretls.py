"""REQUIRETLS (RFC 8689) end to end with Python's smtplib: offered only after STARTTLS; the
MAIL parameter refused in clear text (530 5.7.10); accepted over TLS, and a message for a
route without verified TLS bounces to the sender with 5.7.30, the next hop never contacted."""

from __future__ import annotations

import smtplib
import socket
import ssl

from conftest import IO_TIMEOUT
from outbound_support import relay_overrides

MESSAGE = b"From: alice@corvid.test\r\nTo: x@far.test\r\nSubject: requiretls\r\n\r\nsecret\r\n"


def tls_client_context() -> ssl.SSLContext:
    # The test server's certificate is self-signed: the session's protection is what counts.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_refused_in_plaintext(server):
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test",
                      timeout=IO_TIMEOUT) as s:
        s.ehlo()
        assert "starttls" in s.esmtp_features
        assert "requiretls" not in s.esmtp_features
        code, text = s.docmd("MAIL", "FROM:<alice@corvid.test> REQUIRETLS")
        assert (code, text[:6]) == (530, b"5.7.10"), (code, text)
        # The session goes on: the same sender without the parameter is taken.
        assert s.docmd("MAIL", "FROM:<alice@corvid.test>")[0] == 250


def test_over_starttls_to_an_unverified_route_bounces_5_7_30(make_server):
    # A next hop that records whether anyone connects: nobody should.
    hop = socket.socket()
    hop.bind(("127.0.0.1", 0))
    hop.listen(4)
    hop.setblocking(False)
    port = hop.getsockname()[1]
    srv = make_server(relay_overrides(routes=[{"domain": "far.test", "to": f"smtp://127.0.0.1:{port}"}]))
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=IO_TIMEOUT) as s:
        s.ehlo()
        s.starttls(context=tls_client_context())
        s.ehlo()
        assert "requiretls" in s.esmtp_features, s.esmtp_features
        refused = s.sendmail("alice@corvid.test", ["x@far.test"], MESSAGE, mail_options=["REQUIRETLS"])
        assert refused == {}
    [dsn_path] = srv.wait_mail("alice")
    srv.wait_queue_empty()
    text = dsn_path.read_bytes().decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; x@far.test\r\nAction: failed\r\nStatus: 5.7.30\r\n" in text, text
    assert "REQUIRETLS" in text, text
    try:
        conn, _ = hop.accept()
        conn.close()
        raise AssertionError("the next hop was contacted")
    except BlockingIOError:
        pass
    finally:
        hop.close()
