"""Bad input to the controller over the real bus (pyzmq + CURVE): each gets a clear error
or a refusal, nothing is stored, and the controller keeps serving. Every reply captured is
checked against the message schemas."""
import json
import os
import time

import jsonschema
import pytest
import zmq

from hermes_harness import SOURCE_DIR, read_cert

SCHEMAS = os.path.join(SOURCE_DIR, "schemas", "msg")


def schema(name):
    with open(os.path.join(SCHEMAS, name + ".schema.json")) as f:
        return json.load(f)


def check_reply(env):
    jsonschema.Draft202012Validator(schema("envelope.v1")).validate(env)
    jsonschema.Draft202012Validator(schema(f"{env['type']}.v{env['v']}")).validate(env["body"])


class Bus:
    def __init__(self, suite, key="admin", keypair=None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        pub, sec = keypair or read_cert(os.path.join(suite.keys, key + ".cert"))
        server, _ = read_cert(os.path.join(suite.keys, "controller.cert"))
        self.sock.curve_publickey, self.sock.curve_secretkey = pub, sec
        self.sock.curve_serverkey = server
        self.sock.connect(suite.api)

    def send(self, *frames):
        self.sock.send_multipart([f if isinstance(f, bytes) else f.encode() for f in frames])

    def recv(self, timeout=2.0):
        if not self.sock.poll(int(timeout * 1000)):
            return None
        env = json.loads(self.sock.recv())
        check_reply(env)
        return env

    def request(self, type_, body, v=1, **over):
        env = {"hermes": 1, "type": type_, "v": v, "id": f"t-{time.monotonic_ns()}",
               "ts": int(time.time() * 1000), "src": "test", "body": body}
        env.update(over)
        self.send(json.dumps(env))
        return self.recv()

    def close(self):
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def bus(running):
    b = Bus(running)
    yield b
    b.close()


def snapshot(suite):
    return (suite.status()["config_version"], suite.ctl_json("node", "list"),
            suite.ctl_json("audit", "--limit", "1000"))


def error_of(reply):
    assert reply is not None, "no reply"
    assert reply["type"] == "error", reply
    return reply["body"]["code"], reply["body"]["message"]


def test_each_bad_message_gets_a_clear_error_and_stores_nothing(running, bus):
    running.allow_error(r"refused (message|register) from key=admin")
    before = snapshot(running)
    good = {"hermes": 1, "type": "node.add", "v": 1, "id": "x", "ts": 1, "src": "t",
            "body": {"name": "n"}}
    cases = [
        ("not json", [b"this is not json"], "bad_json", "not JSON"),
        ("unknown type", [json.dumps({**good, "type": "node.explode"})], "unknown_type",
         "unknown message type 'node.explode'"),
        ("wrong version", [json.dumps({**good, "v": 2})], "unknown_type", "version 2"),
        ("missing field", [json.dumps({**good, "body": {}})], "bad_body",
         "missing required property 'name'"),
        ("missing envelope field", [json.dumps({k: v for k, v in good.items() if k != "ts"})],
         "bad_envelope", "'ts'"),
        ("wrong type of field", [json.dumps({**good, "body": {"name": 42}})], "bad_body",
         "body.name"),
        ("1 MiB message", [json.dumps({**good, "body": {"name": "n" * (1 << 20)}})],
         "too_large", "over the limit"),
        ("two frames", [json.dumps(good), b"extra"], "bad_envelope", "one frame"),
        ("service-only type from admin", [json.dumps({**good, "type": "register", "body": {
            "kind": "relay", "instance": "evil"}})], "forbidden", "role service"),
    ]
    for name, frames, code, text in cases:
        bus.send(*frames)
        got_code, message = error_of(bus.recv())
        assert got_code == code, (name, got_code, message)
        assert text in message, (name, message)
        assert running.status()["counters"]["refused_messages"] >= 1
    assert snapshot(running) == before
    running.ctl("node", "add", "still-serving")  # and it still serves


def test_service_key_cannot_speak_for_another_kind_or_as_admin(running):
    running.allow_error(r"refused node.add from key=relay role=service")
    relay = Bus(running, key="relay")
    try:
        code, msg = error_of(relay.request("register", {"kind": "policy", "instance": "fake"}))
        assert code == "forbidden" and "may not act for kind 'policy'" in msg
        code, msg = error_of(relay.request("node.add", {"name": "sneaky"}))
        assert code == "forbidden" and "role admin" in msg
        code, _ = error_of(relay.request("heartbeat", {"kind": "relay", "instance": "ghost",
                                                       "applied_version": 0}))
        assert code == "not_registered"
    finally:
        relay.close()
    assert [n["name"] for n in running.ctl_json("node", "list")] == []
    assert all(s["instance"] != "fake" for s in running.services())


def test_unauthorised_key_gets_no_service_and_is_logged(running):
    running.allow_error(r"refused control-plane client: public key not authorised")
    pub, sec = zmq.curve_keypair()
    stranger = Bus(running, keypair=(pub, sec))
    try:
        assert stranger.request("status", {}) is None  # the handshake never completes
    finally:
        stranger.close()
    log = running.daemons["controller"].log_text()
    assert "refused control-plane client: public key not authorised" in log
    assert pub.decode() in log
    assert running.status()["counters"]["auth_refused"] >= 1
    # a plain (non-CURVE) client is refused as well
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(running.api)
    s.send(b"{}")
    assert not s.poll(1000)
    s.close()
    ctx.term()
    running.ctl("status")
