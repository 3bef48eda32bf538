"""Durability at the syscall level: every `250 ... queued as` is written to the client only
after an fsync/fdatasync/syncfs of the queue's files has COMPLETED, and that sync started after
the message's bytes were written to those files (issue 10).

The server runs under `strace -f`, several SMTP clients send at once, then the strace log is
read back. Why this is needed: SIGKILL leaves the page cache intact, so a crash test cannot see
a missing fsync; `sync_file_range(2)` (what sled 0.34's `flush` does on Linux) writes no
metadata and does not flush the disk's cache, so it does not count.

The rule checked, for each acknowledged message M (a unique token in its body), where "synced"
means an fsync/fdatasync of that path (or a syncfs on a queue file) that started after the write
returned and returned 0 before the 250 naming M's queue id started to be written:
  * a durable copy: some write (write/writev/pwrite64/pwritev/pwritev2) to a file under
    `<data_dir>/queue/` carried M's token and was synced;
  * a durable log: sled's log, `<data_dir>/queue/db`, was synced after the first write that
    carried M's token (a value stored out of line, in `queue/blobs/`, is found through the log).
A later rewrite of the same bytes (sled rewrites pages, sometimes as blobs) need not be synced
before the 250: the earlier synced copy is what the 250 promises.
Or, for a message delivered into its Maildir at the end of DATA (`delivery.local_at_intake`,
which never queues what it delivered), a durable Maildir copy:
  * some write to a file under the Maildir root carried M's token, and that file was synced
    after the write; then it was renamed (`renameat`) into a directory, and that directory was
    fsynced after the rename; all of it completed before the 250.
"Before/after" is the order of the lines in strace's log. That order is causal where it matters:
strace prints a syscall's exit before it lets the thread go on, so a sync that the server waited
for is printed before the reply it allowed. Syscalls split across threads
(`<unfinished ...>` / `<... resumed>`) are joined per thread id: a sync counts from its start
line to its `= 0` line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import conftest
from conftest import queue_id_of

WRITES = {"write", "writev", "pwrite64", "pwritev", "pwritev2"}
SENDS = {"write", "writev", "sendto", "sendmsg"}
SYNCS = {"fsync", "fdatasync", "syncfs"}
RENAMES = {"rename", "renameat", "renameat2"}
TRACED = sorted(WRITES | SENDS | SYNCS | RENAMES | {"sync_file_range"})
# renameat(olddirfd, "old", newdirfd, "new"[, flags]) as strace -yy prints it.
RENAME_ARGS = re.compile(r'^-?\d+<([^>]*)>, "([^"]*)", -?\d+<([^>]*)>, "([^"]*)"')

CLIENTS = 6
MESSAGES_PER_CLIENT = 8
# Every fourth message is large (stored out of line by sled, in queue/blobs/).
LARGE_BODY = 150 * 1024

def strace_problem() -> str | None:
    """Why strace cannot trace here (not installed, or ptrace refused, e.g. by a seccomp
    profile), or None."""
    if shutil.which("strace") is None:
        return "strace is not installed (tests/setup installs it)"
    r = subprocess.run(["strace", "-f", "-o", "/dev/null", "true"], capture_output=True, text=True, timeout=30)
    return None if r.returncode == 0 else f"strace cannot trace here: {r.stderr.strip()[:200]}"


STRACE_PROBLEM = strace_problem()


# --------------------------------------------------------------------------------------------
# strace log parsing

LINE = re.compile(r"^(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(.*)$")
UNFINISHED = re.compile(r"^([a-z0-9_]+)\((.*) <unfinished \.\.\.>$")
RESUMED = re.compile(r"^<\.\.\. ([a-z0-9_]+) resumed>(.*)$")
COMPLETE = re.compile(r"^([a-z0-9_]+)\((.*)$")
RETURN = re.compile(r"\) += (-?\d+|\?)(?: [A-Z][A-Z0-9_]* \(.*\))?(?: <[0-9.]+>)?$")
# -yy decodes a descriptor as `5</path/to/file>` or `7<TCP:[127.0.0.1:25->127.0.0.1:4000]>`.
FD = re.compile(r"^(-?\d+)<((?:TCP|TCPv6|UDP|UNIX|NETLINK)[^\[]*\[[^\]]*\]|[^>]*)>")


@dataclass
class Call:
    name: str
    pid: int
    start: int  # index of the line the call started on
    end: int  # index of the line it returned on
    time: str
    fd_path: str
    args: str
    ret: int | None


def parse_strace(text: str) -> list[Call]:
    calls: list[Call] = []
    pending: dict[int, tuple[str, int, str, str]] = {}
    for i, raw in enumerate(text.splitlines()):
        m = LINE.match(raw)
        if not m:
            continue
        pid, ts, rest = int(m.group(1)), m.group(2), m.group(3)
        if rest.startswith(("+++", "---")):
            continue
        if (u := UNFINISHED.match(rest)):
            pending[pid] = (u.group(1), i, ts, u.group(2))
            continue
        if (r := RESUMED.match(rest)):
            name = r.group(1)
            if pid not in pending or pending[pid][0] != name:
                continue  # started before strace attached
            _, start, ts, head = pending.pop(pid)
            full = head + r.group(2)
        elif (c := COMPLETE.match(rest)):
            name, start, full = c.group(1), i, c.group(2)
        else:
            continue
        ret_m = RETURN.search(full)
        ret = int(ret_m.group(1)) if ret_m and ret_m.group(1) != "?" else None
        args = full[: ret_m.start()] if ret_m else full
        fd_m = FD.match(args)
        calls.append(Call(name, pid, start, i, ts, fd_m.group(2) if fd_m else "", args, ret))
    return calls


def maildir_durable(calls: list[Call], maildir_root: str, token: str, reply: Call) -> bool:
    """Whether M's bytes reached a Maildir file that was synced, renamed, and whose target
    directory was fsynced after the rename, all before `reply` started."""
    prefix = maildir_root.rstrip("/") + "/"
    before = [c for c in calls
              if c.end < reply.start and (c.ret == 0 or (c.name in WRITES and (c.ret or 0) > 0))]
    for w in before:
        if w.name not in WRITES or not w.fd_path.startswith(prefix) or token not in w.args:
            continue
        synced = [s for s in before if s.name in SYNCS and s.fd_path == w.fd_path and s.start > w.end]
        if not synced:
            continue
        first_sync = min(s.end for s in synced)
        for r in before:
            m = RENAME_ARGS.match(r.args) if r.name in RENAMES else None
            if not m or r.start < first_sync or f"{m.group(1)}/{m.group(2)}" != w.fd_path:
                continue
            if any(d.name in SYNCS and d.fd_path == m.group(3) and d.start > r.end for d in before):
                return True
    return False


def check_order(calls: list[Call], queue_dir: str, acked: dict[str, str],
                maildir_root: str | None = None) -> list[str]:
    """`acked` maps queue id -> token. Returns one line per violation (empty: all good)."""
    prefix = queue_dir.rstrip("/") + "/"
    token_writes = [c for c in calls if c.name in WRITES and c.fd_path.startswith(prefix) and (c.ret or 0) > 0]
    syncs = [c for c in calls if c.name in SYNCS and c.fd_path.startswith(prefix) and c.ret == 0]
    replies: dict[str, Call] = {}
    for c in calls:
        if c.name in SENDS and c.fd_path.startswith("TCP") and "queued as " in c.args:
            for qid in re.findall(r"queued as ([0-9A-Za-z]+)", c.args):
                replies.setdefault(qid, c)
    log = prefix + "db"

    def synced(path: str, after: int, before: int) -> bool:
        return any(s.start > after and s.end < before and (s.fd_path == path or s.name == "syncfs") for s in syncs)

    problems = []
    for qid, token in sorted(acked.items()):
        reply = replies.get(qid)
        if reply is None:
            problems.append(f"{qid}: the client got a 250 the trace does not show being written")
            continue
        mine = [w for w in token_writes if w.end < reply.start and token in w.args]
        if maildir_root is not None and maildir_durable(calls, maildir_root, token, reply):
            continue
        if not mine:
            problems.append(f"{qid}: 250 at {reply.time} but its bytes were never written to a file under "
                            f"{prefix} before it")
            continue
        if not any(synced(w.fd_path, w.end, reply.start) for w in mine):
            paths = sorted({w.fd_path for w in mine})
            problems.append(f"{qid}: 250 at {reply.time} with no completed fsync/fdatasync of the file its "
                            f"bytes were written to ({', '.join(paths)}) between that write and the reply")
        elif not synced(log, min(w.end for w in mine), reply.start):
            problems.append(f"{qid}: 250 at {reply.time} with no completed fsync/fdatasync of {log} after "
                            f"the message was written")
    return problems


# --------------------------------------------------------------------------------------------
# The server under strace


def strace_wrapper(tmp: Path, log: Path) -> Path:
    """A script run in place of the binary: strace execs the real corvid with the same args."""
    script = tmp / "corvid-under-strace"
    script.write_text(
        "#!/bin/sh\n"
        f"exec strace -f -tt -yy -s 1048576 -e trace={','.join(TRACED)} -o {log} -- {conftest.BIN} \"$@\"\n")
    script.chmod(0o755)
    return script


def traced_pid(strace_pid: int) -> int:
    children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()
    assert children, "strace has no child"
    return int(children[0])


def send_all(port: int, client: int, acked: dict[str, str], errors: list[str], lock: threading.Lock) -> None:
    try:
        with conftest.SmtpClient(port) as c:
            c.greet()
            c.ehlo()
            for n in range(MESSAGES_PER_CLIENT):
                token = f"TOKEN{uuid.uuid4().hex}"
                filler = (b"x" * 76 + b"\r\n") * (LARGE_BODY // 78) if n % 4 == 3 else b"small\r\n"
                c.expect("MAIL FROM:<sender@example.org>", 250)
                c.expect("RCPT TO:<alice@corvid.test>", 250)
                c.expect("DATA", 354)
                c.send(f"Subject: {token}\r\nMessage-ID: <{token}@example.org>\r\n\r\n{token}\r\n".encode()
                       + filler + b".\r\n")
                r = c.expect(None, 250)
                with lock:
                    acked[queue_id_of(r.text)] = token
            c.expect("QUIT", 221)
    except Exception as e:  # reported by the test thread
        errors.append(f"client {client}: {e!r}")


@pytest.mark.skipif(STRACE_PROBLEM is not None, reason=str(STRACE_PROBLEM))
@pytest.mark.parametrize("at_intake", [True, False], ids=["delivered-at-intake", "queued-first"])
def test_every_250_follows_a_completed_fsync_of_the_queue_or_the_maildir(make_server, tmp_path, monkeypatch,
                                                                        at_intake):
    log = tmp_path / "strace.log"
    monkeypatch.setattr(conftest, "BIN", strace_wrapper(tmp_path, log))
    srv = make_server({"delivery": {"local_at_intake": at_intake}}, start=False)
    srv.start(timeout=60)
    acked: dict[str, str] = {}
    errors: list[str] = []
    lock = threading.Lock()
    try:
        threads = [threading.Thread(target=send_all, args=(srv.port, i, acked, errors, lock)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert len(acked) == CLIENTS * MESSAGES_PER_CLIENT
    finally:
        # SIGTERM to corvid itself (not to strace): strace exits when it does.
        assert srv.proc is not None
        os.kill(traced_pid(srv.proc.pid), signal.SIGTERM)
        srv.proc.wait(60)
    text = log.read_text(errors="replace")
    calls = parse_strace(text)
    queue_dir = os.path.realpath(srv.data_dir / "queue")
    on_queue = [c for c in calls if c.fd_path.startswith(queue_dir + "/")]
    counts = {n: sum(1 for c in on_queue if c.name == n) for n in sorted(SYNCS | {"sync_file_range"})}
    # The trace is what we think it is: the replies and the message bytes are in it (queued
    # first), and delivered at intake nothing of the messages went into the queue.
    if at_intake:
        tokens = set(acked.values())
        assert not any(c.name in WRITES and any(t in c.args for t in tokens) for c in on_queue), \
            "a message delivered at intake was written into the queue"
    else:
        assert any(c.name in WRITES for c in on_queue), f"no write to {queue_dir} traced"
    # Queued first, only the queue may be the durable copy the 250 promises.
    maildir_root = os.path.realpath(srv.mail_root) if at_intake else None
    problems = check_order(calls, queue_dir, acked, maildir_root)
    assert not problems, (f"{len(problems)} problem(s) over {len(acked)} acknowledgements: no durable sync "
                          f"before the 250 (syscalls on queue files: {counts}):\n" + "\n".join(problems[:20]))


# --------------------------------------------------------------------------------------------
# The checker itself must be able to fail: a hand-written trace of each bad order.

GOOD = """\
100 01:00:00.000001 pwrite64(7</d/queue/db>, "..TOKENa..", 10, 0) = 10
101 01:00:00.000002 fdatasync(7</d/queue/db> <unfinished ...>
102 01:00:00.000003 write(2<pipe:[1]>, "log", 3) = 3
101 01:00:00.000004 <... fdatasync resumed>) = 0
103 01:00:00.000005 write(9<TCP:[127.0.0.1:25->127.0.0.1:4000]>, "250 2.0.0 Ok: queued as Q1\\r\\n", 28) = 28
"""


def test_checker_accepts_a_sync_between_write_and_reply():
    assert check_order(parse_strace(GOOD), "/d/queue", {"Q1": "TOKENa"}) == []
    # A later rewrite of the same bytes (a page written again as a blob) before the reply does
    # not undo the synced copy.
    rewritten = GOOD.replace("103 01:00:00.000005", '104 01:00:00.0000045 write(8</d/queue/blobs/12>, "TOKENa", 6) = 6\n'
                             "103 01:00:00.000005")
    assert check_order(parse_strace(rewritten), "/d/queue", {"Q1": "TOKENa"}) == []
    # A value out of line: the blob synced, then the log synced.
    blob = ('100 01:00:00.000001 write(8</d/queue/blobs/12>, "..TOKENa..", 10) = 10\n'
            "100 01:00:00.000002 fsync(8</d/queue/blobs/12>) = 0\n"
            '100 01:00:00.000003 pwrite64(7</d/queue/db>, "ptr", 3, 0) = 3\n'
            "100 01:00:00.000004 fdatasync(7</d/queue/db>) = 0\n"
            '103 01:00:00.000005 write(9<TCP:[127.0.0.1:25->127.0.0.1:4000]>, "250 2.0.0 Ok: queued as Q1\\r\\n", 28) = 28\n')
    assert check_order(parse_strace(blob), "/d/queue", {"Q1": "TOKENa"}) == []


# Delivered at intake: written to tmp/, fdatasynced, renamed into new/, new/ fsynced, then 250.
MAILDIR_GOOD = """\
100 01:00:00.000001 write(7</m/a/Maildir/tmp/f1>, "..TOKENa..", 10) = 10
100 01:00:00.000002 fdatasync(7</m/a/Maildir/tmp/f1>) = 0
100 01:00:00.000003 renameat(5</m/a/Maildir/tmp>, "f1", 6</m/a/Maildir/new>, "f1") = 0
101 01:00:00.000004 fsync(6</m/a/Maildir/new>) = 0
103 01:00:00.000005 write(9<TCP:[127.0.0.1:25->127.0.0.1:4000]>, "250 2.0.0 Ok: queued as Q1\\r\\n", 28) = 28
"""


def test_checker_accepts_a_synced_maildir_delivery():
    assert check_order(parse_strace(MAILDIR_GOOD), "/d/queue", {"Q1": "TOKENa"}, "/m") == []


@pytest.mark.parametrize("bad", [
    # the directory is not fsynced after the rename
    MAILDIR_GOOD.replace("101 01:00:00.000004 fsync(6</m/a/Maildir/new>) = 0\n", ""),
    # the file is not synced before the rename
    MAILDIR_GOOD.replace("fdatasync(7</m/a/Maildir/tmp/f1>) = 0", "sync_file_range(7</m/a/Maildir/tmp/f1>) = 0"),
    # the directory fsync comes after the reply
    MAILDIR_GOOD.replace("101 01:00:00.000004 fsync(6</m/a/Maildir/new>) = 0\n", "")
        + "101 01:00:00.000006 fsync(6</m/a/Maildir/new>) = 0\n",
    # another file was renamed
    MAILDIR_GOOD.replace('"f1", 6</m/a/Maildir/new>', '"f2", 6</m/a/Maildir/new>'),
    # the file is outside the Maildir root
    MAILDIR_GOOD.replace("/m/a/", "/x/a/"),
])
def test_checker_rejects_bad_maildir_orders(bad):
    assert check_order(parse_strace(bad), "/d/queue", {"Q1": "TOKENa"}, "/m") != []


@pytest.mark.parametrize("bad", [
    # only sync_file_range, as sled 0.34 does
    GOOD.replace("fdatasync(7", "sync_file_range(7").replace("fdatasync resumed", "sync_file_range resumed"),
    # the sync completes after the reply is written
    GOOD.replace("101 01:00:00.000004 <... fdatasync resumed>) = 0\n", "") + "101 01:00:00.000006 <... fdatasync resumed>) = 0\n",
    # the sync failed
    GOOD.replace("resumed>) = 0", "resumed>) = -1 EIO (Input/output error)"),
    # the sync is of another file than the one that got the bytes
    GOOD.replace("fdatasync(7</d/queue/db>", "fdatasync(8</d/queue/conf>"),
    # the bytes went to a blob that was synced, but the log was not synced after them
    GOOD.replace("pwrite64(7</d/queue/db>", "write(8</d/queue/blobs/12>")
        .replace("fdatasync(7</d/queue/db>", "fsync(8</d/queue/blobs/12>")
        .replace("fdatasync resumed", "fsync resumed"),
    # the message's bytes are written after the sync started
    GOOD.replace('100 01:00:00.000001 pwrite64(7</d/queue/db>, "..TOKENa..", 10, 0) = 10\n', "")
        .replace("102 01:00:00.000003 write(2<pipe:[1]>, \"log\", 3) = 3",
                 "102 01:00:00.000003 pwrite64(7</d/queue/db>, \"..TOKENa..\", 10, 0) = 10"),
    # the bytes never reached a queue file
    GOOD.replace("/d/queue/db>, \"..TOKENa", "/d/other/db>, \"..TOKENa"),
])
def test_checker_rejects_bad_orders(bad):
    assert check_order(parse_strace(bad), "/d/queue", {"Q1": "TOKENa"}) != []
