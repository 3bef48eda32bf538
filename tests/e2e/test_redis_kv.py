"""Two Corvid nodes sharing the plugins' kv store in one redis-server (`[kv] backend = "redis"`):
limits hold across the nodes together, a greylisted sender passes on the other node, and a
dead Redis makes plugins fail per their failure policy while both nodes keep serving and
lose no accepted mail. redis-server is the Debian package (tests/setup installs it), started
on a loopback port by the fixture."""

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import build_wasm, bundled_plugins, PLUGIN_DIR, REPO

RATE_LIMIT = str(PLUGIN_DIR / "rate_limit.wasm")
BEHAVE_WASM = REPO / "target" / "plugins" / "wasm32-wasip2" / "release" / "fixture_behave.wasm"
BEHAVE = REPO / "host" / "plugin-host" / "tests" / "fixtures" / "behave"


class Redis:
    def __init__(self, workdir: Path):
        assert shutil.which("redis-server"), "redis-server missing: run tests/setup"
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Redis":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"


@pytest.fixture
def redis(tmp_path):
    d = tmp_path / "redis"
    d.mkdir()
    r = Redis(d).start()
    yield r
    r.kill()


@pytest.fixture(scope="module")
def behave_wasm():
    return str(build_wasm(BEHAVE, BEHAVE_WASM))


def rate_limit(messages: int) -> dict:
    assert Path(RATE_LIMIT).exists(), "run `make plugins`"
    return {"name": "rate-limit", "path": RATE_LIMIT, "order": 5, "failure_policy": "continue",
            "capabilities": ["log", "config", "kv"],
            "config": {"messages_per_window": messages, "window_secs": 3600, "exempt": []}}


def kv(redis: Redis, **extra) -> dict:
    return {"kv": {"backend": "redis", "url": redis.url, "timeout": "200ms", "retry_after": "300ms", **extra}}


def mail_reply(srv, sender="sender@example.org") -> int:
    with srv.smtp() as s:
        s.ehlo()
        code, _ = s.mail(sender)
        if code == 250:
            s.rset()
        return code


def test_rate_limit_counts_across_both_nodes(make_server, redis):
    limit = 4
    nodes = [make_server({**kv(redis), "plugin": [rate_limit(limit)]}, name=n) for n in ("a", "b")]
    codes = [mail_reply(nodes[i % 2]) for i in range(limit + 3)]
    # N messages per client across both nodes together, then 450 4.7.1 on either node.
    assert codes == [250] * limit + [450] * 3, codes
    assert redis.cli("GET", "corvid:kv:{rate-limit}:k:msg:127.0.0.1") == str(limit + 3)
    ttl = int(redis.cli("TTL", "corvid:kv:{rate-limit}:k:msg:127.0.0.1"))
    assert 3500 < ttl <= 3600, ttl  # the window is Redis's own expiry
    # `corvid kv` reads the configured backend: both running nodes list the shared counter
    # from Redis, with its expiry (their own sled kv was never written).
    for n in nodes:
        r = n.cli("kv", "list", "--plugin", "rate-limit", "--config", str(n.config_path))
        assert r.returncode == 0, r.stderr
        assert f"msg:127.0.0.1 = {limit + 3}  (expires 20" in r.stdout, r.stdout
    r = nodes[0].cli("kv", "get", "--plugin", "rate-limit", "msg:127.0.0.1", "--config", str(nodes[0].config_path))
    assert r.stdout.strip() == str(limit + 3), r
    # a glob character in the prefix matches only itself
    r = nodes[0].cli("kv", "list", "--plugin", "rate-limit", "m*", "--config", str(nodes[0].config_path))
    assert "msg:" not in r.stdout, r.stdout
    # with the node stopped, the command goes to Redis itself; a delete is seen by the other node
    nodes[0].stop()
    r = nodes[0].cli("kv", "delete", "--plugin", "rate-limit", "msg:127.0.0.1", "--config", str(nodes[0].config_path))
    assert r.returncode == 0 and "deleted" in r.stdout, r
    assert redis.cli("EXISTS", "corvid:kv:{rate-limit}:k:msg:127.0.0.1") == "0"
    r = nodes[1].cli("kv", "list", "--plugin", "rate-limit", "--config", str(nodes[1].config_path))
    assert "0 key(s) shown" in r.stdout, r.stdout


def test_greylisted_sender_passes_on_the_other_node(make_server, redis):
    wasm = REPO / "target" / "examples" / "greylist-rust.wasm"
    if not wasm.exists():
        r = subprocess.run([str(REPO / "examples" / "greylist" / "rust" / "build.sh")],
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stderr
    grey = {"name": "greylist", "path": str(wasm), "capabilities": ["log", "config", "kv", "clock"],
            "config": {"delay_seconds": 1}}
    a, b = (make_server({**kv(redis), "plugin": [grey]}, name=n) for n in ("a", "b"))
    with a.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<alice@corvid.test>", 451, "4.7.1")
    time.sleep(1.2)
    # The retry reaches the other MX, which knows the triplet from the shared store.
    b.send(b"Subject: retry\r\n\r\nhello\r\n")
    b.wait_mail("alice")


def test_redis_down_plugins_fail_per_policy_and_no_mail_is_lost(make_server, redis, behave_wasm):
    # Node a: the rate limiter only (fail open, failure_policy "continue").
    # Node b: also a plugin that traps when kv fails (failure_policy tempfail, the default).
    flaky = {"name": "behave", "path": behave_wasm, "order": 10, "capabilities": ["log", "config", "kv"],
             "limits": {"hook_time_ms": 2000}, "config": {"rcpt": "flaky"}}
    a = make_server({**kv(redis), "plugin": [rate_limit(1000)]}, name="a")
    b = make_server({**kv(redis), "plugin": [rate_limit(1000), flaky]}, name="b")
    redis.cli("SET", "corvid:kv:{behave}:k:healthy", "1")
    b.send(b"Subject: before\r\n\r\nhello\r\n", rcpts=("bob@corvid.test",))

    accepted: list[str] = []
    errors: list[BaseException] = []
    killed = threading.Event()

    def sender():
        try:
            for i in range(20):
                if i == 5:
                    killed.wait(10)
                accepted.append(a.send(f"Subject: run {i}\r\n\r\nhello\r\n".encode()))
        except BaseException as e:  # shown below
            errors.append(e)

    t = threading.Thread(target=sender)
    t.start()
    while len(accepted) < 5 and t.is_alive():
        time.sleep(0.02)
    redis.kill()
    killed.set()
    t.join(120)
    assert not errors, errors
    assert len(accepted) == 20
    # The fail-open limiter let every message through while Redis was gone...
    a.wait_log(lambda e: e.get("plugin") == "rate-limit" and "kv failed" in str(e.get("message")))
    # ...and every accepted message is delivered: Redis holds no mail.
    a.wait_mail("alice", count=20)

    # Node b: the trapping plugin gets its failure policy (451), promptly; the node serves on.
    t0 = time.monotonic()
    with b.connect() as c:
        c.begin(rcpts=())
        c.expect("RCPT TO:<bob@corvid.test>", 451)
        c.expect("RSET", 250)
        c.expect("NOOP", 250)
    assert time.monotonic() - t0 < 3
    b.wait_mail("bob", count=1)

    # Redis back (empty: a restart without persistence): the plugins work again.
    redis.start()
    redis.cli("SET", "corvid:kv:{behave}:k:healthy", "1")
    deadline = time.monotonic() + 30
    while True:
        try:
            b.send(b"Subject: after\r\n\r\nhello\r\n", rcpts=("bob@corvid.test",))
            break
        except AssertionError:
            assert time.monotonic() < deadline, "node b did not recover"
            time.sleep(0.5)
    b.wait_mail("bob", count=2)
    assert redis.cli("GET", "corvid:kv:{rate-limit}:k:msg:127.0.0.1") not in ("", "(nil)")
