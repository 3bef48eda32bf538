"""Flow control ([queue] flow_*): when delivery falls behind, intake slows down. Mail to a
next hop that refuses connections stays in the queue; once that backlog passes
flow_delay_backlog each MAIL reply waits flow_delay, past flow_hard_backlog MAIL gets 451 4.3.1
and the session goes on; entering flow control is logged once, not per message."""

import time

from outbound_support import free_port, relay_overrides

MESSAGE = b"From: a@corvid.test\r\nTo: c@stuck.test\r\nSubject: flow\r\n\r\nhello\r\n"


def test_a_growing_backlog_delays_then_refuses_mail(make_server):
    port = free_port()  # nothing listens there: every attempt is deferred
    overrides = relay_overrides(routes=[{"domain": "stuck.test", "to": f"smtp://127.0.0.1:{port}"}])
    overrides["queue"] = {
        "retry": {"delays": ["5m"], "jitter": 0.0},
        "flow_delay_backlog": 1,
        "flow_delay": "1500ms",
        "flow_hard_backlog": 3,
    }
    srv = make_server(overrides)

    took = []
    for _ in range(4):
        start = time.monotonic()
        srv.send(MESSAGE, sender="a@corvid.test", rcpts=("c@stuck.test",))
        took.append(time.monotonic() - start)
    # Backlog 0 and 1 (not over the soft limit): no wait. Backlog 2 and 3: the MAIL reply
    # waits flow_delay each time.
    assert took[0] < 1.5 and took[1] < 1.5, took
    assert took[2] >= 1.5 and took[3] >= 1.5, took

    # Backlog 4, over the hard limit: 451 4.3.1 at MAIL, and the session goes on.
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@corvid.test>", 451, "4.3.1")
        c.expect("NOOP", 250)
        c.expect("QUIT", 221)
    assert len(srv.queue()) == 4

    # Logged once per transition, not per message.
    on = [e for e in srv.events() if str(e.get("message", "")).startswith("flow control on")]
    hard = [e for e in srv.events() if "over the hard limit" in str(e.get("message", ""))]
    assert len(on) == 1 and len(hard) == 1, (on, hard)

    # The backlog drains (here: an administrator deletes it): mail is answered at once again,
    # and leaving flow control is logged once.
    for m in srv.queue():
        assert srv.admin("queue-delete", id=m["id"])["ok"]
    start = time.monotonic()
    srv.send(MESSAGE, sender="a@corvid.test", rcpts=("c@stuck.test",))
    assert time.monotonic() - start < 1.5
    off = [e for e in srv.events() if str(e.get("message", "")).startswith("flow control off")]
    assert len(off) == 1, off
