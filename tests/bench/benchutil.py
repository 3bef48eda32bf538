"""Shared pieces of the load benchmark (tests/bench/load.py): constants, /proc readers, small
file and socket helpers. Python 3 standard library only."""

import os
import socket
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")
SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"

CORVID_DOMAIN = "corvid.test"
CORVID_RCPT = "alice@corvid.test"  # a mailbox of the dev config's test domain
POSTFIX_DOMAIN = "bench.test"
POSTFIX_RCPT = "rcpt@bench.test"
SENDER = "sender@bench.test"
HELO = "client.bench.test"

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 45.0
SAMPLE_INTERVAL = 0.25
PSS_EVERY = 4  # PSS is summed on every 4th sample (once a second)
DELIVERY_POLL = 0.02


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# /proc helpers
# ----------------------------------------------------------------------------------------------

def read_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in clock ticks, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    ppid = int(rest[1])
    own = int(rest[11]) + int(rest[12])
    children = int(rest[13]) + int(rest[14])
    return ppid, own, children


def read_status_kb(pid, keys):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


def read_pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(root):
    """PIDs whose parent chain leads to root (root excluded)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = read_stat(int(name))
        if st is None:
            continue
        children.setdefault(st[0], []).append(int(name))
    out, todo, seen = [], [root], {root}
    while todo:  # bounded: each pid is visited once
        pid = todo.pop()
        for c in children.get(pid, []):
            if c not in seen:
                seen.add(c)
                out.append(c)
                todo.append(c)
    return out


def system_busy_ticks():
    """Busy (non-idle, non-iowait) clock ticks of all CPUs, from /proc/stat: a cross-check."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is already in user)
    return sum(v[:8]) - v[3] - v[4]


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(5)
                banner = s.recv(512)
                s.sendall(b"QUIT\r\n")
                try:
                    s.recv(512)
                except OSError:
                    pass
                if banner.startswith(b"220"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def count_files(d):
    try:
        with os.scandir(d) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def set_aside(new_dir):
    """Moves the files of a Maildir's new/ into a sibling folder, so that new/ counts only this
    run. Renamed, not deleted: on ext4 without a journal (as on the reference VM), recently
    freed inodes make every later file creation scan past them for 30 s, which would charge
    the next run for the benchmark's own clean-up."""
    aside = os.path.join(os.path.dirname(new_dir), "bench-done")
    try:
        with os.scandir(new_dir) as it:
            names = [e.name for e in it]
    except FileNotFoundError:
        return
    os.makedirs(aside, exist_ok=True)
    for name in names:
        os.rename(os.path.join(new_dir, name), os.path.join(aside, name))


def unique_name(prefix):
    """A directory name that differs between runs. In a `chattr +T` directory ext4 picks the
    block group of a new subdirectory from a hash of its name: a fixed name would put each run
    where the previous run just deleted thousands of files (see set_aside)."""
    return f"{prefix}-{os.urandom(4).hex()}"


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e})"
