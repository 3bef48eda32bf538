"""End-to-end harness: runs the `corvid` binary as a process on a loopback port with a config
written per test, and gives tests an SMTP client on raw sockets, Maildir and log helpers.

The binary is `$CORVID_BIN`, or `<repo>/target/debug/corvid` (build it with
`cargo build -p corvid`). Every test gets its own temporary directory, so tests are independent
and can run in parallel.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("CORVID_BIN", REPO / "target" / "debug" / "corvid"))
DEV_CONFIG = REPO / "config" / "dev.toml"
REFERENCE_CONFIG = REPO / "config" / "corvid.toml"
HOSTNAME = "mx.corvid.test"

# Bounded waits: long enough for a slow CI machine, short enough that a hang fails quickly.
START_TIMEOUT = 20.0
IO_TIMEOUT = 10.0
MAIL_TIMEOUT = 15.0

# A reply line: three digits, then a space (last line) or a dash (more lines follow).
REPLY_LINE = re.compile(rb"^([2-5][0-9]{2})([ -]?)(.*)$", re.S)
ENHANCED = re.compile(r"^[245]\.[0-9]{1,3}\.[0-9]{1,3}( |$)")


# --------------------------------------------------------------------------------------------
# Config


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a valid TOML basic string (\uXXXX escapes included)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(doc: dict) -> str:
    """Writes the small subset of TOML the Corvid config uses: tables, arrays of tables, and
    inline tables for dicts nested in them (aliases)."""
    lines: list[str] = []

    def table(prefix: str, t: dict, in_array: bool) -> None:
        for k, v in t.items():
            if isinstance(v, dict) and in_array:
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
            elif not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict)):
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in t.items():
            name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
            if isinstance(v, dict) and not in_array:
                lines.append(f"\n[{name}]")
                table(name, v, False)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"\n[[{name}]]")
                    table(name, item, True)

    table("", doc, False)
    return "\n".join(lines).strip() + "\n"


def base_config(data_dir: Path) -> dict:
    """config/dev.toml, moved to `data_dir` and port 0, with short timeouts for tests."""
    with open(DEV_CONFIG, "rb") as f:
        cfg = tomllib.load(f)
    cfg["server"]["data_dir"] = str(data_dir)
    for listener in cfg["listener"]:
        listener["address"] = "127.0.0.1:0"
    cfg["limits"].update(
        command_timeout="10s",
        data_timeout="10s",
        shutdown_grace="3s",
    )
    cfg["log"] = {"format": "json", "level": "info"}
    # The dev config's fixed metrics port would collide between servers run in parallel;
    # test_metrics.py turns the endpoint on with port 0.
    cfg.pop("metrics", None)
    # The core is tested without the bundled plugins (they change messages on purpose);
    # test_plugins.py puts them back with bundled_plugins().
    cfg.pop("plugin", None)
    # Mail authentication is tested in test_auth_smtp.py against the loopback DNS server; here
    # no check asks the system's DNS and no message changes (no A-R field, no DKIM signature).
    cfg["auth_checks"] = {"enabled": False}
    cfg.pop("dkim", None)
    # Compiled plugin code is shared by every server of the run: compiled once, not per test.
    cfg["server"]["plugin_cache"] = str(PLUGIN_CACHE)
    return cfg


PLUGIN_CACHE = REPO / "target" / "e2e-plugin-cache"
PLUGIN_DIR = REPO / "target" / "plugins" / "wasm32-wasip2" / "release"


def bundled_plugins() -> list[dict]:
    """The [[plugin]] tables of config/dev.toml, with their component paths made absolute."""
    with open(DEV_CONFIG, "rb") as f:
        plugins = tomllib.load(f).get("plugin", [])
    for p in plugins:
        p["path"] = str(REPO / p["path"])
        assert Path(p["path"]).exists(), f"{p['path']} missing: run `make plugins`"
    return plugins


# --------------------------------------------------------------------------------------------
# SMTP client on a raw socket


class Reply(NamedTuple):
    code: int
    lines: list[str]  # text after "NNN-" / "NNN " of each line
    raw: bytes

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        m = re.match(r"^([245]\.[0-9]{1,3}\.[0-9]{1,3})( |$)", self.lines[-1])
        return m.group(1) if m else None

    def __str__(self) -> str:
        return self.raw.decode("utf-8", "replace").rstrip("\r\n")


class SmtpClient:
    """A deliberately dumb client: sends exactly the bytes it is given and parses replies
    strictly (CRLF-terminated lines, `NNN-` continuations, `NNN ` last line)."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; unterminated data {self.buf!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> Reply:
        lines: list[str] = []
        raw = b""
        code = None
        while True:
            line = self.read_line()
            raw += line + b"\r\n"
            m = REPLY_LINE.match(line)
            assert m, f"malformed reply line {line!r}"
            c = int(m.group(1))
            assert code is None or c == code, f"code changed inside a multi-line reply: {raw!r}"
            code = c
            assert b"\r" not in line and b"\n" not in line, f"bare CR/LF in reply {line!r}"
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines, raw)

    def cmd(self, line: bytes | str) -> Reply:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    def expect(self, line: bytes | str | None, code: int, enhanced: str | None = None) -> Reply:
        r = self.cmd(line) if line is not None else self.reply()
        assert r.code == code, f"{line!r}: expected {code}, got {r}"
        if enhanced is not None:
            assert r.enhanced == enhanced, f"{line!r}: expected {code} {enhanced}, got {r}"
        return r

    def greet(self) -> Reply:
        return self.expect(None, 220)

    def ehlo(self, name: str = "client.test") -> Reply:
        return self.expect(f"EHLO {name}", 250)

    def replies_until_eof(self) -> list[Reply]:
        """Every reply until the server closes the connection."""
        out = []
        while True:
            try:
                out.append(self.reply())
            except EOFError as e:
                assert self.buf == b"", str(e)
                return out

    def at_eof(self, timeout: float = IO_TIMEOUT) -> bool:
        """True when the server closed the connection (nothing more arrives)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return self.buf == b""
                self.buf += chunk
        except ConnectionResetError:
            return self.buf == b""
        finally:
            self.sock.settimeout(self.timeout)

    def begin(self, sender: str = "sender@example.org", rcpts=("alice@corvid.test",)) -> None:
        """Greeting, EHLO, MAIL and RCPT, each asserted positive."""
        self.greet()
        self.ehlo()
        self.expect(f"MAIL FROM:<{sender}>", 250, "2.1.0")
        for r in rcpts:
            self.expect(f"RCPT TO:<{r}>", 250, "2.1.5")


def queue_id_of(reply_text: str) -> str:
    m = re.search(r"Ok: queued as ([0-9A-Za-z]+)\s*$", reply_text)
    assert m, f"no queue id in {reply_text!r}"
    return m.group(1)


# --------------------------------------------------------------------------------------------
# Maildir files


class Delivered(NamedTuple):
    path: Path
    data: bytes
    return_path: bytes  # the whole Return-Path line with CRLF
    received: bytes  # the whole (folded) Received header with its CRLFs
    content: bytes  # the rest: what the client sent


def split_delivered(path: Path) -> Delivered:
    data = path.read_bytes()
    m = re.match(rb"(Return-Path: [^\r\n]*\r\n)(Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)", data)
    assert m, f"{path}: does not start with Return-Path and Received: {data[:300]!r}"
    return Delivered(path, data, m.group(1), m.group(2), data[m.end():])


# --------------------------------------------------------------------------------------------
# The server process


class Corvid:
    def __init__(self, workdir: Path, overrides: dict | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "corvid.toml"
        self.config = deep_merge(base_config(self.data_dir), overrides or {})
        self.config_path.write_text(to_toml(self.config), encoding="utf-8")
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.ports: dict[str, int] = {}
        self.lines: list[str] = []  # every stderr line of every run, in order
        self.run_start = 0  # index in `lines` where the current run starts
        self.cond = threading.Condition()
        self.reader: threading.Thread | None = None
        self.exit_codes: list[int] = []

    # --- process control ----------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> "Corvid":
        assert BIN.exists(), f"{BIN} not found: run `cargo build -p corvid` or set CORVID_BIN"
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.cond:
            self.run_start = len(self.lines)
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(self.config_path), "--log-format", "json"],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "RUST_LOG"},
        )
        self.reader = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self.reader.start()
        names = [l["name"] for l in self.config["listener"]]
        self.ports = {}
        for name in names:
            line = self.wait_log(lambda e: e.get("message") == "listening" and e.get("listener") == name,
                                 timeout, this_run=True)
            m = re.search(r"127\.0\.0\.1:([0-9]+)", str(line.get("address")))
            assert m, f"no port in {line}"
            self.ports[name] = int(m.group(1))
        # the port-25 style listener, which these tests are about
        self.port = self.ports["smtp"]
        # One SMTP round trip: the accept loop runs, so start-up is over (signal handlers are
        # installed before it). Signals sent earlier are the subject of their own test.
        with self.connect() as c:
            c.greet()
            c.expect("QUIT", 221)
        return self

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(text)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_and_wait(self, sig: int, timeout: float) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"corvid did not exit within {timeout}s of signal {sig}")
        if self.reader:
            self.reader.join(timeout=5)
        self.exit_codes.append(rc)
        return rc

    def stop(self) -> None:
        """SIGTERM: a graceful stop that must exit 0."""
        rc = self.signal_and_wait(signal.SIGTERM, 20)
        assert rc == 0, f"corvid exited {rc} on SIGTERM\n{self.log_text()}"

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self.signal_and_wait(signal.SIGKILL, 10)

    def restart(self) -> "Corvid":
        return self.start()

    # --- logs -----------------------------------------------------------------------------

    def log_text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)

    def events(self, this_run: bool = False) -> list[dict]:
        with self.cond:
            lines = self.lines[self.run_start:] if this_run else list(self.lines)
        out = []
        for l in lines:
            try:
                out.append(json.loads(l))
            except ValueError:
                pass
        return out

    def wait_log(self, pred: Callable[[dict], bool], timeout: float = MAIL_TIMEOUT, this_run: bool = False) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                start = self.run_start if this_run else 0
                lines = self.lines[start:]
                for l in lines[seen:]:
                    try:
                        e = json.loads(l)
                    except ValueError:
                        continue
                    if pred(e):
                        return e
                seen = len(lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"log line not seen within {timeout}s:\n" + "\n".join(self.lines[-40:]))
                if self.proc is not None and self.proc.poll() is not None and not (self.reader and self.reader.is_alive()):
                    raise AssertionError(f"corvid exited ({self.proc.returncode}) while waiting for a log line:\n" + "\n".join(self.lines[-40:]))
                self.cond.wait(min(left, 0.2))

    # --- clients --------------------------------------------------------------------------

    def connect(self, timeout: float = IO_TIMEOUT) -> SmtpClient:
        assert self.port
        return SmtpClient(self.port, timeout)

    def smtp(self) -> smtplib.SMTP:
        assert self.port
        s = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=IO_TIMEOUT)
        return s

    def send(self, content: bytes, sender: str = "sender@example.org", rcpts=("alice@corvid.test",),
             mail_options=(), rcpt_options=()) -> str:
        """Sends one message with smtplib; returns the queue id from the 250 reply."""
        with self.smtp() as s:
            s.ehlo()
            code, msg = s.mail(sender, list(mail_options))
            assert code == 250, (code, msg)
            for r in rcpts:
                code, msg = s.rcpt(r, list(rcpt_options))
                assert code == 250, (r, code, msg)
            code, msg = s.data(content)
            assert code == 250, (code, msg)
            return queue_id_of(msg.decode())

    # --- admin socket and CLI -------------------------------------------------------------

    @property
    def admin_socket(self) -> Path:
        return self.data_dir / "admin.sock"

    def admin(self, op: str, **kw) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(IO_TIMEOUT)
            s.connect(str(self.admin_socket))
            s.sendall(json.dumps({"op": op, **kw}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def queue(self) -> list:
        r = self.admin("queue-list")
        assert r["ok"], r
        return r["data"]

    def wait_queue_empty(self, timeout: float = MAIL_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            q = self.queue()
            if not q:
                return
            assert time.monotonic() < deadline, f"queue not empty after {timeout}s: {q}"
            time.sleep(0.05)

    def wait_no_pending(self, timeout: float = MAIL_TIMEOUT) -> list:
        """Waits until no queued message has a recipient still to be attempted; returns what
        is left in the queue (a finished message should not be there)."""
        deadline = time.monotonic() + timeout
        while True:
            q = self.queue()
            if not any(r["status"] == "pending" for m in q for r in m["recipients"]):
                return q
            assert time.monotonic() < deadline, f"recipients still pending after {timeout}s: {q}"
            time.sleep(0.05)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=self.workdir, timeout=timeout)

    # --- Maildir --------------------------------------------------------------------------

    @property
    def mail_root(self) -> Path:
        return self.data_dir / "mail"

    def maildir(self, user: str, domain: str = "corvid.test") -> Path:
        return self.mail_root / domain / user / "Maildir"

    def mail_files(self, user: str, domain: str = "corvid.test") -> list[Path]:
        new = self.maildir(user, domain) / "new"
        if not new.is_dir():
            return []
        return sorted(p for p in new.iterdir() if p.is_file())

    def wait_mail(self, user: str, count: int = 1, domain: str = "corvid.test",
                  timeout: float = MAIL_TIMEOUT) -> list[Path]:
        """Waits until `user` has at least `count` messages in new/; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.mail_files(user, domain)
            if len(files) >= count:
                return files
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{user}@{domain}: {len(files)} message(s) after {timeout}s, expected {count}\n"
                    + "\n".join(self.lines[-30:]))
            time.sleep(0.02)

    def all_mail(self) -> list[Path]:
        if not self.mail_root.exists():
            return []
        return sorted(p for p in self.mail_root.rglob("*") if p.is_file() and p.parent.name in ("new", "cur", "tmp"))


def build_wasm(crate_dir: Path, wasm: Path, timeout: float = 900) -> Path:
    """Builds the plugin crate at `crate_dir` for wasm32-wasip2 into target/plugins (a no-op when
    `make plugins` or an earlier test already did) and returns `wasm`, which must then exist."""
    r = subprocess.run(["cargo", "build", "--quiet", "--manifest-path", str(crate_dir / "Cargo.toml"),
                        "--target", "wasm32-wasip2", "--release", "--target-dir", str(REPO / "target" / "plugins")],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    assert wasm.exists(), wasm
    return wasm


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    assert BIN.exists(), f"{BIN} not found: run `cargo build -p corvid` or set CORVID_BIN"
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def make_server(tmp_path):
    """`make_server(overrides)` starts a server with config/dev.toml deep-merged with
    `overrides`; every server is stopped at the end of the test."""
    servers: list[Corvid] = []

    def make(overrides: dict | None = None, start: bool = True, name: str = "srv",
             start_timeout: float = START_TIMEOUT) -> Corvid:
        workdir = tmp_path / f"{name}{len(servers)}"
        workdir.mkdir()
        c = Corvid(workdir, overrides)
        servers.append(c)
        if start:
            c.start(start_timeout)
        return c

    yield make
    for c in servers:
        if c.running():
            try:
                c.signal_and_wait(signal.SIGTERM, 20)
            except AssertionError:
                pass
        # Shown by pytest when the test failed.
        print(f"--- corvid log ({c.workdir}) ---\n{c.log_text()}")


@pytest.fixture
def server(make_server) -> Corvid:
    return make_server()


def domain(name: str, mailboxes=(), aliases=None, catch_all: str | None = None) -> dict:
    d: dict = {"name": name, "mailboxes": list(mailboxes)}
    if aliases:
        d["aliases"] = aliases
    if catch_all:
        d["catch_all"] = catch_all
    return d


def with_domains(*extra: dict) -> dict:
    """Overrides that keep corvid.test from dev.toml and add `extra` domains."""
    with open(DEV_CONFIG, "rb") as f:
        dev = tomllib.load(f)
    return {"local": {"domain": dev["local"]["domain"] + list(extra)}}
