"""A daemon's bootstrap config: strict file, environment, flags; bad ones stop start-up with
a message that names what is wrong and where."""
import json
import os
import subprocess

from hermes_harness import BIN_DIR, wait_for


def run(binary, *args, env=None, timeout=10):
    return subprocess.run([os.path.join(BIN_DIR, binary), *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def test_bad_bootstrap_config_is_refused_clearly(tmp_path):
    bad = tmp_path / "relay.json"
    bad.write_text(json.dumps({"controller": "tcp://127.0.0.1:1", "colour": "blue"}))
    r = run("hermes-relay", "--config", str(bad))
    assert r.returncode == 2 and f"config file {bad}: unknown key 'colour'" in r.stderr
    bad.write_text('{"controller": 7100}')
    r = run("hermes-relay", "--config", str(bad))
    assert r.returncode == 2 and "key 'controller' must be a string" in r.stderr
    bad.write_text('{"controller": ')
    r = run("hermes-relay", "--config", str(bad))
    assert r.returncode == 2 and "line 1" in r.stderr
    r = run("hermes-policy", "--colour", "blue")
    assert r.returncode == 2 and "unknown option '--colour'" in r.stderr
    r = run("hermes-ndn", env={"HERMES_LOG_LEVEL": "loud"})
    assert r.returncode == 2 and "log_level must be debug, info, warning or error" in r.stderr
    r = run("hermes-controller", "--db")
    assert r.returncode == 2 and "needs a value" in r.stderr
    r = run("hermes-ingress", "--dns-cache-s", "-1")
    assert r.returncode == 1 and "dns_cache_s must be 0 to 86400, not -1" in r.stderr
    r = run("hermes-relay", "--drain-s", "-1")
    assert r.returncode == 2 and "drain_s must be 0 to 3600, not -1" in r.stderr
    for binary in ("hermes-relay", "hermes-ingress"):  # the name it registers its node by
        r = run(binary, "--node", "east west")  # refused before it listens on anything
        assert r.returncode == 1 and "node 'east west' is not a node name" in r.stderr, r.stderr
    r = run("hermes-retry", "--help")
    assert r.returncode == 0 and "--controller" in r.stdout and "HERMES_" in r.stdout


def test_missing_keys_stop_start_up_with_a_hint(tmp_path):
    r = run("hermes-bypass", "--keys-dir", str(tmp_path / "nokeys"))
    assert r.returncode == 1 and "hermesctl keygen" in r.stderr


def test_unwritable_database_is_reported(suite):
    r = run("hermes-controller", "--db", "/nonexistent/dir/h.db", "--keys-dir", suite.keys,
            "--api-bind", "tcp://127.0.0.1:0", "--push-bind", "tcp://127.0.0.1:0")
    assert r.returncode == 1 and "cannot open database /nonexistent/dir/h.db" in r.stderr


def test_file_env_and_flags_layer_in_order(suite, tmp_path):
    """File < environment < flag: the instance id shows which one won."""
    suite.start_controller()
    cfg = tmp_path / "retry.json"
    cfg.write_text(json.dumps({"controller": suite.api, "controller_push": suite.push,
                               "keys_dir": suite.keys, "instance": "from-file"}))
    env = dict(os.environ, HERMES_INSTANCE="from-env")
    procs = [subprocess.Popen([os.path.join(BIN_DIR, "hermes-retry"), "--config", str(cfg),
                               *extra], env=e, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
             for extra, e in (([], os.environ), ([], env), (["--instance", "from-flag"], env))]
    try:
        wait_for(lambda: {s["instance"] for s in suite.services("retry")}
                 == {"from-file", "from-env", "from-flag"}, 5, what="three retry instances")
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
