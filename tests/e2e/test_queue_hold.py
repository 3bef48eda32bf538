"""Held mail and the queue's other administrator-facing promises, through the real binary:
`corvid queue hold/release/bounce/list --held`, `corvid kv`, success reports only for trusted
clients (issue 10, DSN reflection), and data_dir created owner-only by whichever command runs
first."""

import os
import stat
import time

from conftest import base_config, deep_merge, run_cli, to_toml

NO_RETRY_SOON = {"queue": {"retry": {"delays": ["1h"]}}}


def queue_cli(server, *args):
    return server.cli("queue", "--config", str(server.config_path), *args)


def blocked(make_server, overrides=None):
    """A server that cannot deliver to alice (a file where her directory goes)."""
    server = make_server(deep_merge(NO_RETRY_SOON, overrides or {}))
    blocker = server.mail_root / "corvid.test" / "alice"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way\n")
    return server, blocker


def deferred(server, qid):
    server.wait_log(lambda e: e.get("message") == "recipient deferred" and e.get("queue_id") == qid)


def test_hold_list_release_delivers(make_server):
    server, blocker = blocked(make_server)
    qid = server.send(b"Subject: review me\r\n\r\nbody\r\n", sender="bob@corvid.test")
    deferred(server, qid)
    r = queue_cli(server, "hold", qid, "--reason", "manual review \x1b[31m")
    assert r.returncode == 0, r.stderr
    r = queue_cli(server, "list", "--held")
    assert qid in r.stdout and "[held: manual review \\u{1b}[31m]" in r.stdout, r.stdout
    assert "\x1b" not in r.stdout, "control characters reach the terminal"
    shown = queue_cli(server, "show", qid)
    assert '"quarantined": "manual review' in shown.stdout and '"held_at":' in shown.stdout, shown.stdout

    # A held message is never due: not even a flush delivers it.
    blocker.unlink()
    assert queue_cli(server, "flush").returncode == 0
    time.sleep(1.0)
    assert server.mail_files("alice") == [], "a held message was delivered"

    r = queue_cli(server, "release", qid)
    assert r.returncode == 0 and f"released {qid}" in r.stdout, r
    [mail] = server.wait_mail("alice")
    assert b"Subject: review me" in mail.read_bytes()
    assert queue_cli(server, "list", "--held").stdout.strip() == "queue is empty"
    r = queue_cli(server, "release", qid)
    assert r.returncode != 0, r


def test_bounce_returns_a_held_message_to_its_sender(make_server):
    server, _ = blocked(make_server)
    qid = server.send(b"Subject: not wanted\r\n\r\nbody\r\n", sender="bob@corvid.test")
    deferred(server, qid)
    r = queue_cli(server, "bounce", qid)
    assert r.returncode != 0 and "not held" in r.stderr, r
    assert queue_cli(server, "hold", qid).returncode == 0
    r = queue_cli(server, "bounce", qid)
    assert r.returncode == 0 and "failure report" in r.stdout, r
    [dsn] = server.wait_mail("bob")
    text = dsn.read_bytes().decode("utf-8", "replace")
    assert "Action: failed\r\nStatus: 5.7.1\r\n" in text, text
    assert "Subject: not wanted" in text, text
    assert all(m["id"] != qid for m in server.queue()), "bounced message still queued"


def test_hold_and_kv_work_on_a_stopped_server(make_server):
    server, _ = blocked(make_server)
    qid = server.send(b"Subject: offline\r\n\r\nbody\r\n")
    deferred(server, qid)
    server.stop()
    assert queue_cli(server, "hold", qid, "--reason", "offline").returncode == 0
    r = queue_cli(server, "list")
    assert "[held: offline]" in r.stdout, r.stdout
    r = server.cli("kv", "--config", str(server.config_path), "list", "--plugin", "nobody")
    assert r.returncode == 0 and "0 key(s)" in r.stdout, r
    server.restart()
    time.sleep(0.5)
    assert [m["quarantined"] for m in server.queue()] == ["offline"]


def notice_sent(server) -> bool:
    server.wait_mail("bob")
    time.sleep(1.0)
    return any(b"Successful Mail Delivery Report" in p.read_bytes() for p in server.mail_files("alice"))


def success_asked(server):
    server.send(b"Subject: tell me\r\n\r\nhi\r\n", sender="alice@corvid.test",
                rcpts=("bob@corvid.test",), rcpt_options=["NOTIFY=SUCCESS"])


def test_no_success_report_for_an_untrusted_client(make_server):
    server = make_server()
    success_asked(server)
    assert not notice_sent(server), "a stranger's NOTIFY=SUCCESS was answered"


def test_success_report_when_anyone_may_ask(make_server):
    server = make_server({"dsn": {"notify_success_from": "anyone"}})
    success_asked(server)
    assert notice_sent(server)


def test_commands_create_data_dir_owner_only(tmp_path):
    for i, args in enumerate([("queue", "list"), ("kv", "list", "--plugin", "x")]):
        data = tmp_path / f"fresh{i}" / "data"
        cfg = tmp_path / f"c{i}.toml"
        cfg.write_text(to_toml(base_config(data)), encoding="utf-8")
        r = run_cli(*args, "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        for d in (data, data.parent):
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, (args, d, oct(os.stat(d).st_mode))


def test_held_mail_expires_as_a_bounce(make_server):
    # The server's maintenance pass runs every 10 s; held mail older than the limit is bounced.
    server, _ = blocked(make_server, {"queue": {"quarantine_max_age": "1s"}})
    qid = server.send(b"Subject: forgotten\r\n\r\nbody\r\n", sender="bob@corvid.test")
    deferred(server, qid)
    assert queue_cli(server, "hold", qid, "--reason", "left alone").returncode == 0
    [dsn] = server.wait_mail("bob", timeout=30)
    text = dsn.read_bytes().decode("utf-8", "replace")
    assert "Status: 5.4.7" in text and "Subject: forgotten" in text, text
    server.wait_log(lambda e: e.get("message") == "held message expired" and e.get("queue_id") == qid)
    assert all(m["id"] != qid for m in server.queue())


def test_held_mail_expires_silently_with_discard(make_server):
    server, _ = blocked(make_server, {"queue": {"quarantine_max_age": "1s",
                                                "quarantine_expiry": "discard"}})
    qid = server.send(b"Subject: forgotten\r\n\r\nbody\r\n", sender="bob@corvid.test")
    deferred(server, qid)
    assert queue_cli(server, "hold", qid).returncode == 0
    server.wait_log(lambda e: e.get("message") == "held message expired" and e.get("queue_id") == qid,
                    timeout=30)
    assert server.queue() == [] and server.mail_files("bob") == []


from test_plugins import behave, behave_wasm  # noqa: E402,F401  (the fixture plugin, built once)


def test_a_quarantine_verdict_holds_until_released(make_server, behave_wasm):
    server = make_server({"plugin": [behave(behave_wasm, data="quarantine")]})
    qid = server.send(b"Subject: quarantined\r\n\r\nbody\r\n", sender="bob@corvid.test")
    time.sleep(1.0)
    assert server.mail_files("alice") == [], "a quarantined message was delivered"
    r = queue_cli(server, "list", "--held")
    assert qid in r.stdout and "[held:" in r.stdout and "behave" in r.stdout, r.stdout
    [msg] = [m for m in server.queue() if m["id"] == qid]
    assert "held by fixture" in msg["quarantined"] and msg["held_at"], msg
    r = queue_cli(server, "release", qid)
    assert r.returncode == 0, r.stderr
    [mail] = server.wait_mail("alice")
    assert b"Subject: quarantined" in mail.read_bytes()
