"""Helpers for the outbound delivery tests: a DNS server on loopback (dnslib), and private
Postfix and Dovecot instances in temporary directories on loopback ports, started and stopped
by the tests.

Postfix and Dovecot are Debian packages (`tests/setup` installs them); tests that need one
are skipped when it is missing. Both run as root here (the test user) and drop privileges
the way they do in production: Postfix's virtual(8) and Dovecot's mail processes write as
uid/gid 65534 (nobody/nogroup), so their directories live in a world-traversable temporary
directory rather than in pytest's private tmp_path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

NOBODY = 65534
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def shared_tmpdir(prefix: str) -> Path:
    """A temporary directory that other users (nobody, postfix, dovecot) can traverse."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


def chown_tree(root: Path, uid: int = NOBODY, gid: int = NOBODY) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)


# --------------------------------------------------------------------------------------------
# DNS


class DnsServer:
    """An authoritative DNS server on 127.0.0.1 (UDP) for the names the test adds. Unknown
    names get NXDOMAIN; known names without a record of the asked type get an empty answer."""

    def __init__(self) -> None:
        dnslib = pytest.importorskip("dnslib")
        from dnslib.server import BaseResolver, DNSServer

        self.records: dict[str, list] = {}
        outer = self

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                reply = request.reply()
                name = str(request.q.qname).lower()
                if name not in outer.records:
                    reply.header.rcode = dnslib.RCODE.NXDOMAIN
                    return reply
                for rr in outer.records[name]:
                    if rr.rtype == request.q.qtype:
                        reply.add_answer(rr)
                return reply

        self._dnslib = dnslib
        self.server = DNSServer(Resolver(), port=0, address="127.0.0.1")
        self.port = self.server.server.server_address[1]
        self.server.start_thread()

    @staticmethod
    def _key(name: str) -> str:
        name = name.lower()
        return name if name.endswith(".") else name + "."

    def mx(self, domain: str, preference: int, host: str) -> "DnsServer":
        d = self._dnslib
        rr = d.RR(self._key(domain), d.QTYPE.MX, rdata=d.MX(self._key(host), preference), ttl=60)
        self.records.setdefault(self._key(domain), []).append(rr)
        return self

    def a(self, host: str, ip: str = "127.0.0.1") -> "DnsServer":
        d = self._dnslib
        rr = d.RR(self._key(host), d.QTYPE.A, rdata=d.A(ip), ttl=60)
        self.records.setdefault(self._key(host), []).append(rr)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()


# --------------------------------------------------------------------------------------------
# Postfix


POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
tlsmgr    unix  - - n 1000? 1 tlsmgr
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
virtual   unix  - n n -    - virtual
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A private Postfix instance: receives mail for `domain` on a loopback port and stores
    every message in one Maildir (virtual(8), static map), `self.maildir`."""

    def __init__(self, domain: str = "far.test", main_cf_extra: str = "") -> None:
        if not shutil.which("postfix"):
            pytest.skip("postfix is not installed (tests/setup installs it)")
        self.dir = shared_tmpdir("corvid-postfix-")
        self.port = free_port()
        conf, queue, data, vmail = (self.dir / n for n in ("conf", "queue", "data", "vmail"))
        for d in (conf, queue, data, vmail):
            d.mkdir()
        os.chown(vmail, NOBODY, NOBODY)
        shutil.chown(data, "postfix")
        self.maillog = self.dir / "maillog"
        (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = static:{domain}/box/
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
maillog_file_prefixes = /tmp, /var
maillog_file = {self.maillog}
smtputf8_enable = yes
smtpd_banner = $myhostname ESMTP Postfix (corvid test)
biff = no
{main_cf_extra}""")
        (conf / "master.cf").write_text(POSTFIX_MASTER_CF.format(port=self.port))
        self.conf = conf
        self.maildir = vmail / domain / "box"
        self._postfix("start")
        wait_port(self.port)

    def _postfix(self, *args: str) -> None:
        with open(self.dir / "postfix.out", "ab") as out:
            r = subprocess.run(["postfix", "-c", str(self.conf), *args], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, f"postfix {args}: {(self.dir / 'postfix.out').read_text()}\n{self.log()}"

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def messages(self) -> list[bytes]:
        new = self.maildir / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []

    def wait_messages(self, count: int, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = self.messages()
            if len(msgs) >= count:
                return msgs
            time.sleep(0.1)
        raise AssertionError(f"postfix stored {len(self.messages())} message(s), expected {count}\n{self.log()}")

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Dovecot


class Dovecot:
    """A private Dovecot instance serving IMAP, POP3 and LMTP on loopback ports, for the users
    `{address: password}`, with mail in `maildir:<mail_root>/%d/%n/Maildir` (Corvid's layout)."""

    def __init__(self, mail_root: Path, users: dict[str, str]) -> None:
        if not shutil.which("dovecot"):
            pytest.skip("dovecot is not installed (tests/setup installs it)")
        self.dir = shared_tmpdir("corvid-dovecot-")
        self.mail_root = mail_root
        self.imap_port, self.pop3_port, self.lmtp_port = free_port(), free_port(), free_port()
        run = self.dir / "run"
        run.mkdir()
        passwd = self.dir / "passwd"
        passwd.write_text("".join(
            f"{user}:{{PLAIN}}{pw}:{NOBODY}:{NOBODY}::{self.dir}/home::\n" for user, pw in users.items()))
        passwd.chmod(0o644)
        self.log_path = self.dir / "dovecot.log"
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(f"""\
base_dir = {run}
state_dir = {self.dir}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {NOBODY}
last_valid_uid = {NOBODY}
mail_location = maildir:{mail_root}/%d/%n/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
lmtp_save_to_detail_mailbox = no
""")
        # The daemon keeps inherited descriptors open: no pipes, or run() waits forever.
        with open(self.dir / "start.out", "wb") as out:
            r = subprocess.run(["dovecot", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, f"dovecot: {(self.dir / 'start.out').read_text()}\n{self.log()}"
        for port in (self.imap_port, self.pop3_port, self.lmtp_port):
            wait_port(port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        subprocess.run(["doveadm", "-c", str(self.conf), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        # doveadm stop returns before the master has exited; give it a moment.
        for _ in range(50):
            if not (self.dir / "run" / "master.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Corvid configs for outbound tests


def relay_overrides(dns: DnsServer | None = None, smtp_port: int | None = None, routes=(), **delivery) -> dict:
    """Overrides for a sending Corvid: relaying for loopback clients, delivery through `dns`
    to MX hosts on `smtp_port`, short timeouts, and extra [[delivery.route]] tables."""
    d: dict = {
        "ipv6": False,
        # The receiving peers (Corvid, Postfix, scripted) listen on 127.0.0.1: without this
        # an MX resolving to loopback is refused as a mail loop (5.4.6).
        "allow_loopback_mx": True,
        "connection_reuse_time": "1s",
        "timeouts": {"connect": "3s", "greeting": "10s", "command": "10s", "envelope": "10s",
                     "data_init": "10s", "data_block": "10s", "data_end": "20s"},
    }
    if dns is not None:
        d["nameservers"] = [dns.address]
    if smtp_port is not None:
        d["smtp_port"] = smtp_port
    if routes:
        d["route"] = list(routes)
    d.update(delivery)
    return {
        "server": {"relay_networks": ["127.0.0.0/8"]},
        "delivery": d,
        "queue": {"retry": {"delays": ["1s"], "jitter": 0.0}},
    }


def wait_files(directory: Path, count: int = 1, timeout: float = 15.0) -> list[Path]:
    """Waits until `directory` holds at least `count` files; returns them sorted."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
        if len(files) >= count:
            return files
        assert time.monotonic() < deadline, f"{directory}: {len(files)} file(s) after {timeout}s, expected {count}"
        time.sleep(0.05)


def body_of(stored: bytes) -> bytes:
    """The part of a stored message after its header section."""
    i = stored.find(b"\r\n\r\n")
    j = stored.find(b"\n\n")
    if i >= 0 and (j < 0 or i < j):
        return stored[i + 4:]
    return stored[j + 2:] if j >= 0 else b""
