"""ETRN (RFC 1985): trusted clients start a queue run for a domain; others are not offered it."""

import time

from conftest import IO_TIMEOUT


def deferred_message(server) -> str:
    """A message for alice that cannot be delivered yet: a file stands where her Maildir goes."""
    blocker = server.mail_root / "corvid.test" / "alice"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way\n")
    qid = server.send(b"Subject: etrn\r\n\r\nwaiting\r\n")
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        [m] = server.queue()
        if m["recipients"][0]["attempts"] >= 1:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.05)
    blocker.unlink()
    return qid


def test_etrn_from_a_trusted_client_starts_the_run(make_server):
    server = make_server({"server": {"etrn_networks": ["127.0.0.0/8"]}})
    deferred_message(server)
    with server.connect() as c:
        c.greet()
        assert "ETRN" in c.ehlo().lines
        c.expect("ETRN elsewhere.test", 251, "2.0.0")
        c.expect("ETRN #queue", 501, "5.5.4")
        c.expect("ETRN @corvid.test", 253, "2.0.0")
        c.expect("QUIT", 221)
    server.wait_mail("alice")
    server.wait_queue_empty()


def test_etrn_is_not_offered_to_others(make_server):
    server = make_server()
    deferred_message(server)
    with server.connect() as c:
        c.greet()
        assert "ETRN" not in c.ehlo().lines
        c.expect("ETRN corvid.test", 502, "5.5.1")
    assert server.mail_files("alice") == []
    assert len(server.queue()) == 1
