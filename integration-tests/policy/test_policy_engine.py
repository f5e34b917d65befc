"""The policy engine's decision path, end to end: policies added with hermesctl reach
hermes-policy, proxies ask for decisions in batches over the bus (pyzmq + CURVE with the
ingress key) and get one decision per query (allow, deny with the rule, route, per-user
targets, rate limits after the burst); bad requests get error replies while the engine keeps
serving; a key without the service role is refused; `hermesctl policy test` decides as the
engine does. Every reply is checked against the message schemas."""
import json
import os
import time

import jsonschema
import pytest
import zmq

from hermes_harness import SOURCE_DIR, read_cert, wait_for

SCHEMAS = os.path.join(SOURCE_DIR, "schemas", "msg")

POLICIES = [
    {"id": "svc-alice", "priority": 10, "action": "allow", "target": "127.0.0.1:8081",
     "match": {"host": ["svc.virtual"], "user": ["alice"]}},
    {"id": "svc-bob", "priority": 10, "action": "allow", "target": "127.0.0.1:8082",
     "match": {"host": ["svc.virtual"], "user": ["bob"]}},
    {"id": "svc-others", "priority": 20, "action": "deny",
     "description": "svc.virtual exists per user", "match": {"host": ["svc.virtual"]}},
    {"id": "web-deny", "priority": 30, "action": "deny", "description": "no plain web",
     "match": {"ports": ["80"], "protocol": ["tcp"]}},
    {"id": "web-allow", "priority": 40, "action": "allow", "bypass": True,
     "retry_profile": "default",
     "match": {"src": ["10.0.0.0/8", "2001:db8:10::/48"], "ports": ["443", "8443-8445"],
               "sni": ["*.example.com"]}},
    {"id": "to-fra", "priority": 50, "action": "route", "route": "relay-fra-1", "ttl_ms": 60000,
     "match": {"dst": ["198.51.100.0/24"]}},
    {"id": "api-rate", "priority": 60, "action": "rate_limit",
     "rate": {"per_second": 0.01, "burst": 3, "key": "user"},
     "match": {"host": [".api.example.com", "api.example.com"]}},
]

_validators = {}


def check(env):
    """env is a valid envelope with a valid body for its type."""
    for name, doc in (("envelope.v1", env), (f"{env['type']}.v{env['v']}", env["body"])):
        if name not in _validators:
            with open(os.path.join(SCHEMAS, name + ".schema.json")) as f:
                _validators[name] = jsonschema.Draft202012Validator(json.load(f))
        _validators[name].validate(doc)
    return env


class Engine:
    """A DEALER on the policy engine's decision endpoint, authenticated with key."""

    def __init__(self, suite, key="ingress"):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        pub, sec = read_cert(os.path.join(suite.keys, key + ".cert"))
        server, _ = read_cert(os.path.join(suite.keys, "policy.cert"))
        self.sock.curve_publickey, self.sock.curve_secretkey = pub, sec
        self.sock.curve_serverkey = server
        self.sock.connect(suite.listen_endpoint("policy-1"))
        self.n = 0

    def send(self, *frames):
        self.sock.send_multipart([f if isinstance(f, bytes) else f.encode() for f in frames])

    def recv(self, timeout=3.0):
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return check(json.loads(self.sock.recv()))

    def envelope(self, type_, body):
        self.n += 1
        return {"hermes": 1, "type": type_, "v": 1, "id": f"pe-{self.n}",
                "ts": int(time.time() * 1000), "src": "ingress/test", "body": body}

    def decide(self, queries):
        """Decisions for queries (dicts without qid), in order; checks the reply's shape."""
        env = self.envelope("policy.decide", {
            "queries": [dict(q, qid=f"q{i}") for i, q in enumerate(queries)]})
        check(env)
        self.send(json.dumps(env))
        reply = self.recv()
        assert reply is not None, "the policy engine did not answer"
        assert reply["type"] == "policy.decisions", reply
        assert reply["id"] == env["id"]
        got = reply["body"]["decisions"]
        assert [d["qid"] for d in got] == [f"q{i}" for i in range(len(queries))]
        return got

    def close(self):
        self.sock.close()
        self.ctx.term()


def add_policies(suite, policies):
    for doc in policies:
        suite.ctl("policy", "add", "-", input=json.dumps(doc))
    wait_until_engine_runs_current(suite)


def wait_until_engine_runs_current(suite):
    def ok():
        st = suite.status()
        pol = [s for s in st["services"] if s["kind"] == "policy"]
        return pol and pol[0]["state"] == "up" and \
            pol[0]["applied_version"] == st["config_version"]
    wait_for(ok, 10, what="the policy engine to apply the current version")


@pytest.fixture
def engine(running):
    add_policies(running, POLICIES)
    e = Engine(running)
    yield e
    e.close()


def decision(action, rule, *, route=None, target=None, retry_profile=None, bypass=False,
             ttl_ms=5000, reason=None):
    d = {"action": action, "rule": rule, "route": route, "target": target,
         "retry_profile": retry_profile, "bypass": bypass, "ttl_ms": ttl_ms}
    if reason is not None:
        d["reason"] = reason
    return d


def strip(d, keep_reason=False):
    return {k: v for k, v in d.items() if k not in ("qid", "version") and
            (keep_reason or k != "reason")}


CASES = [
    # (query, expected decision without the reason unless given)
    ({"src": "10.1.2.3", "host": "svc.virtual", "user": "alice", "port": 80,
      "protocol": "http"},
     decision("allow", "svc-alice", target="127.0.0.1:8081")),
    ({"src": "10.1.2.4", "dst": "svc.virtual", "user": "bob", "port": 80, "protocol": "http"},
     decision("allow", "svc-bob", target="127.0.0.1:8082")),
    ({"src": "10.1.2.5", "host": "SVC.virtual:80", "user": "mallory"},
     decision("deny", "svc-others", reason="svc.virtual exists per user")),
    ({"src": "10.1.2.5", "host": "svc.virtual"},
     decision("deny", "svc-others")),
    ({"src": "192.0.2.1", "dst": "203.0.113.5", "port": 80, "protocol": "tcp"},
     decision("deny", "web-deny", reason="no plain web")),
    ({"src": "10.9.9.9", "dst": "203.0.113.5", "port": 443, "protocol": "tcp",
      "sni": "www.example.com"},
     decision("allow", "web-allow", retry_profile="default", bypass=True)),
    ({"src": "2001:db8:10::7", "port": 8444, "sni": "shop.example.com."},
     decision("allow", "web-allow", retry_profile="default", bypass=True)),
    ({"src": "172.16.0.1", "port": 443, "sni": "www.example.com"},
     decision("deny", None, reason="no rule matched")),
    ({"src": "10.9.9.9", "port": 443},  # no sni: web-allow cannot match
     decision("deny", None, reason="no rule matched")),
    ({"src": "10.9.9.9", "dst": "198.51.100.40", "port": 22, "protocol": "tcp"},
     decision("route", "to-fra", route="relay-fra-1", ttl_ms=60000)),
    ({}, decision("deny", None, reason="no rule matched")),
]


def test_batched_decisions(running, engine):
    got = engine.decide([q for q, _ in CASES])
    for (query, want), d in zip(CASES, got):
        assert strip(d, keep_reason="reason" in want) == want, (query, d)

    # rate limit per user: the burst of 3, then denied and not cacheable; others unaffected
    queries = [{"host": "v1.api.example.com", "user": "carol"}] * 5 + \
        [{"host": "api.example.com", "user": "dave"}]
    got = engine.decide(queries)
    assert [d["action"] for d in got] == ["allow"] * 3 + ["deny", "deny", "allow"]
    assert all(d["rule"] == "api-rate" and d["ttl_ms"] == 0 for d in got)
    assert got[3]["reason"] == "rate limited by api-rate"
    assert engine.decide([{"host": "api.example.com", "user": "carol"}])[0]["action"] == "deny"

    # a batch of 1024 is answered in one reply
    big = engine.decide([{"src": f"10.0.{i // 256}.{i % 256}", "host": "svc.virtual",
                          "user": "alice" if i % 2 else "bob"} for i in range(1024)])
    assert [d["target"] for d in big[:2]] == ["127.0.0.1:8082", "127.0.0.1:8081"]
    assert len(big) == 1024


def test_new_policies_swap_in_and_broken_ones_are_refused(running, engine):
    running.allow_error(r"config rejected kind=policy instance=policy-1")
    running.allow_error(r"rejected config version=")
    q = {"src": "10.1.2.3", "host": "svc.virtual", "user": "alice"}
    assert engine.decide([q])[0]["target"] == "127.0.0.1:8081"
    # alice moves: the engine decides with the new version as soon as it applied it
    add_policies(running, [dict(POLICIES[0], target="127.0.0.1:9091")])
    assert engine.decide([q])[0]["target"] == "127.0.0.1:9091"
    # a policy the engine cannot compile is rejected; the last good set keeps deciding
    running.ctl("policy", "add", "-", input=json.dumps(
        {"id": "broken", "action": "deny", "match": {"src": ["10.1.2.0/40"]}}))

    def rejected():
        pol = running.services("policy")[0]
        return pol if pol.get("rejected_version") == running.status()["config_version"] \
            else None
    pol = wait_for(rejected, 5, what="the policy engine to reject the broken policy")
    assert "policy broken" in pol["reject_reason"] and "must be 0 to 32" in pol["reject_reason"]
    assert engine.decide([q])[0]["target"] == "127.0.0.1:9091"
    # and hermesctl says why it cannot test against that version
    rc, _, err = running.ctl("policy", "test", "--host", "svc.virtual", check=False)
    assert rc == 1 and "do not compile" in err and "policy broken" in err
    running.ctl("policy", "del", "broken")
    wait_until_engine_runs_current(running)


def test_bad_requests_get_errors_and_the_engine_keeps_serving(running, engine):
    running.allow_error(r"refused request from key=")
    good = engine.envelope("policy.decide", {"queries": [{"qid": "a", "host": "svc.virtual"}]})
    cases = [
        ("not json", [b"{nope"], "bad_json", "not JSON"),
        ("two frames", [json.dumps(good), b"extra"], "bad_envelope", "one frame"),
        ("too large", [json.dumps(dict(good, body={"queries": [
            {"qid": "x" * 100, "path": "/" + "p" * 8000}] * 40}))], "too_large",
         "over the limit"),
        ("unknown type", [json.dumps(dict(good, type="policy.explode"))], "unknown_type",
         "unknown message type 'policy.explode'"),
        ("type it does not serve", [json.dumps(dict(good, type="status", body={}))],
         "unknown_type", "does not handle 'status'"),
        ("empty batch", [json.dumps(dict(good, body={"queries": []}))], "bad_body",
         "body.queries"),
        ("batch too big", [json.dumps(dict(good, body={"queries": [{"qid": "q"}] * 1025}))],
         "bad_body", "body.queries"),
        ("query without qid", [json.dumps(dict(good, body={"queries": [{"host": "x"}]}))],
         "bad_body", "'qid'"),
        ("bad src", [json.dumps(dict(good, body={"queries": [{"qid": "a", "src": "evil"}]}))],
         "bad_body", "body.queries[0].src"),
        ("bad port", [json.dumps(dict(good, body={"queries": [{"qid": "a", "port": 0}]}))],
         "bad_body", "body.queries[0].port"),
    ]
    for name, frames, code, text in cases:
        engine.send(*frames)
        reply = engine.recv()
        assert reply is not None, name
        assert reply["type"] == "error", (name, reply)
        assert reply["body"]["code"] == code, (name, reply["body"])
        assert text in reply["body"]["message"], (name, reply["body"]["message"])
        # still serving, on the same connection
        assert engine.decide([{"host": "svc.virtual", "user": "bob"}])[0]["rule"] == "svc-bob"

    # the admin key is authorised on the bus but has no service role here
    admin = Engine(running, key="admin")
    try:
        admin.send(json.dumps(good))
        reply = admin.recv()
        assert reply["type"] == "error" and reply["body"]["code"] == "forbidden", reply
        assert "role service" in reply["body"]["message"]
        assert reply["id"] == good["id"] and reply["body"]["re"] == "policy.decide"
    finally:
        admin.close()
    # every refusal was counted; the engine says so when it stops
    running.daemons["policy-1"].stop()
    log = running.daemons["policy-1"].log_text()
    assert f"refused={len(cases) + 1} " in log, log[-2000:]
    assert "refused request from key=ingress" in log


def test_an_unknown_key_is_not_served(running, engine):
    running.allow_error(r"refused control-plane client: public key not authorised")
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
    s.curve_serverkey = read_cert(os.path.join(running.keys, "policy.cert"))[0]
    s.connect(running.listen_endpoint("policy-1"))
    s.send(json.dumps(engine.envelope("policy.decide", {"queries": [{"qid": "a"}]})).encode())
    assert not s.poll(1000)
    s.close()
    ctx.term()
    assert engine.decide([{}])[0]["action"] == "deny"


def ctl_test(suite, query, json_out=True):
    args = ["policy", "test"]
    for key, value in query.items():
        args += [f"--{key}", str(value)]
    if json_out:
        return json.loads(suite.ctl(*args, "--json")[1])
    return suite.ctl(*args)[1]


def test_hermesctl_policy_test_decides_as_the_engine(running, engine):
    version = running.status()["config_version"]
    got = engine.decide([q for q, _ in CASES])
    for (query, _), d in zip(CASES, got):
        shown = ctl_test(running, query)
        assert shown["version"] == version
        assert strip(shown, keep_reason=True) == strip(d, keep_reason=True), query
    # rate limits: hermesctl shows the rule without spending tokens
    for _ in range(5):
        shown = ctl_test(running, {"host": "api.example.com", "user": "erin"})
        assert shown["action"] == "allow" and shown["rule"] == "api-rate"
    assert [d["action"] for d in engine.decide(
        [{"host": "api.example.com", "user": "erin"}] * 4)] == ["allow"] * 3 + ["deny"]

    # what an operator reads
    out = ctl_test(running, {"host": "svc.virtual", "user": "alice"}, json_out=False)
    assert out.splitlines()[0] == "allow via rule svc-alice, target 127.0.0.1:8081"
    out = ctl_test(running, {"dst": "203.0.113.5", "port": 80, "protocol": "tcp"}, False)
    assert out.splitlines()[0] == "deny (rule web-deny: no plain web)"
    out = ctl_test(running, {"src": "172.16.0.1"}, False)
    assert out.splitlines()[0] == "deny (no rule matched)"
    out = ctl_test(running, {"dst": "198.51.100.1"}, False)
    assert out.splitlines()[0] == "route via rule to-fra to relay-fra-1"
    assert f"cacheable for 60000 ms (config version {version})" in out

    # usage errors are caught before anything is sent
    for args, text in ((["--port", "0"], "--port"), (["--src", "10.1"], "--src"),
                       (["--protocol", "sctp"], "--protocol"), (["--method", "get"], "--method"),
                       (["--colour", "red"], "--colour")):
        rc, _, err = running.ctl("policy", "test", *args, check=False)
        assert rc == 2 and text in err, (args, rc, err)
