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


# ----------------------------------------------------------------------------------------------
# PSS by mapping category (issue 17's memory target: what holds the memory)
# ----------------------------------------------------------------------------------------------

GLIBC_ARENA_BYTES = 64 << 20  # a glibc malloc arena heap: HEAP_MAX_SIZE (64 MiB), aligned to it
RESERVATION_BYTES = 1 << 30   # wasmtime's pooling allocator reserves GiBs of address space


def _smaps(pid):
    """The mappings of /proc/PID/smaps: (lo, hi, perms, path, pss_kb)."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                maps.append([lo, hi, head[1], head[5].strip() if len(head) > 5 else "", 0])
            elif head[0] == "Pss:" and maps:
                maps[-1][4] += int(head[1])
    return maps


def _wasm_spans(maps):
    """Address ranges of wasmtime's pool: from the first to the last inaccessible (---p) mapping
    of a run of adjacent anonymous mappings holding a reservation of >= 1 GiB. Mappings of the
    run outside that range are malloc's or thread stacks that happen to be adjacent."""
    spans, run = [], []
    for m in maps + [[0, 0, "", "[end]", 0]]:
        if m[3] == "" and run and run[-1][1] == m[0]:
            run.append(m)
            continue
        if any(r[1] - r[0] >= RESERVATION_BYTES for r in run):
            guards = [r for r in run if r[2].startswith("---")]
            if guards:
                spans.append((guards[0][0], guards[-1][1]))
        run = [m] if m[3] == "" else []
    return spans


def _is_arena(m, nxt):
    """A glibc thread arena's heap: 64 MiB-aligned, read-write, and either all of its 64 MiB
    or followed by the inaccessible rest of them (a wasm memory slot, also aligned, is
    followed by a guard of GiBs)."""
    lo, hi = m[0], m[1]
    if m[3] or lo % GLIBC_ARENA_BYTES or not m[2].startswith("rw"):
        return False
    if hi - lo == GLIBC_ARENA_BYTES:
        return True
    return (nxt is not None and nxt[3] == "" and nxt[0] == hi and nxt[2].startswith("---")
            and nxt[1] == lo + GLIBC_ARENA_BYTES)


def smaps_category(m, nxt, exe, spans):
    """What one mapping holds, from its name, place, size and alignment (`nxt`: the mapping
    after it)."""
    lo, hi, path = m[0], m[1], m[3]
    if path == "[heap]" or _is_arena(m, nxt):
        return "malloc"
    if path.startswith("/memfd:wasm") or any(a <= lo and hi <= b for a, b in spans):
        return "wasm pooling allocator"
    if path:
        if path.startswith("["):
            return "other"  # [stack], [vdso], [vvar]: the main thread's stack, the kernel's pages
        return "binary" if exe and path.split(" (deleted)")[0] == exe else "libraries and files"
    return "other anonymous (mmap'd allocations, thread stacks)"


def pss_breakdown_kb(pid):
    """{category: PSS in kB} for one process (empty if it is gone)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        maps = _smaps(pid)
    except OSError:
        return {}
    spans = _wasm_spans(maps)
    out = {}
    for i, m in enumerate(maps):
        c = smaps_category(m, maps[i + 1] if i + 1 < len(maps) else None, exe, spans)
        out[c] = out.get(c, 0) + m[4]
    return out


def breakdown_text(kb_by_category):
    """`binary 9.1, malloc 3.0, ...` in MB, largest first."""
    items = sorted(kb_by_category.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / 1024:.1f}" for k, v in items if v >= 102)
