"""The Debian package, given as $CORVID_DEB (`make deb`, or in CI `packaging/deb-dev`, the same
package around the debug binary), installed on this machine with `dpkg -i` and purged at the
end. CI runs as root in a throwaway machine; elsewhere the test is skipped unless CORVID_DEB is
set, and it refuses to touch a machine where a `corvid` package or user already exists. The
package conflicts with other MTAs; next to the suite's Postfix it is installed with
--force-conflicts after checking that plain `dpkg -i` refuses.

What is checked: postinst made the `corvid` system user and /var/lib/corvid (0700, its own);
the config is root:corvid 0640; the unit's ExecStartPre (`check-config`) and ExecStart run as
that user with only CAP_NET_BIND_SERVICE and no new privileges (systemd does not run in CI:
setpriv does what User=, AmbientCapabilities=, CapabilityBoundingSet= and NoNewPrivileges= do),
on port 25 (a free port below 1024 when 25 is taken), signal READY=1, and deliver a message
through a packaged plugin; `man corvid` shows the installed page; purge removes the user and
/var/lib/corvid. Not covered: systemd's own sandboxing (ProtectSystem= and the like)."""

import os
import pwd
import shlex
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
    pytest.mark.skipif(not DEB, reason="set CORVID_DEB to a built .deb (make deb, packaging/deb-dev)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="dpkg -i needs root"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

CONFIG = Path("/etc/corvid/corvid.toml")
DATA = Path("/var/lib/corvid")
PLUGINS = Path("/usr/lib/corvid/plugins")


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def smtp_port() -> int:
    """25, or the first free port below 1024 (still needs the capability)."""
    for port in [25, *range(700, 1000)]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def unit_lines() -> dict[str, str]:
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        unit = Path(d) / "corvid.service"
        if unit.exists():
            return dict(l.split("=", 1) for l in unit.read_text().splitlines() if "=" in l and not l.startswith("#"))
    raise AssertionError("corvid.service not installed")


def is_installed(package: str) -> bool:
    status = run("dpkg-query", "-W", "-f=${Status}", package).stdout
    return status.endswith(" installed")


@pytest.fixture
def installed():
    if is_installed("corvid") or run("getent", "passwd", "corvid").returncode == 0:
        pytest.skip("a corvid package or user exists on this machine already: not touching it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    conflicts = run("dpkg-deb", "-f", DEB, "Conflicts").stdout.strip()
    assert conflicts == "mail-transport-agent", conflicts
    force = []
    if is_installed("postfix"):
        # The test suite's Postfix (a peer in other tests) is an MTA too: dpkg refuses, as it
        # should on a real host; the test installs alongside it rather than removing it.
        r = run("dpkg", "-i", DEB, env=env)
        assert r.returncode != 0 and "conflicts with mail-transport-agent" in r.stdout + r.stderr, r
        force = ["--force-conflicts"]
    r = run("dpkg", "-i", *force, DEB, env=env)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield
    finally:
        # The certificate the test provided as the administrator (dpkg leaves what it did not install).
        shutil.rmtree("/etc/corvid/tls", ignore_errors=True)
        purge = run("dpkg", "--purge", "corvid")
        assert purge.returncode == 0, purge.stdout + purge.stderr
        assert run("getent", "passwd", "corvid").returncode != 0, "purge removes the user"
        assert not DATA.exists() and not Path("/usr/bin/corvid").exists()
        assert not CONFIG.parent.exists(), list(CONFIG.parent.iterdir())


def as_unit(unit: dict[str, str], command: str) -> list[str]:
    """`command` (ExecStart= or ExecStartPre=) as systemd would start it, by hand."""
    assert unit["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert unit["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert unit["NoNewPrivileges"] == "yes"
    return ["setpriv", f"--reuid={unit['User']}", f"--regid={unit['Group']}", "--init-groups",
            "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service", "--no-new-privs", *shlex.split(unit[command])]


def administer(port: int) -> None:
    """What the administrator does after installing: provide the certificate the config names,
    pick the addresses, and (here) a packaged plugin; no outside DNS for the mail checks."""
    with open(CONFIG, "rb") as f:
        cfg = tomllib.load(f)
    [pair] = cfg["tls"]["certificates"]
    Path(pair["cert"]).parent.mkdir(parents=True, exist_ok=True)
    r = run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=mx.example.org", "-days", "2", "-keyout", pair["key"], "-out", pair["cert"])
    assert r.returncode == 0, r.stderr
    for path in (pair["cert"], pair["key"]):
        shutil.chown(path, "root", "corvid")
        os.chmod(path, 0o640)
    for l in cfg["listener"]:
        l["address"] = f"127.0.0.1:{port}" if l["name"] == "smtp" else "127.0.0.1:0"
    cfg.setdefault("auth_checks", {})["enabled"] = False
    cfg["plugin"] = [{"name": "header-stamp", "path": str(PLUGINS / "header_stamp.wasm"),
                      "config": {"add": {"X-Corvid-Package": "installed"}}}]
    CONFIG.write_text(to_toml(cfg))


def test_installed_package_runs_as_its_user_on_port_25_and_delivers(installed):
    corvid = pwd.getpwnam("corvid")
    assert corvid.pw_dir == str(DATA) and corvid.pw_uid != 0
    st = DATA.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (corvid.pw_uid, 0o700)
    st = CONFIG.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, corvid.pw_gid, 0o640)
    assert sorted(p.name for p in PLUGINS.iterdir()) == [
        "address_rewrite.wasm", "dnsbl.wasm", "header_stamp.wasm", "rate_limit.wasm",
        "recipient_list.wasm", "route_table.wasm", "rspamd.wasm"]
    unit = unit_lines()
    assert unit["Type"] == "notify" and unit["User"] == "corvid", unit

    man = run("man", "corvid", env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
    assert man.returncode == 0 and "serve" in man.stdout and "check-config" in man.stdout, man.stderr

    port = smtp_port()
    administer(port)
    check = run(*as_unit(unit, "ExecStartPre"), cwd="/")
    assert check.returncode == 0, check.stderr

    tmp = Path(tempfile.mkdtemp(prefix="corvid-notify-"))
    tmp.chmod(0o755)
    notify = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    notify.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    env["NOTIFY_SOCKET"] = str(notify)
    proc = subprocess.Popen(as_unit(unit, "ExecStart"), cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
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
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        uids = next(l for l in status if l.startswith("Uid:")).split()[1:]
        assert uids == [str(corvid.pw_uid)] * 4, uids
        cap_eff = int(next(l for l in status if l.startswith("CapEff:")).split()[1], 16)
        assert cap_eff == 1 << 10, hex(cap_eff)  # CAP_NET_BIND_SERVICE only

        with smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT) as s:
            s.sendmail("sender@example.com", ["alice@example.org"], b"Subject: packaged\r\n\r\nhello\r\n")
        new = DATA / "mail/example.org/alice/Maildir/new"
        deadline = time.monotonic() + 30
        while not (new.exists() and any(new.iterdir())):
            assert time.monotonic() < deadline, "not delivered\n" + "".join(lines)
            time.sleep(0.1)
        delivered = next(new.iterdir())
        assert delivered.stat().st_uid == corvid.pw_uid
        assert b"X-Corvid-Package: installed" in delivered.read_bytes()
        sock.settimeout(30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "".join(lines)
        assert sock.recv(64) == b"STOPPING=1"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        reader.join(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
        print("".join(lines))
