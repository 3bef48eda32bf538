"""The Debian package (`make deb`, or `cargo deb -p corvid --no-build --profile dev --strip`),
given as $CORVID_DEB: unpacked into a clean directory, its binary runs the packaged config the
way the systemd unit starts it (an unprivileged user, only CAP_NET_BIND_SERVICE, no new
privileges) on a port below 1024 with a packaged plugin, and delivers a message; its manual
pages render. Skipped without $CORVID_DEB (cargo-deb is not installed by tests/setup).

Not covered: `dpkg -i` on the machine itself and the postinst (user creation) under systemd."""

import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, to_toml

DEB = os.environ.get("CORVID_DEB")
pytestmark = [
    pytest.mark.skipif(not DEB, reason="set CORVID_DEB to a built .deb (make deb)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as another user"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

USER, GROUP = "nobody", "nogroup"


def low_port() -> int:
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


@pytest.fixture
def root():
    d = Path(tempfile.mkdtemp(prefix="corvid-deb-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_package_runs_as_the_unit_would_and_delivers(root):
    subprocess.run(["dpkg-deb", "-x", DEB, str(root)], check=True, timeout=60)
    info = subprocess.run(["dpkg-deb", "-I", DEB], capture_output=True, text=True, check=True).stdout
    assert "Depends: adduser" in info, info
    conffiles = subprocess.run(["dpkg-deb", "-f", DEB, "Package"], capture_output=True, text=True).stdout
    assert conffiles.strip() == "corvid"
    binary = root / "usr/bin/corvid"
    plugins = sorted(p.name for p in (root / "usr/lib/corvid/plugins").iterdir())
    assert plugins == ["address_rewrite.wasm", "dnsbl.wasm", "header_stamp.wasm", "rate_limit.wasm",
                       "recipient_list.wasm", "route_table.wasm", "rspamd.wasm"], plugins
    assert (root / "etc/corvid/corvid.toml").stat().st_mode & 0o777 == 0o640
    unit = (root / "usr/lib/systemd/system/corvid.service").read_text()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit and "Type=notify" in unit

    # man corvid works from the packaged page.
    if shutil.which("man"):
        out = subprocess.run(["man", "-l", str(root / "usr/share/man/man1/corvid.1.gz")],
                             capture_output=True, text=True, timeout=30, env={"MANPAGER": "cat"})
        assert out.returncode == 0 and "serve" in out.stdout, out.stderr

    # The packaged config, moved into this directory (what postinst prepares as /var/lib/corvid).
    with open(root / "etc/corvid/corvid.toml", "rb") as f:
        cfg = tomllib.load(f)
    data = root / "var/lib/corvid"
    data.mkdir(parents=True)
    nobody = __import__("pwd").getpwnam(USER)
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    data.chmod(0o700)
    port = low_port()
    cfg["server"]["data_dir"] = str(data)
    cfg["server"]["hostname"] = "mx.example.org"
    for l in cfg["listener"]:
        l["address"] = f"127.0.0.1:{port}" if l["name"] == "smtp" else "127.0.0.1:0"
    # The packaged config names certificates in /etc/corvid/tls that the administrator
    # provides; here the self-signed one made at first start.
    cfg["tls"] = {}
    # No outside DNS here: the SPF/DKIM/DMARC checks would wait for timeouts.
    cfg.setdefault("auth_checks", {})["enabled"] = False
    cfg["plugin"] = [{
        "name": "header-stamp",
        "path": str(root / "usr/lib/corvid/plugins/header_stamp.wasm"),
        "config": {"add": {"X-Corvid-Package": "installed"}},
    }]
    config = root / "etc/corvid/test.toml"
    config.write_text(to_toml(cfg))
    config.chmod(0o644)
    check = subprocess.run([str(binary), "check-config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    notify = root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    notify.chmod(0o777)
    sock.settimeout(60)
    # The unit's User=, Group=, AmbientCapabilities=, CapabilityBoundingSet= and
    # NoNewPrivileges=, by hand (systemd does not run in CI).
    cmd = ["setpriv", f"--reuid={USER}", f"--regid={GROUP}", "--clear-groups",
           "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
           "--bounding-set=-all,+net_bind_service", "--no-new-privs",
           str(binary), "serve", "--config", str(config), "--log-format", "json"]
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    env["NOTIFY_SOCKET"] = str(notify)
    proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(l.decode("utf-8", "replace") for l in proc.stderr),
                              daemon=True)
    reader.start()
    try:
        sock.settimeout(0.2)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert sock.recv(64) == b"READY=1"
                break
            except socket.timeout:
                assert proc.poll() is None and time.monotonic() < deadline, "no READY=1\n" + "".join(lines)
        sock.settimeout(30)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid_line = next(l for l in status.splitlines() if l.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4, uid_line
        cap_eff = int(next(l for l in status.splitlines() if l.startswith("CapEff:")).split()[1], 16)
        assert cap_eff == 1 << 10, hex(cap_eff)  # CAP_NET_BIND_SERVICE only

        with smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT) as s:
            s.sendmail("sender@example.com", ["alice@example.org"], b"Subject: packaged\r\n\r\nhello\r\n")
        new = data / "mail/example.org/alice/Maildir/new"
        deadline = time.monotonic() + 20
        while not (new.exists() and any(new.iterdir())):
            assert time.monotonic() < deadline, "not delivered\n" + "".join(lines)
            time.sleep(0.1)
        delivered = next(new.iterdir())
        assert delivered.stat().st_uid == nobody.pw_uid
        assert b"X-Corvid-Package: installed" in delivered.read_bytes()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines)
        assert sock.recv(64) == b"STOPPING=1"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        reader.join(timeout=5)
        print("".join(lines))
    events = [json.loads(l) for l in lines if l.startswith("{")]
    assert any(e.get("message") == "plugin loaded" and e.get("plugin") == "header-stamp" for e in events)
