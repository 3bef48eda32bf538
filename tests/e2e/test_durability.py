"""Durability: what was answered 250 survives SIGKILL and is delivered exactly once; what was
not answered 250 is never delivered."""

import collections
import re
import threading
import time

from conftest import queue_id_of, split_delivered

NO_RETRY_SOON = {"queue": {"retry": {"delays": ["1h"]}}}


def msg(mid: str, body: bytes = b"durable\r\n") -> bytes:
    return f"Subject: {mid}\r\nMessage-ID: <{mid}@example.org>\r\n\r\n".encode() + body


def message_ids(paths) -> list[str]:
    out = []
    for p in paths:
        m = re.search(rb"^Message-ID: <([^@>]+)@example.org>\r$", split_delivered(p).content, re.M)
        assert m, f"{p} has no Message-ID"
        out.append(m.group(1).decode())
    return out


def test_deferred_message_survives_sigkill_and_flush_delivers_once(make_server):
    server = make_server(NO_RETRY_SOON)
    # A regular file where alice's directory should be: the Maildir cannot be created, which
    # is a transient local failure.
    blocker = server.mail_root / "corvid.test" / "alice"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way\n")
    content = msg("deferred-1", b"Body of the deferred message.\r\n")
    qid = server.send(content)
    server.wait_log(lambda e: e.get("message") == "recipient deferred" and e.get("queue_id") == qid)
    server.kill()
    blocker.unlink()
    server.restart()
    r = server.cli("queue", "--config", str(server.config_path), "flush")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"[01] message\(s\) scheduled for delivery now\n", r.stdout), r.stdout
    [path] = server.wait_mail("alice")
    server.wait_queue_empty()
    assert server.mail_files("alice") == [path]
    d = split_delivered(path)
    assert d.content == content
    assert f"id {qid}".encode() in d.received


def test_sigkill_mid_data_delivers_nothing(make_server):
    server = make_server()
    c = server.connect()
    c.begin(rcpts=["alice@corvid.test", "bob@corvid.test"])
    c.expect("DATA", 354)
    c.send(msg("partial", b"first half of the message\r\n" * 200))
    time.sleep(0.2)  # setup: let the server read the first half before it dies
    server.kill()
    c.close()
    r = server.cli("queue", "list", "--config", str(server.config_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "queue is empty", r.stdout
    server.restart()
    r = server.cli("queue", "list", "--config", str(server.config_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "queue is empty", r.stdout
    # a message sent after the restart arrives; the partial one never does
    server.send(msg("after-restart"))
    server.wait_mail("alice")
    server.wait_queue_empty()
    assert message_ids(server.mail_files("alice")) == ["after-restart"]
    assert server.mail_files("bob") == []


def test_sigkill_mid_bdat_delivers_nothing(make_server):
    server = make_server()
    c = server.connect()
    c.begin()
    chunk = msg("partial-bdat", b"chunk one\r\n")
    c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
    c.expect(None, 250)  # a chunk's 250 is not the message's
    c.send(b"BDAT 1000 LAST\r\nonly part of the last chunk")
    time.sleep(0.2)  # setup: let the server read it
    server.kill()
    c.close()
    server.restart()
    assert server.queue() == []
    server.send(msg("after-bdat-crash"))
    server.wait_mail("alice")
    server.wait_queue_empty()
    assert message_ids(server.mail_files("alice")) == ["after-bdat-crash"]


def test_sigkill_right_after_250(make_server):
    server = make_server()
    for i in range(10):
        with server.connect() as c:
            c.begin()
            c.expect("DATA", 354)
            c.send(msg(f"kill-after-250-{i}") + b".\r\n")
            c.expect(None, 250, "2.0.0")
            server.kill()  # before QUIT, before delivery has a chance
        server.restart()
    server.wait_mail("alice", 10)
    left = server.wait_no_pending()
    ids = message_ids(server.mail_files("alice"))
    assert sorted(ids) == sorted(f"kill-after-250-{i}" for i in range(10)), f"missing or duplicated: {ids}"
    assert left == [], f"finished messages left in the queue after restart: {[(m['id'], [r['status'] for r in m['recipients']]) for m in left]}"


def test_burst_then_sigkill_each_delivered_exactly_once(make_server):
    server = make_server()
    n_threads, per_thread = 4, 5
    accepted: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def sender(t: int) -> None:
        try:
            with server.connect() as c:
                c.greet()
                c.ehlo()
                for i in range(per_thread):
                    mid = f"burst-{t}-{i}"
                    c.send(f"MAIL FROM:<s{t}@example.org>\r\nRCPT TO:<alice@corvid.test>\r\nDATA\r\n".encode())
                    assert c.reply().code == 250
                    assert c.reply().code == 250
                    assert c.reply().code == 354
                    c.send(msg(mid, f"message {t}/{i}\r\n".encode() * 50) + b".\r\n")
                    r = c.reply()
                    assert r.code == 250, r
                    queue_id_of(r.text)
                    with lock:
                        accepted.append(mid)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    server.kill()  # right after the last 250
    assert not errors, errors
    assert len(accepted) == n_threads * per_thread
    server.restart()
    server.wait_mail("alice", len(accepted))
    left = server.wait_no_pending()
    counts = collections.Counter(message_ids(server.mail_files("alice")))
    assert set(counts) == set(accepted), set(accepted) ^ set(counts)
    dupes = {k: v for k, v in counts.items() if v != 1}
    assert not dupes, f"delivered more than once: {dupes}"
    assert left == [], f"finished messages left in the queue after restart: {[(m['id'], [r['status'] for r in m['recipients']]) for m in left]}"


def test_graceful_stop_keeps_queued_mail(make_server):
    server = make_server(NO_RETRY_SOON)
    blocker = server.mail_root / "corvid.test" / "bob"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("x")
    qid = server.send(msg("stop-keeps"), rcpts=["alice@corvid.test", "bob@corvid.test"])
    server.wait_mail("alice")
    server.wait_log(lambda e: e.get("message") == "recipient deferred" and e.get("queue_id") == qid)
    server.stop()
    blocker.unlink()
    server.restart()
    [m] = server.queue()
    states = {r["recipient"]["address"]["local"]: r["status"] for r in m["recipients"]}
    assert states == {"alice": "delivered", "bob": "pending"}, states
    server.admin("queue-flush")
    server.wait_mail("bob")
    server.wait_queue_empty()
    # alice is not delivered to a second time
    assert len(server.mail_files("alice")) == 1
    assert len(server.mail_files("bob")) == 1
