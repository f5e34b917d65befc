"""hermesctl as an operator uses it: tables, --json, exit codes, the audit trail."""
import json
import subprocess
import time
import os

from hermes_harness import BIN_DIR, free_port


def test_node_link_policy_commands_and_audit(running):
    running.ctl("node", "add", "n1", "--address", "10.0.0.1", "--site", "east")
    rc, _, err = running.ctl("node", "add", "n1", check=False)
    assert rc == 1 and "exists already" in err
    nodes = running.ctl_json("node", "list")
    # no relay has said it serves n1: none counted, and routes use it
    assert nodes == [{"name": "n1", "address": "10.0.0.1", "site": "east", "relays": 0,
                      "relays_up": 0}]
    _, table, _ = running.ctl("node", "list")
    assert table.splitlines()[0].split() == ["NAME", "ADDRESS", "SITE", "RELAYS", "ROUTES"]
    assert table.splitlines()[1].split() == ["n1", "10.0.0.1", "east", "-", "used"]
    running.ctl("node", "add", "n2")
    running.ctl("link", "add", "n1", "n2", "--cost", "5")
    assert running.ctl_json("link", "list") == [
        {"from": "n1", "to": "n2", "cost": 5, "transport": "h2"}]
    rc, _, err = running.ctl("link", "add", "n1", "nope", check=False)
    assert rc == 1 and "no node named 'nope'" in err
    # a node's links go with it
    running.ctl("node", "del", "n2")
    assert running.ctl_json("link", "list") == []
    # policy from stdin, validated against its schema
    running.ctl("policy", "add", "-", input=json.dumps({"id": "p", "action": "deny"}))
    rc, _, err = running.ctl("policy", "add", "-", check=False,
                             input=json.dumps({"id": "q", "action": "explode"}))
    assert rc == 1 and "action" in err
    rc, _, err = running.ctl("policy", "add", "-", check=False, input="{not json")
    assert rc == 2 and "policy file (stdin)" in err
    running.ctl("policy", "del", "p")
    rc, _, err = running.ctl("policy", "del", "p", check=False)
    assert rc == 1 and "no policy with id 'p'" in err
    audit = running.ctl_json("audit", "--limit", "50")
    commands = [(a["who"], a["command"], a["result"]) for a in reversed(audit)]
    assert commands[0] == ("admin", "node.add", "ok")
    assert ("admin", "node.add", "conflict") in commands
    assert ("admin", "policy.add", "invalid") in commands
    assert ("admin", "policy.del", "not_found") in commands
    assert all(a["who"] == "admin" for a in audit)


def test_usage_errors_exit_2(suite):
    cases = [[], ["bogus"], ["node"], ["node", "add"], ["node", "add", "a", "b"],
             ["node", "add", "a", "--color", "red"], ["link", "add", "a", "b", "--cost", "x"],
             ["link", "add", "a", "b", "--transport", "carrier-pigeon"],
             ["config", "rollback", "latest"], ["audit", "--limit", "0"], ["status", "--timeout"],
             ["--timeout", "-5", "status"], ["policy", "add", "/nonexistent/file.json"]]
    for args in cases:
        r = subprocess.run([os.path.join(BIN_DIR, "hermesctl"), "--keys-dir", suite.keys, *args],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("hermesctl: "), (args, r.stderr)
    r = subprocess.run([os.path.join(BIN_DIR, "hermesctl"), "--help"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and "exit codes" in r.stdout


def test_unreachable_controller_exits_3_within_2s(suite):
    t0 = time.monotonic()
    rc, _, err = suite.ctl("status", check=False, controller=f"tcp://127.0.0.1:{free_port()}")
    took = time.monotonic() - t0
    assert rc == 3 and "did not answer within 2000 ms" in err
    assert took < 2.6, took


def test_routes_follow_the_topology(running):
    for n in ("edge", "mid", "core", "far"):
        running.ctl("node", "add", n)
    running.ctl("link", "add", "edge", "mid", "--cost", "1")
    running.ctl("link", "add", "mid", "core", "--cost", "1")
    running.ctl("link", "add", "edge", "core", "--cost", "5")
    route = running.ctl_json("route", "show", "core", "--from", "edge")
    assert route == [{"from": "edge", "to": "core", "cost": 2, "path": ["edge", "mid", "core"]}]
    _, table, _ = running.ctl("route", "show", "core", "--from", "edge")
    assert "edge -> mid -> core" in table
    assert running.ctl_json("route", "show", "far") == []  # unreachable: no route
    # a node going away reroutes, and the proxies get the new table
    running.ctl("node", "del", "mid")
    route = running.ctl_json("route", "show", "core", "--from", "edge")
    assert route[0]["path"] == ["edge", "core"] and route[0]["cost"] == 5
    version = running.status()["config_version"]
    running.wait_converged(expect=6, timeout=3, version=version)
    shown = running.ctl_json("config", "show", "--kind", "ingress")["configs"]["ingress"]
    assert {(r["from"], r["to"]): r["path"] for r in shown["routes"]}[("edge", "core")] == [
        "edge", "core"]
    assert "routes" not in running.ctl_json("config", "show", "--kind", "retry")["configs"]["retry"]

