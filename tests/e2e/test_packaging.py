"""What the Debian package and its systemd unit rely on: READY=1/STOPPING=1 over
NOTIFY_SOCKET (Type=notify), `corvid man DIR` pages that man(1) renders, and a unit file
systemd accepts."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO

UNIT = REPO / "packaging" / "systemd" / "corvid.service"


def test_sd_notify_ready_after_bind_and_stopping_at_shutdown(make_server, tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    srv = make_server()
    assert sock.recv(64) == b"READY=1"
    # READY comes after the listeners are bound: the server answers (start() already did).
    listening = [e for e in srv.events() if e.get("message") == "listening"]
    assert len(listening) == len(srv.config["listener"])
    srv.stop()
    assert sock.recv(64) == b"STOPPING=1"
    sock.close()


def test_man_pages_render(tmp_path):
    r = subprocess.run([str(BIN), "man", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    pages = sorted(p.name for p in tmp_path.iterdir())
    for name in ("corvid.1", "corvid-serve.1", "corvid-check-config.1", "corvid-queue-list.1"):
        assert name in pages, pages
    if shutil.which("man") is None:
        pytest.skip("man(1) not installed")
    out = subprocess.run(["man", "-l", str(tmp_path / "corvid-serve.1")], capture_output=True,
                         text=True, timeout=30, env={"MANPAGER": "cat", "PAGER": "cat", "COLUMNS": "100"})
    assert out.returncode == 0, out.stderr
    assert "corvid-serve" in out.stdout and "SIGTERM" in out.stdout, out.stdout


def test_the_unit_has_what_the_package_promises():
    text = UNIT.read_text()
    for line in ("Type=notify", "User=corvid", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/corvid",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text.splitlines(), line
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    # Verified with the binary swapped for /bin/true (the package is not installed here).
    unit = Path("/tmp") / f"corvid-verify-{time.monotonic_ns()}.service"
    unit.write_text(text.replace("/usr/bin/corvid", "/bin/true"))
    try:
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        problems = [l for l in (r.stdout + r.stderr).splitlines() if "man " not in l and l.strip()]
        assert not problems, problems
    finally:
        unit.unlink()
