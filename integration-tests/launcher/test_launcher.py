"""scripts/hermes up / status / logs / down, as a user runs them (in a private var/ folder
and on free ports, so a suite the user runs is not touched)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from hermes_harness import BIN_DIR, KINDS, SOURCE_DIR, free_port, wait_for

SCRIPT = os.path.join(SOURCE_DIR, "scripts", "hermes")


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, HERMES_VAR_DIR=str(tmp_path / "var"),
             HERMES_BUILD_DIR=os.path.dirname(BIN_DIR),
             **{f"HERMES_{n}_PORT": str(free_port())
                for n in ("API", "PUSH", "RELAY", "POLICY", "HTTP", "H2", "TRANSPARENT")})
    yield e
    subprocess.run([SCRIPT, "down"], env=e, capture_output=True, timeout=60)


def run(env, *args, timeout=300):
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def gone(pid):
    """The process has exited (it may linger as a zombie of whoever started it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def pid_of(env, name):
    with open(os.path.join(env["HERMES_VAR_DIR"], "run", name + ".pid")) as f:
        return int(f.read())


def test_up_converges_restarts_what_died_and_down_stops_all(env):
    r = run(env, "up")
    assert r.returncode == 0, r.stderr
    assert "started: controller ingress relay policy retry ndn bypass" in r.stdout
    assert "7 of 7 services up, 7 running it" in r.stdout
    st = json.loads(run(env, "status", "--json").stdout)
    assert sorted(s["kind"] for s in st["services"]) == sorted(KINDS + ["controller"])
    assert {s["applied_version"] for s in st["services"]} == {st["config_version"]}
    assert os.path.exists(os.path.join(env["HERMES_VAR_DIR"], "hermes.db"))
    assert json.loads(run(env, "ctl", "node", "list", "--json").stdout)[0]["name"] == "local"
    # the launched suite carries traffic once a policy allows it
    origin_port = free_port()
    origin = subprocess.Popen([sys.executable, "-m", "http.server", str(origin_port), "--bind",
                               "127.0.0.1", "--directory", SOURCE_DIR],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", origin_port)) == 0, 10,
                 what="origin")
        proxy = f"http://127.0.0.1:{env['HERMES_HTTP_PORT']}"
        url = f"http://127.0.0.1:{origin_port}/README.md"
        denied = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                                 proxy, url], capture_output=True, text=True, timeout=30)
        assert denied.stdout == "403"  # no open proxy
        policy = json.dumps({"id": "local", "action": "allow", "match": {"dst": ["127.0.0.0/8"]}})
        r = subprocess.run([SCRIPT, "ctl", "policy", "add", "-"], env=env, input=policy,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: subprocess.run(["curl", "-s", "-x", proxy, url], capture_output=True,
                                        timeout=30).stdout.startswith(b"# Hermes"), 5,
                 what="the proxy to let the request through")
    finally:
        origin.terminate()
        origin.wait(5)
    # a second up leaves everything alone
    pids = {n: pid_of(env, n) for n in ["controller"] + KINDS}
    r = run(env, "up")
    assert r.returncode == 0 and "everything was already running" in r.stdout
    assert pids == {n: pid_of(env, n) for n in pids}
    # after a crash, up restarts only what is missing
    os.kill(pids["relay"], signal.SIGKILL)
    wait_for(lambda: gone(pids["relay"]), 5, what="relay gone")
    r = run(env, "up")
    assert r.returncode == 0 and "started: relay" in r.stdout, r.stdout + r.stderr
    assert pid_of(env, "relay") != pids["relay"]
    assert pid_of(env, "policy") == pids["policy"]
    r = run(env, "logs", "relay")
    assert "registered kind=relay instance=relay-1" in r.stdout
    assert run(env, "logs", "nosuch").returncode == 2
    r = run(env, "down")
    assert "stopped: controller ingress relay policy retry ndn bypass" in r.stdout
    for n, pid in pids.items():
        if n != "relay":
            wait_for(lambda: gone(pid), 5, what=f"{n} stopped")
    assert "nothing was running" in run(env, "down").stdout
