"""The plugin runtime's promises over real SMTP: capabilities reach WASI (a plugin without
`clock` sees the Unix epoch), a looping plugin is stopped by its CPU budget and then bypassed
by its circuit breaker (throughput recovers within 5 s), and idle connections hold no
instance of the engine."""

import threading
import time

from conftest import IO_TIMEOUT
from test_plugins import behave, behave_wasm, cli  # noqa: F401 - behave_wasm is a fixture


def senses(reply_text: str) -> dict:
    return {k: int(v) for k, v in (kv.split("=", 1) for kv in reply_text.split() if "=" in kv)}


def test_a_plugin_without_clock_sees_the_epoch(make_server, behave_wasm):
    plugin = behave(behave_wasm, mail="senses")
    plugin["capabilities"] = ["log", "config"]
    srv = make_server({"plugin": [plugin]})
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        r = c.expect("MAIL FROM:<a@example.org>", 550, "5.7.1")
    s = senses(r.text)
    assert (s["wall"], s["mono"], s["now_ms"]) == (0, 0, 0), r.text

    plugin["capabilities"] = ["log", "config", "clock"]
    srv = make_server({"plugin": [plugin]})
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        r = c.expect("MAIL FROM:<a@example.org>", 550, "5.7.1")
    s = senses(r.text)
    assert abs(s["wall"] - time.time() * 1000) < 60_000 and s["mono"] > 0, r.text


def test_a_looping_plugin_trips_the_breaker_and_throughput_recovers(make_server, behave_wasm):
    plugin = behave(behave_wasm, data="loop")
    plugin["failure_policy"] = "continue"
    plugin["limits"] = {"hook_fuel": 100_000_000, "hook_time_ms": 5000, "memory_mb": 32}
    srv = make_server({"plugin": [plugin]})
    done, errors = [], []
    stop = threading.Event()

    def sender(n):
        while not stop.is_set():
            try:
                srv.send(f"Subject: load {n}\r\n\r\nx\r\n".encode())
                done.append(time.monotonic())
            except Exception as e:  # noqa: BLE001 - any failure is a refused message
                errors.append(repr(e))

    started = time.monotonic()
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join(IO_TIMEOUT)
    assert errors == [], errors[:3]
    # Every message was accepted (failure policy `continue`). From 5 s on, the breaker is
    # open and the plugin costs nothing: at least 20 messages per second are accepted.
    late = [t for t in done if t - started >= 5]
    assert len(late) >= 20 * (done[-1] - started - 5), (len(done), len(late))
    listed = cli(srv, "plugins", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("behave"))
    assert " open " in row or "half-open" in row, listed.stdout
    trips = [e for e in srv.events() if "circuit breaker open" in e.get("message", "")]
    assert len(trips) == 1, trips
    budget = [e for e in srv.events() if "cpu budget" in e.get("message", "")]
    assert budget, "the loop was stopped by its CPU budget"


def test_idle_connections_do_not_exhaust_instances(make_server, behave_wasm):
    plugin = behave(behave_wasm, helo="continue", rcpt="continue")
    srv = make_server({"plugin": [plugin], "plugin_engine": {"max_instances": 4}})
    idle = []
    try:
        for _ in range(20):
            c = srv.connect()
            c.greet()
            c.ehlo()
            idle.append(c)
        # Twenty connections sit idle after EHLO; mail still flows on the four instance slots.
        for _ in range(3):
            srv.send(b"Subject: while idle\r\n\r\nx\r\n")
    finally:
        for c in idle:
            c.close()
