"""The rspamd plugin over real SMTP against a real Rspamd (Debian `rspamd`), started on loopback
with a minimal configuration: no Redis, no network modules (RBLs, fuzzy, ...), a dead resolver,
and three test rules keyed on the subject. GTUBE is rejected, a clean message is delivered with
its score fields, Rspamd's actions map to replies or fields, the transaction's metadata reaches
Rspamd, and with Rspamd stopped `fail = "open"` delivers while `fail = "closed"` answers 451."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import build_wasm, REPO, split_delivered

pytestmark = pytest.mark.skipif(shutil.which("rspamd") is None, reason="rspamd is not installed")

PLUGIN = REPO / "plugins" / "rspamd"
WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "rspamd.wasm"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

RULES = """
local function subject_has(word)
  return function(task)
    local s = task:get_subject() or ''
    return s:find(word, 1, true) ~= nil
  end
end
rspamd_config.CORVID_SCORE = { callback = subject_has('scoreme'), score = 3.5, group = 'corvid' }
rspamd_config.CORVID_FLAG = { callback = subject_has('flagme'), score = 7.0, group = 'corvid' }
rspamd_config.CORVID_SOFT = { callback = subject_has('softme'), score = 13.0, group = 'corvid' }
rspamd_config.CORVID_REWRITE = { callback = subject_has('rewriteme'), score = 10.0, group = 'corvid' }
"""

CONFIG = """
options {{
  pidfile = "{d}/rspamd.pid";
  dbdir = "{d}/db";
  hs_cache_dir = "{d}/db";
  local_addrs = [];
  enable_test_patterns = true;
  dns {{ nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{d}/rspamd.log"; level = "info"; }}
actions {{ add_header = 6; rewrite_subject = 9; soft_reject = 12; reject = 15; }}
lua = "{d}/rules.lua";
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rspamd:
    def __init__(self, d):
        self.dir = d
        self.port = free_port()
        (d / "db").mkdir()
        (d / "rules.lua").write_text(RULES)
        (d / "rspamd.conf").write_text(CONFIG.format(d=d, port=self.port))
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        cmd = ["rspamd", "-f", "-c", str(self.dir / "rspamd.conf")]
        if os.geteuid() == 0:
            cmd += ["-i", "-u", "root", "-g", "root"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.dir / "stdout.log", "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"rspamd exited:\n{self.log()}"
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.read().strip() == b"pong":
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"rspamd did not answer /ping within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log(self) -> str:
        p = self.dir / "rspamd.log"
        out = (self.dir / "stdout.log").read_text(errors="replace") if (self.dir / "stdout.log").exists() else ""
        return out[-3000:] + (p.read_text(errors="replace")[-5000:] if p.exists() else "")


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    r = Rspamd(tmp_path_factory.mktemp("rspamd"))
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def rspamd_wasm():
    """The plugin, built for wasm32-wasip2 (a no-op when `make plugins` already did)."""
    return build_wasm(PLUGIN, WASM)


def plugin(wasm, url: str, fail: str = "open") -> dict:
    prefix = url.rstrip("/") + "/"
    return {"name": "rspamd", "path": str(wasm), "order": 40, "capabilities": ["log", "config"],
            "http": [prefix], "limits": {"hook_time_ms": 10000, "http_timeout_ms": 8000},
            "config": {"url": url, "fail": fail}}


def message(subject: str, body: str = "hello there\r\n", extra: str = "") -> bytes:
    return (f"From: sender@example.org\r\nTo: alice@corvid.test\r\nSubject: {subject}\r\n{extra}"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}").encode()


def data(srv, content: bytes, code: int, enhanced: str | None = None):
    with srv.connect() as c:
        c.begin()
        c.expect("DATA", 354)
        r = c.expect(content + b".", code, enhanced)  # cmd() adds the CRLF
        c.expect("QUIT", 221)
        return r


def test_gtube_is_rejected_with_550(make_server, rspamd, rspamd_wasm):
    srv = make_server({"plugin": [plugin(rspamd_wasm, rspamd.url)]})
    r = data(srv, message("gtube", f"{GTUBE}\r\n"), 550, "5.7.1")
    assert "gtube" in r.text.lower(), r.text  # Rspamd's own SMTP message
    assert srv.all_mail() == []


def test_a_clean_message_is_delivered_with_its_score(make_server, rspamd, rspamd_wasm):
    srv = make_server({"plugin": [plugin(rspamd_wasm, rspamd.url)]})
    forged = "X-Spam-Status: No, score=-100\r\nX-Spam-Flag: NO\r\n"
    data(srv, message("scoreme please", extra=forged), 250)
    [path] = srv.wait_mail("alice")
    content = split_delivered(path).content
    assert b"X-Spam-Score: 3.50\r\n" in content, content[:600]
    assert b"X-Spam-Status: No, score=3.50 required=15.00\r\n" in content, content[:600]
    assert b"X-Spam-Action: no action\r\n" in content
    assert b"score=-100" not in content and b"X-Spam-Flag" not in content, "forged fields removed"
    assert b"hello there" in content
    # The transaction's metadata reached Rspamd (its task log line).
    log = rspamd.log()
    line = next((ln for ln in log.splitlines() if "CORVID_SCORE" in ln and "qid: <corvid-" in ln), None)
    assert line, log[-2000:]
    assert "ip: 127.0.0.1" in line and "from: <sender@example.org>" in line, line
    assert "rcpts: <alice@corvid.test>" in line, line


def test_add_header_flags_the_message(make_server, rspamd, rspamd_wasm):
    srv = make_server({"plugin": [plugin(rspamd_wasm, rspamd.url)]})
    data(srv, message("flagme now"), 250)
    [path] = srv.wait_mail("alice")
    content = split_delivered(path).content
    assert b"X-Spam-Flag: YES\r\n" in content, content[:600]
    assert b"X-Spam-Status: Yes, score=7.00 required=15.00\r\n" in content, content[:600]
    assert b"X-Spam-Action: add header\r\n" in content


def test_rewrite_subject_marks_the_subject(make_server, rspamd, rspamd_wasm):
    srv = make_server({"plugin": [plugin(rspamd_wasm, rspamd.url)]})
    data(srv, message("rewriteme today"), 250)
    [path] = srv.wait_mail("alice")
    content = split_delivered(path).content
    subjects = [ln for ln in content.split(b"\r\n") if ln.startswith(b"Subject:")]
    assert len(subjects) == 1 and b"SPAM" in subjects[0] and b"rewriteme today" in subjects[0], subjects
    assert b"X-Spam-Flag: YES\r\n" in content and b"X-Spam-Action: rewrite subject\r\n" in content


def test_soft_reject_is_451(make_server, rspamd, rspamd_wasm):
    srv = make_server({"plugin": [plugin(rspamd_wasm, rspamd.url)]})
    data(srv, message("softme later"), 451, "4.7.1")
    assert srv.all_mail() == []


def test_a_prefix_outside_the_grant_is_denied_and_fails_by_policy(make_server, rspamd, rspamd_wasm):
    """The manifest grants another port only: the request is refused by the host (never sent),
    and the plugin's fail policy applies."""
    p = plugin(rspamd_wasm, rspamd.url, fail="closed")
    p["http"] = [f"http://127.0.0.1:{free_port()}/"]
    srv = make_server({"plugin": [p]})
    r = data(srv, message("gtube", f"{GTUBE}\r\n"), 451, "4.3.0")
    assert "unavailable" in r.text, r.text
    assert any("http request denied" in ln for ln in srv.lines), "\n".join(srv.lines[-20:])


def test_rspamd_stopped_fails_open_or_closed(make_server, rspamd, rspamd_wasm):
    """Last in this module: stops the shared Rspamd."""
    rspamd.stop()
    open_srv = make_server({"plugin": [plugin(rspamd_wasm, rspamd.url, fail="open")]})
    t = time.monotonic()
    data(open_srv, message("while down", f"{GTUBE}\r\n"), 250)
    assert time.monotonic() - t < 8, "a refused connection fails fast"
    [path] = open_srv.wait_mail("alice")
    assert b"X-Spam-" not in split_delivered(path).content, "unscanned: no score fields"

    closed_srv = make_server({"plugin": [plugin(rspamd_wasm, rspamd.url, fail="closed")]})
    r = data(closed_srv, message("while down"), 451, "4.3.0")
    assert "Spam scanner unavailable" in r.text
    assert closed_srv.running()
