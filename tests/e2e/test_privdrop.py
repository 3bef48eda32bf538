"""server.user / server.group: started as root, Corvid binds a port below 1024, then runs as
the configured user for good (uids and capabilities in /proc), and its files belong to that
user. Started as root without server.user it refuses to run unless server.allow_root."""

import os
import pwd
import grp
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, Corvid, IO_TIMEOUT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")

USER = "nobody"


def low_port() -> int:
    """A free TCP port below 1024 on 127.0.0.1 (only root or CAP_NET_BIND_SERVICE binds it)."""
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


@pytest.fixture
def workdir():
    # Not under pytest's tmp_path: its parents are root-only (0700), and the server must still
    # reach its data_dir and config (SIGHUP reads it again) after it has become `nobody`.
    d = Path(tempfile.mkdtemp(prefix="corvid-privdrop-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def dropping_server(workdir: Path, **server) -> Corvid:
    port = low_port()
    c = Corvid(workdir, {"server": {"user": USER, "allow_root": False, **server}})
    c.config["server"].pop("plugin_cache", None)  # the shared cache is root's
    c.config["listener"][0]["address"] = f"127.0.0.1:{port}"
    from conftest import to_toml
    c.config_path.write_text(to_toml(c.config))
    c.config_path.chmod(0o644)
    return c


def test_root_binds_a_low_port_then_runs_as_the_user_for_good(workdir):
    srv = dropping_server(workdir)
    try:
        srv.start()
        assert srv.port < 1024
        st = status(srv.proc.pid)
        nobody = pwd.getpwnam(USER)
        assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, st["Uid"]
        assert st["Gid"].split() == [str(nobody.pw_gid)] * 4, st["Gid"]
        assert st["Groups"].split() in ([], [str(nobody.pw_gid)]), st["Groups"]
        # No capability left in any set: root cannot come back.
        for cap in ("CapPrm", "CapEff", "CapInh", "CapAmb"):
            assert int(st[cap], 16) == 0, (cap, st[cap])
        # Every thread changed, not only the one that called setuid (tokio's workers).
        for task in Path(f"/proc/{srv.proc.pid}/task").iterdir():
            t = {k: v for k, v in (l.split(":", 1) for l in (task / "status").read_text().splitlines())}
            assert t["Uid"].split() == [str(nobody.pw_uid)] * 4, (task.name, t["Uid"])
            assert int(t["CapEff"].strip(), 16) == 0 and int(t["CapPrm"].strip(), 16) == 0
        ev = srv.wait_log(lambda e: e.get("message") == "dropped root privileges")
        assert ev["user"] == USER

        # It still works as that user: a message is accepted and delivered, and what it
        # created belongs to the user.
        srv.send(b"Subject: dropped\r\n\r\nhello\r\n")
        files = srv.wait_mail("alice")
        assert files[0].stat().st_uid == nobody.pw_uid
        for p in [srv.data_dir, srv.data_dir / "queue", srv.data_dir / "admin.sock", srv.data_dir / "tls"]:
            assert p.stat().st_uid == nobody.pw_uid, p
        assert (srv.data_dir.stat().st_mode & 0o777) == 0o700
        # The admin socket still answers root's CLI.
        assert srv.cli("queue", "list", "--config", str(srv.config_path)).returncode == 0
        srv.stop()
    finally:
        if srv.running():
            srv.kill()


def test_root_without_a_user_is_refused_unless_allowed(workdir):
    c = Corvid(workdir, {"server": {"allow_root": False}})
    r = subprocess.run([str(BIN), "serve", "--config", str(c.config_path)], capture_output=True,
                       text=True, timeout=30, cwd=workdir)
    assert r.returncode != 0
    assert "server.user" in r.stderr and "server.allow_root" in r.stderr, r.stderr
    assert not c.data_dir.exists(), "nothing was created before refusing"


def test_a_data_dir_owned_by_someone_else_is_refused(workdir):
    srv = dropping_server(workdir)
    srv.data_dir.mkdir()  # root's
    r = subprocess.run([str(BIN), "serve", "--config", str(srv.config_path)], capture_output=True,
                       text=True, timeout=30, cwd=workdir)
    assert r.returncode != 0
    assert "server.data_dir" in r.stderr and "chown" in r.stderr, r.stderr


def test_unknown_user_is_a_config_error(workdir):
    srv = dropping_server(workdir, user="no-such-user-corvid")
    r = subprocess.run([str(BIN), "serve", "--config", str(srv.config_path)], capture_output=True,
                       text=True, timeout=30, cwd=workdir)
    assert r.returncode != 0
    assert "server.user" in r.stderr and "no-such-user-corvid" in r.stderr, r.stderr
