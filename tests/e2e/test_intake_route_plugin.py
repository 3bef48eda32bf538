"""Delivery at intake and a `route` plugin, over real SMTP: a message for a local domain that
the plugin sends to a next hop is not delivered before the 250 but queued first, and the
queue's attempt asks the plugin again and relays it (direct.rs, `deliver_now`). The next hop
is a second Corvid on loopback; a local domain the plugin has no entry for is the control,
delivered at intake on the same server."""

from __future__ import annotations

from conftest import PLUGIN_DIR, domain, split_delivered, with_domains
from test_local_at_intake import delivered_before_250


def route_table(routes: dict) -> dict:
    wasm = PLUGIN_DIR / "route_table.wasm"
    assert wasm.exists(), f"{wasm} missing: run `make plugins`"
    return {"name": "route-table", "path": str(wasm), "instance": "call", "order": 10,
            "stages": ["route"], "config": {"routes": routes}}


def test_a_local_recipient_a_route_plugin_relays_is_queued_first(make_server):
    hop = make_server(name="hop")
    overrides = with_domains(domain("kept.test", ["carol"]))
    overrides["plugin"] = [route_table({"corvid.test": f"smtp://127.0.0.1:{hop.port}"})]
    server = make_server(overrides, name="edge")

    qid = server.send(b"Subject: elsewhere\r\n\r\nbody\r\n", rcpts=("alice@corvid.test",))
    # It reached the next hop, through this server's queue: the queue's attempt relayed it.
    [relayed] = hop.wait_mail("alice")
    d = split_delivered(relayed)
    assert f"id {qid}".encode() in d.content, d.content[:300]
    assert d.content.endswith(b"Subject: elsewhere\r\n\r\nbody\r\n")
    done = server.wait_log(lambda e: e.get("message") == "recipient done" and e.get("queue_id") == qid)
    assert done.get("route") == f"smtp://127.0.0.1:{hop.port}", done
    # Not delivered here, and not before the 250: the plugin's route was not taken at intake.
    assert server.mail_files("alice") == []
    assert not delivered_before_250(server, qid)
    server.wait_queue_empty()

    # The control: a local domain the plugin has no entry for is delivered at intake.
    kept = server.send(b"Subject: kept\r\n\r\nbody\r\n", rcpts=("carol@kept.test",))
    [mine] = server.mail_files("carol", domain="kept.test")
    assert b"Subject: kept" in mine.read_bytes()
    assert delivered_before_250(server, kept)
    assert hop.mail_files("carol", domain="kept.test") == []
