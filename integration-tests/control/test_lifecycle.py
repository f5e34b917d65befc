"""Control plane, end to end with real processes: registration, config push, rejection,
controller and daemon crashes, rollback."""
import errno
import json
import os
import signal
import time

from hermes_harness import KINDS, wait_for


def policy_file(suite, doc):
    path = os.path.join(suite.dir, f"policy-{doc['id']}.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def test_every_kind_up_with_same_version(running):
    st = running.status()
    kinds = sorted(s["kind"] for s in st["services"])
    assert kinds == sorted(KINDS + ["controller"])
    for s in st["services"]:
        assert s["state"] == "up", s
        assert s["applied_version"] == st["config_version"], s
    # the human table says the same
    _, out, _ = running.ctl("status")
    assert f"config version {st['config_version']}: 7 of 7 services up, 7 running it" in out


def test_policy_add_applied_everywhere_within_one_second(running):
    before = running.status()["config_version"]
    path = policy_file(running, {"id": "web", "priority": 10, "action": "allow",
                                 "match": {"dst": ["10.0.0.0/8"], "ports": ["80", "443"]}})
    t0 = time.monotonic()
    _, out, _ = running.ctl("policy", "add", path, "--json")
    assert json.loads(out)["version"] == before + 1
    running.wait_converged(expect=len(KINDS), timeout=1.0, version=before + 1)
    assert time.monotonic() - t0 <= 1.5  # includes hermesctl's own start-up
    assert [p["id"] for p in running.ctl_json("policy", "list")] == ["web"]
    # the policy engine got the document; other kinds got the topology only
    shown = running.ctl_json("config", "show")
    assert shown["configs"]["policy"]["policies"][0]["id"] == "web"
    assert shown["configs"]["relay"]["policies"] == []


def test_rejected_snapshot_is_recorded_kept_and_not_resent(running):
    running.allow_error(r"rejected config version=\d+ .*prefix length")
    running.allow_error(r"config rejected kind=policy instance=policy-1")
    good = running.status()["config_version"]
    path = policy_file(running, {"id": "broken", "action": "deny",
                                 "match": {"src": ["10.1.2.0/40"]}})
    running.ctl("policy", "add", path)
    bad = good + 1

    def rejected():
        pol = running.services("policy")[0]
        return pol if pol.get("rejected_version") == bad else None
    pol = wait_for(rejected, 3, what="policy engine to reject")
    assert pol["applied_version"] == good and pol["state"] == "up"
    assert "policy broken" in pol["reject_reason"] and "prefix length" in pol["reject_reason"]
    # every other kind applied it
    others = [s for s in running.services() if s["kind"] != "policy"]
    wait_for(lambda: all(s["applied_version"] == bad for s in running.services()
                         if s["kind"] != "policy"), 3, what="others to apply")
    assert len(others) == len(KINDS) - 1
    # three heartbeats later the engine has still seen version `bad` exactly once
    time.sleep(3.2)
    log = running.daemons["policy-1"].log_text()
    assert log.count(f"rejected config version={bad} ") == 1, log
    assert running.services("policy")[0]["applied_version"] == good
    # a restarted engine registers again and gets its last good version, not the bad one
    running.daemons["policy-1"].stop()
    running.start_service("policy")
    wait_for(lambda: "applied config version=%d via=register" % good
             in running.daemons["policy-1"].log_text(), 5, what="restart with the good version")
    assert running.daemons["policy-1"].log_text().count(f"rejected config version={bad} ") == 1
    # fixing the policy makes a new version that everybody applies
    path = policy_file(running, {"id": "broken", "action": "deny",
                                 "match": {"src": ["10.1.2.0/24"]}})
    running.ctl("policy", "add", path)
    running.wait_converged(expect=len(KINDS), timeout=3, version=bad + 1)


def test_controller_kill9_loses_nothing_and_services_return(running):
    running.allow_error(r"controller silent")
    running.ctl("node", "add", "edge-a", "--address", "127.0.0.1", "--site", "lab")
    running.ctl("node", "add", "core-b", "--address", "127.0.0.2")
    running.ctl("link", "add", "edge-a", "core-b", "--cost", "7", "--transport", "h3")
    running.ctl("policy", "add", policy_file(running, {"id": "p1", "action": "allow"}))
    before = {q: running.ctl_json(*q.split()) for q in
              ("node list", "link list", "policy list", "config history", "audit")}
    version = running.status()["config_version"]
    running.daemons["controller"].kill9()
    time.sleep(0.5)
    t0 = time.monotonic()
    running.start_controller()
    st = running.wait_converged(expect=len(KINDS), timeout=3, version=version)
    assert time.monotonic() - t0 <= 3.5
    assert st["config_version"] == version
    for q, rows in before.items():
        assert running.ctl_json(*q.split()) == rows, q
    assert any(r["command"] == "link.add" for r in before["audit"])


def test_daemon_kill9_goes_down_then_up(running):
    running.allow_error(r"instance down kind=relay")
    running.daemons["relay-1"].kill9()
    t0 = time.monotonic()
    wait_for(lambda: running.services("relay")[0]["state"] == "down", 4, what="relay down")
    assert time.monotonic() - t0 <= 3.5
    # the others stay up
    assert all(s["state"] == "up" for s in running.services() if s["kind"] != "relay")
    running.start_service("relay")
    running.wait_converged(expect=len(KINDS), timeout=3)


def test_rollback_restores_an_earlier_version(running):
    running.ctl("node", "add", "a")
    v_a = running.status()["config_version"]
    running.ctl("node", "add", "b")
    running.ctl("link", "add", "a", "b")
    assert [n["name"] for n in running.ctl_json("node", "list")] == ["a", "b"]
    _, out, _ = running.ctl("config", "rollback", str(v_a), "--json")
    v_new = json.loads(out)["version"]
    assert v_new > v_a
    assert [n["name"] for n in running.ctl_json("node", "list")] == ["a"]
    assert running.ctl_json("link", "list") == []
    hist = running.ctl_json("config", "history", "--limit", "1")
    assert hist[0]["version"] == v_new and hist[0]["reason"] == f"rollback to {v_a}"
    running.wait_converged(expect=len(KINDS), timeout=3, version=v_new)
    shown = running.ctl_json("config", "show", "--kind", "relay")
    assert [n["name"] for n in shown["configs"]["relay"]["topology"]["nodes"]] == ["a"]
    # rolling back to a version that does not exist is refused and changes nothing
    rc, _, err = running.ctl("config", "rollback", "9999", check=False)
    assert rc == 1 and "no config version 9999" in err
    assert running.status()["config_version"] == v_new


def fill(path):
    """Writes path until its file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


def test_a_full_disk_loses_nothing_and_the_controller_catches_up(suite):
    """The database's file system fills up (a tmpfs the controller alone sees, filled
    through /proc). Admin writes fail with a clear error and change nothing; the controller
    keeps serving reads and heartbeats; a relay that drains meanwhile cannot be recorded: the
    error is logged once, not on every check (back-off). Once there is room again, what was
    waiting is recorded without anyone asking (routes avoid the node), and everything stored
    before is still there."""
    s = suite
    s.db = os.path.join(s.dir, "dbfs", "hermes.db")
    ctl = s.start_controller(db_tmpfs_kib=4096)
    s.start_service("relay", "relay-core", extra=("--node", "core"))
    s.ctl("node", "add", "edge")
    s.ctl("node", "add", "core", "--address", f"127.0.0.1:{s.port('relay-core', 'tunnel')}")
    s.ctl("link", "add", "edge", "core")
    s.wait_converged(expect=1, timeout=5)
    before = {q: s.ctl_json(*q.split()) for q in ("node list", "link list", "config history")}
    version = s.status()["config_version"]

    filler = f"/proc/{ctl.proc.pid}/root{os.path.dirname(s.db)}/filler"
    fill(filler)
    s.allow_error(r"database or disk is full")
    s.allow_error(r"instance down kind=relay instance=relay-core")
    rc, _, err = s.ctl("node", "add", "far", check=False)
    assert rc == 1 and "database or disk is full" in err, (rc, err)
    assert s.ctl_json("node", "list") == before["node list"]  # reads go on

    # the relay drains: the controller sees it (status) but cannot store the new routes
    relay = s.daemons["relay-core"]
    relay.expected_exit = True
    relay.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any(x["state"] == "draining" for x in s.services("relay"))
             or relay.proc.poll() is not None, 5, what="the relay draining or gone")
    time.sleep(3)  # about 12 checks of the controller's sweep
    log = ctl.log_text()
    failures = log.count("cannot record node availability")
    assert failures == 1, log[-3000:]
    assert s.status()["config_version"] == version

    os.unlink(filler)
    wait_for(lambda: s.status()["config_version"] == version + 1, 12,
             what="the availability recorded once there is room")
    history = s.ctl_json("config", "history")[0]
    assert history["author"] == "controller" and "routes avoid node core" in history["reason"]
    assert "recorded node availability" in ctl.log_text()
    s.ctl("node", "add", "far")  # admin writes work again
    nodes = s.ctl_json("node", "list")
    assert [n["name"] for n in nodes] == ["core", "edge", "far"]
    assert s.ctl_json("link", "list") == before["link list"]
    assert s.ctl_json("config", "history")[2:] == before["config history"]  # after far, avoid core
