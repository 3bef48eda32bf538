"""docs/dovecot.md, followed as written: its `# file:` code blocks configure Corvid and a real
Dovecot 2.3; its shell steps are done here the same way. Moved for the test: /var/lib/corvid and
the auth socket into a temporary directory, the ports to free loopback ports, and the `corvid`
user and group to `nobody`/`nogroup` (a system user both exist as). Nothing is chowned after
start: Corvid drops to that user and writes the Maildirs, Dovecot reads them as `mail_uid`.

Checked: IMAP and POP3 logins against Corvid's users file (made by `corvid user add`, and a line
in the old format converted on load); SMTP AUTH through Dovecot's auth socket (good password
235, wrong 535, Dovecot down 454); mail Corvid wrote read over IMAP and POP3; the LMTP route,
with the guide's Sieve script filing the message when Pigeonhole is installed."""

import imaplib
import os
import poplib
import re
import shutil
import smtplib
import ssl
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from conftest import BIN, REPO, Corvid
from outbound_support import NOBODY, free_port, shared_tmpdir, wait_files, wait_port

GUIDE = REPO / "docs" / "dovecot.md"
PASSWORD = "guide-s3cret"


def guide_files() -> dict[str, str]:
    """{path: text} of every fenced block in the guide whose first line is `# file: <path>`."""
    text = GUIDE.read_text()
    out = {}
    for body in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        first, _, rest = body.partition("\n")
        if first.startswith("# file: "):
            out[first.removeprefix("# file: ").strip()] = rest
    return out


def moved(text: str, root: Path, ports: dict[int, int]) -> str:
    """The guide's text with its paths, ports and user moved for the test (see the docstring)."""
    text = text.replace("/var/lib/corvid", str(root / "corvid"))
    text = text.replace("/run/dovecot/corvid-auth", str(root / "corvid-auth"))
    text = text.replace("listen = *", "listen = 127.0.0.1")
    for old, new in ports.items():
        text = re.sub(rf"(port = |127\.0\.0\.1:){old}\b", rf"\g<1>{new}", text)
    text = re.sub(r"^(\s*(?:mail_gid|group|extra_groups) = \"?)corvid", r"\1nogroup", text, flags=re.M)
    text = re.sub(r"^(\s*(?:mail_uid|user) = \"?)corvid", r"\1nobody", text, flags=re.M)
    assert "corvid\n" not in text and '"corvid"' not in text, text
    return text


def as_nobody(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`sudo -u corvid ...` of the guide."""
    r = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=60,
                       user=NOBODY, group=NOBODY, extra_groups=[],
                       env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


class Setup:
    def __init__(self) -> None:
        if not shutil.which("dovecot"):
            pytest.skip("dovecot is not installed (tests/setup installs it)")
        self.root = shared_tmpdir("corvid-guide-")
        self.imap, self.pop3, self.lmtp = free_port(), free_port(), free_port()
        self.ports = {143: self.imap, 110: self.pop3, 24: self.lmtp}
        files = guide_files()
        self.corvid_toml = moved(files["/etc/corvid/corvid.toml"], self.root, self.ports)
        self.dovecot_conf = moved(files["/etc/dovecot/local.conf"], self.root, self.ports)
        # Sieve (Pigeonhole) is optional for the guide; tests/setup installs it.
        self.has_sieve = Path("/usr/lib/dovecot/modules/lib90_sieve_plugin.so").exists()
        self.sieve_conf = moved(files["/etc/dovecot/conf.d/90-corvid-sieve.conf"], self.root, self.ports)
        script = "/var/lib/corvid/mail/example.net/bob/.dovecot.sieve"
        self.sieve_path = Path(moved(script, self.root, self.ports))
        self.sieve_script = files[script]
        self.data = self.root / "corvid"
        self.corvid: Corvid | None = None
        self.dovecot_up = False

    # --- the guide's shell steps -------------------------------------------------------------

    def make_data_dir_and_users(self) -> None:
        # install -d -o corvid -g corvid -m 0710 /var/lib/corvid
        self.data.mkdir(mode=0o710)
        os.chown(self.data, NOBODY, NOBODY)
        self.data.chmod(0o710)
        workdir = self.root / "run-corvid"
        workdir.mkdir()
        workdir.chmod(0o755)
        overrides = tomllib.loads(self.corvid_toml)
        self.corvid = Corvid(workdir, overrides)
        self.corvid.data_dir = self.data  # the guide's data_dir (admin socket, Maildirs)
        self.corvid.config_path.chmod(0o644)
        cfg = str(self.corvid.config_path)
        # sudo -u corvid corvid user add alice@example.org --address sales@example.org
        as_nobody(str(BIN), "user", "--config", cfg, "add", "alice@example.org",
                  "--address", "sales@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        as_nobody(str(BIN), "user", "--config", cfg, "add", "bob@example.net", "--password-stdin",
                  stdin=PASSWORD + "\n")
        # sudo -u corvid chmod g+r /var/lib/corvid/users
        as_nobody("chmod", "g+r", str(self.users))
        if self.has_sieve:
            # sudo -u corvid mkdir -p .../example.net/bob, then bob's .dovecot.sieve
            as_nobody("mkdir", "-p", str(self.sieve_path.parent))
            as_nobody("sh", "-c", 'cat > "$0"', str(self.sieve_path), stdin=self.sieve_script)

    @property
    def users(self) -> Path:
        return self.data / "users"

    # --- Dovecot -----------------------------------------------------------------------------

    def start_dovecot(self) -> None:
        d = self.root / "dovecot"
        d.mkdir(exist_ok=True)
        self.dovecot_conf_path = d / "dovecot.conf"
        # The test's own settings: a private instance (run directory, log), no TLS (no
        # certificates here; Dovecot allows plaintext logins from 127.0.0.1), and the TLS
        # listeners Debian's defaults add turned off.
        self.dovecot_conf_path.write_text(
            f"base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n"
            f"ssl = no\n\n{self.dovecot_conf}\n{self.sieve_conf if self.has_sieve else ''}\n"
            "service imap-login {\n  inet_listener imaps {\n    port = 0\n  }\n}\n"
            "service pop3-login {\n  inet_listener pop3s {\n    port = 0\n  }\n}\n")
        with open(d / "start.out", "wb") as out:
            r = subprocess.run(["dovecot", "-c", str(self.dovecot_conf_path)], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, (d / "start.out").read_text() + self.dovecot_log()
        self.dovecot_up = True
        for port in (self.imap, self.pop3, self.lmtp):
            wait_port(port)

    def stop_dovecot(self) -> None:
        if not self.dovecot_up:
            return
        subprocess.run(["doveadm", "-c", str(self.dovecot_conf_path), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        pid = self.root / "dovecot" / "run" / "master.pid"
        for _ in range(100):
            if not pid.exists():
                break
            time.sleep(0.1)
        self.dovecot_up = False

    def dovecot_log(self) -> str:
        p = self.root / "dovecot" / "dovecot.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def close(self) -> None:
        if self.corvid is not None and self.corvid.running():
            self.corvid.stop()
        self.stop_dovecot()
        print(f"--- dovecot log ---\n{self.dovecot_log()}")
        if self.corvid is not None:
            print(f"--- corvid log ---\n{self.corvid.log_text()}")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def guide():
    s = Setup()
    try:
        yield s
    finally:
        s.close()


def submission(corvid: Corvid) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", corvid.ports["submission"], local_hostname="client.test", timeout=30)
    s.ehlo()
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo()
    return s


def imap_messages(port: int, user: str, mailbox: str = "INBOX") -> list[bytes]:
    with imaplib.IMAP4("127.0.0.1", port, timeout=10) as imap:
        imap.login(user, PASSWORD)
        typ, data = imap.select(mailbox)
        assert typ == "OK", data
        _, ids = imap.search(None, "ALL")
        out = []
        for num in ids[0].split():
            typ, parts = imap.fetch(num, "(RFC822)")
            assert typ == "OK", parts
            out.append(parts[0][1])
        imap.logout()
        return out


def message(marker: str, to: str) -> bytes:
    return (f"From: Alice <alice@example.org>\r\nTo: <{to}>\r\nSubject: guide {marker}\r\n"
            f"Message-ID: <{marker}@example.org>\r\n\r\nRead me over IMAP and POP3.\r\n").encode()


def test_the_dovecot_guide_as_written(guide):
    guide.make_data_dir_and_users()
    text = guide.users.read_text()
    assert re.search(r"^alice@example\.org:\{ARGON2ID\}\$argon2id\$[^:]+::::::corvid_senders=sales@example\.org$",
                     text, re.M), text
    # A line in Corvid's old format (name:hash:addresses) is converted on load.
    old = re.sub(r"^(bob@example\.net):\{ARGON2ID\}(\$argon2id\$[^:]+)::::::$", r"\1:\2:", text, flags=re.M)
    assert old != text
    guide.users.write_text(old)
    as_nobody(str(BIN), "user", "--config", str(guide.corvid.config_path), "list")
    assert re.search(r"^bob@example\.net:\{ARGON2ID\}\$argon2id\$[^:]+::::::$", guide.users.read_text(), re.M)
    assert oct(guide.users.stat().st_mode & 0o777) == oct(0o640)

    guide.start_dovecot()
    # The guide's check: `doveadm auth test alice@example.org` (Dovecot reads Corvid's file).
    r = subprocess.run(["doveadm", "-c", str(guide.dovecot_conf_path), "auth", "test", "alice@example.org",
                        PASSWORD], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "auth succeeded" in r.stdout, (r.stdout, r.stderr)
    corvid = guide.corvid.start()
    assert corvid.wait_log(lambda e: e.get("message") == "dropped root privileges")

    # SMTP AUTH through Dovecot's socket: a wrong password is 535, the right one 235.
    with submission(corvid) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice@example.org", "wrong")
        assert e.value.smtp_code == 535, e.value
        code, _ = s.login("alice@example.org", PASSWORD)
        assert code == 235
        # The sender list came from the users file's corvid_senders, through Dovecot.
        assert s.mail("sales@example.org")[0] == 250
        s.rset()
        assert s.mail("bob@example.net")[0] == 553
        s.rset()
        local, lmtp = message("maildir", "alice@example.org"), message("lmtp", "bob@example.net")
        s.sendmail("alice@example.org", ["alice@example.org"], local)
        s.sendmail("alice@example.org", ["bob@example.net"], lmtp)

    # Corvid wrote the Maildir as its user; Dovecot reads it as mail_uid, no chown.
    maildir = guide.data / "mail" / "example.org" / "alice" / "Maildir"
    [stored] = wait_files(maildir / "new")
    assert (stored.stat().st_uid, maildir.stat().st_uid) == (NOBODY, NOBODY)
    [fetched] = imap_messages(guide.imap, "alice@example.org")
    assert fetched.endswith(local), fetched
    pop = poplib.POP3("127.0.0.1", guide.pop3, timeout=10)
    try:
        pop.user("alice@example.org")
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
        _, lines, _ = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == fetched
    finally:
        pop.quit()

    # The LMTP route: Dovecot stored bob's mail (bob's line was the converted one), filed by
    # bob's Sieve script when Pigeonhole is installed.
    corvid.wait_queue_empty()
    if guide.has_sieve:
        assert imap_messages(guide.imap, "bob@example.net") == []
        [fetched] = imap_messages(guide.imap, "bob@example.net", "Guide")
    else:
        print("Pigeonhole (dovecot-sieve) is not installed: the guide's Sieve step is not tested")
        [fetched] = imap_messages(guide.imap, "bob@example.net")
    assert fetched.endswith(lmtp), fetched
    bob_new = guide.data / "mail" / "example.net" / "bob" / "Maildir"
    assert bob_new.stat().st_uid == NOBODY

    # Dovecot down: a temporary failure, not a wrong password.
    guide.stop_dovecot()
    with submission(corvid) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice@example.org", PASSWORD)
        assert (e.value.smtp_code, e.value.smtp_error[:5]) == (454, b"4.7.0"), e.value
    events = corvid.events()
    assert any(e.get("message") == "password check failed" and "corvid-auth" in str(e.get("error"))
               for e in events), events[-5:]
    assert PASSWORD not in corvid.log_text()
