"""Hermes under docker-compose, for real.

Installs docker.io, docker-compose and debootstrap if missing, starts dockerd if none
answers (and stops only that one at the end), builds a local Debian base image with
debootstrap when it is absent (kept between runs), builds the Hermes image with
compose/Dockerfile, starts compose/docker-compose.yml with three tunnel relays and waits
until the controller reports every service up and on the current config version; then
changes the config (`hermesctl node add` of the relays' node) and waits until every container
runs the new version (the push channel between containers), checks that every relay serves
that node, and sends flows from this host through an ingress container and the relays (the
node's address is the relays' service name, which Docker's DNS answers with every relay's
address) to the controller's push port. A scale-down by one leaves the node in the routes,
and no flow sent while it happens fails. Always tears the project down.

Environment: HERMES_BIN_DIR (the build's bin dir, for hermesctl on the host),
HERMES_SOURCE_DIR (repository root). Optional: HERMES_COMPOSE (default docker-compose,
e.g. "docker compose" for Compose v2), HERMES_TEST_BASE_IMAGE (use this base image instead
of building hermes-base:bookworm).
Needs root (apt-get, dockerd). Fails, never skips, when docker cannot run here.
"""

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

SOURCE_DIR = Path(os.environ.get("HERMES_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BIN_DIR = Path(os.environ.get("HERMES_BIN_DIR") or SOURCE_DIR / "build" / "bin")
COMPOSE_FILE = SOURCE_DIR / "compose" / "docker-compose.yml"
COMPOSE = shlex.split(os.environ.get("HERMES_COMPOSE", "docker-compose"))

BASE_IMAGE = "hermes-base:bookworm"
# A fixed tag for the image under test, so that its layers (build dependencies above all)
# stay cached between runs; stale copies are pruned at the end.
IMAGE = "hermes-citest:local"
PACKAGES = ["docker.io", "docker-compose", "debootstrap"]
SERVICE_KINDS = ["relay", "ingress", "policy", "retry", "ndn", "bypass"]
RELAYS = 3
CONVERGE_S = 60  # from `compose up` returning to every service up and applied
PUSH_S = 30  # from a config change to every service running it
BYPASS_S = 30  # from convergence to the bypass agent's counters showing it ready

T0 = time.monotonic()


def log(msg):
    print(f"[compose-test {time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd, timeout, check=True, **kw):
    """Runs cmd, returns CompletedProcess with text output; fails the test on error."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {timeout}s: {shlex.join(map(str, cmd))}\n"
                    f"{(e.stdout or b'')[-3000:]!r}\n{(e.stderr or b'')[-3000:]!r}")
    if check and p.returncode != 0:
        pytest.fail(f"exit {p.returncode}: {shlex.join(map(str, cmd))}\n"
                    f"--- stdout\n{p.stdout[-5000:]}\n--- stderr\n{p.stderr[-5000:]}")
    return p


def installed(pkg):
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and "install ok installed" in p.stdout


def ensure_packages():
    missing = [p for p in PACKAGES if not installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"needs root to install {' '.join(missing)} (or install them first)")
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], timeout=300, env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        timeout=600, env=env)


def docker_answers():
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def docker_daemon(workdir):
    """Yields once `docker info` answers; stops dockerd at exit only if started here."""
    if docker_answers():
        log("dockerd already running: using it")
        yield
        return
    if os.geteuid() != 0:
        pytest.fail("docker does not answer and starting dockerd needs root")
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    logpath = workdir / "dockerd.log"
    log(f"starting {dockerd} (log {logpath})")
    with open(logpath, "wb") as logf:
        proc = subprocess.Popen([dockerd], stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not docker_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = logpath.read_text(errors="replace")[-4000:]
                pytest.fail("this machine cannot run docker: dockerd "
                            + (f"exited with {proc.returncode}" if proc.poll() is not None
                               else "did not answer in 60 s")
                            + f"\n--- dockerd log (tail)\n{tail}")
            time.sleep(0.5)
        log("dockerd answers")
        yield
    finally:
        if proc.poll() is None:
            log("stopping the dockerd this test started")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def mirror_uri():
    p = run(["bash", "-c", '. "$1/scripts/lib/install.sh" && hermes_mirror_uri', "_",
             str(SOURCE_DIR)], timeout=30)
    return p.stdout.strip()


def image_exists(name):
    return subprocess.run(["docker", "image", "inspect", name],
                          capture_output=True).returncode == 0


def ensure_base_image():
    """hermes-base:bookworm from debootstrap, built once per machine and kept."""
    if os.environ.get("HERMES_TEST_BASE_IMAGE"):
        return os.environ["HERMES_TEST_BASE_IMAGE"]
    with open("/tmp/hermes-base-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        if image_exists(BASE_IMAGE):
            log(f"base image {BASE_IMAGE} cached")
            return BASE_IMAGE
        uri = mirror_uri()
        root = Path(tempfile.mkdtemp(prefix="hermes-debootstrap-"))
        try:
            log(f"debootstrap --variant=minbase bookworm from {uri}")
            run(["debootstrap", "--variant=minbase", "bookworm", str(root), uri], timeout=900)
            # apt lists and caches are fetched again by every `apt-get update` of the build.
            for d in ("var/lib/apt/lists", "var/cache/apt"):
                for f in (root / d).glob("*"):
                    if f.is_file():
                        f.unlink()
            log(f"docker import {BASE_IMAGE}")
            run(["bash", "-c",
                 'set -o pipefail; tar -C "$1" -c . | docker import --change "CMD [\\"/bin/bash\\"]" - "$2"',
                 "_", str(root), BASE_IMAGE], timeout=300)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return BASE_IMAGE


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def prune_stale_images():
    """Removes the stale images the classic builder leaves behind, keeping the newest
    build-stage image (its layers are the cache of the next build)."""
    runtime = run(["docker", "images", "-q", "--filter", "dangling=true",
                   "--filter", "label=hermes.stage=runtime"], timeout=60, check=False)
    build = run(["docker", "images", "-q", "--filter", "dangling=true",
                 "--filter", "label=hermes.stage=build"], timeout=60, check=False)
    stale = runtime.stdout.split() + build.stdout.split()[1:]  # newest first
    if stale:
        run(["docker", "rmi", *stale], timeout=120, check=False)


def converged(status):
    """None when the status shows every service up and applied, else what is missing."""
    cfg = status.get("config_version")
    services = [s for s in status.get("services", []) if s.get("kind") != "controller"]
    counts = {k: sum(1 for s in services if s.get("kind") == k) for k in SERVICE_KINDS}
    problems = []
    if counts["relay"] != RELAYS:
        problems.append(f"{counts['relay']} relays, want {RELAYS}")
    problems += [f"no {k}" for k in SERVICE_KINDS if counts[k] == 0]
    problems += [f"{s.get('kind')}/{s.get('instance')} state={s.get('state')} "
                 f"applied={s.get('applied_version')} config={cfg}"
                 for s in services
                 if s.get("state") != "up" or s.get("applied_version") != cfg]
    return "; ".join(problems) or None


def wait_converged(ctl, seconds, min_version):
    """Polls `hermesctl status --json` until converged() at config_version >= min_version;
    returns that status, fails after `seconds`."""
    deadline = time.monotonic() + seconds
    last, status = "no answer yet", None
    for _ in range(int(seconds * 4)):  # bounded: each try takes >= 0.5 s
        if time.monotonic() > deadline:
            break
        p = run([*ctl, "status", "--json"], timeout=15, check=False)
        if p.returncode == 0:
            try:
                status = json.loads(p.stdout)
                last = converged(status)
                if last is None and status["config_version"] < min_version:
                    last = f"config_version {status['config_version']} < {min_version}"
            except (ValueError, AttributeError, KeyError, TypeError) as e:
                last = f"unparsable status ({e}): {p.stdout[:500]!r}"
            if last is None:
                return status
        else:
            last = f"hermesctl exit {p.returncode}: {p.stderr.strip()[-300:]}"
        time.sleep(0.5)
    pytest.fail(f"not converged within {seconds} s: {last}\n"
                f"last status: {json.dumps(status, indent=1)}")


def wait_bypass_ready(ctl, seconds):
    """Polls `hermesctl bypass stats --json` (counters ride on heartbeats) until the agent
    reports its data plane and a shaped interface; returns those counters."""
    deadline = time.monotonic() + seconds
    want = ("bypass_dataplane", "bypass_shaper_interfaces")
    last = "no answer yet"
    for _ in range(int(seconds * 2)):  # bounded: each try takes >= 0.5 s
        if time.monotonic() > deadline:
            break
        p = run([*ctl, "bypass", "stats", "--json"], timeout=15, check=False)
        if p.returncode == 0:
            try:
                st = json.loads(p.stdout)[0]["stats"] or {}
                last = {k: st.get(k) for k in want}
                if all((st.get(k) or 0) >= 1 for k in want):
                    return last
            except (ValueError, IndexError, KeyError, TypeError) as e:
                last = f"unparsable ({e}): {p.stdout[:300]!r}"
        else:
            last = f"hermesctl exit {p.returncode}: {p.stderr.strip()[-300:]}"
        time.sleep(0.5)
    pytest.fail(f"the bypass agent is not ready within {seconds} s: {last}")


def ingress_ip(compose, env):
    cid = run([*compose, "ps", "-q", "ingress-proxy"], timeout=60, env=env,
              cwd=SOURCE_DIR).stdout.split()[0]
    return run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} "
                "{{end}}", cid], timeout=30).stdout.split()[0]


def check_bypass_splices(ctl, compose, env, version):
    """A bypass-eligible flow through the ingress container, from this host to the
    controller's api port: the ingress offers it, the agent (in the ingress's network
    namespace) splices it, and bytes cross the splice both ways: the controller's ZMTP
    greeting goes on once our signature arrives through the splice."""
    rule = {"id": "citest-bypass", "priority": 5, "action": "allow", "bypass": True,
            "match": {"ports": ["7100"]}}
    run([*ctl, "policy", "add", "-"], timeout=30, input=json.dumps(rule))
    wait_converged(ctl, PUSH_S, min_version=version + 1)
    ip = ingress_ip(compose, env)
    log(f"bypass: a flow through the ingress at {ip}:3128 to controller:7100")
    with socket.create_connection((ip, 3128), timeout=10) as s:
        s.sendall(b"CONNECT controller:7100 HTTP/1.1\r\nHost: controller:7100\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            b = s.recv(1)
            assert b, f"the ingress closed after {head!r}"
            head += b
        assert head.startswith(b"HTTP/1.1 200"), head
        sig = b""
        while len(sig) < 10:  # ZMTP 3: a peer sends its signature, then waits for ours
            b = s.recv(10 - len(sig))
            assert b, f"the controller closed after {sig!r}"
            sig += b
        assert sig[0] == 0xFF and sig[9] == 0x7F, sig
        client = "%s:%d" % s.getsockname()
        deadline = time.monotonic() + 15
        flow = None
        while flow is None and time.monotonic() < deadline:
            p = run([*ctl, "bypass", "list", "--json"], timeout=15, check=False)
            if p.returncode == 0:
                for row in json.loads(p.stdout)["answers"]:
                    for f in (row.get("result") or {}).get("flows") or []:
                        if f["client"] == client and f["state"] == "spliced":
                            flow = f
            if flow is None:
                time.sleep(0.3)
        assert flow, f"the flow of {client} was not spliced: {p.stdout[-2000:]}"
        s.sendall(b"\xff" + b"\0" * 8 + b"\x7f")  # through the splice
        rest = s.recv(1)
        assert rest == b"\x03", f"no ZMTP version through the splice: {rest!r}"
    log(f"bypass: spliced and carrying bytes: {flow['proxy']} {flow['interfaces']}")


def overlay_flow(ip):
    """One flow through the ingress at ip, routed through the relays (tunnel-relay:4433,
    mutual TLS: the relay identity's certificate) to controller:7101, whose ZMTP greeting
    starts with its signature. None when it worked, else what went wrong."""
    try:
        with socket.create_connection((ip, 3128), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b"CONNECT controller:7101 HTTP/1.1\r\nHost: controller:7101\r\n\r\n")
            head = b""
            while not head.endswith(b"\r\n\r\n") and len(head) < 4096:
                b = s.recv(1)
                if not b:
                    return f"closed after {head!r}"
                head += b
            if not head.startswith(b"HTTP/1.1 200"):
                return f"answered {head[:200]!r}"
            sig = s.recv(1)
            return None if sig == b"\xff" else f"no ZMTP signature through the relays: {sig!r}"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def test_compose_stack_converges():
    hermesctl = BIN_DIR / "hermesctl"
    assert hermesctl.is_file(), f"{hermesctl} missing: build first (HERMES_BIN_DIR)"
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} missing (HERMES_SOURCE_DIR)"

    ensure_packages()
    work = Path(tempfile.mkdtemp(prefix="hermes-citest-"))
    project = f"hermes-citest-{secrets.token_hex(4)}"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        stack.enter_context(docker_daemon(work))
        base = ensure_base_image()

        keys = work / "keys"
        run([str(hermesctl), "keygen", "--dir", str(keys)], timeout=60)
        port = free_port()
        env = dict(os.environ, HERMES_BASE_IMAGE=base, HERMES_IMAGE=IMAGE,
                   HERMES_KEYS_DIR=str(keys), HERMES_CONTROLLER_PORT=str(port),
                   COMPOSE_DOCKER_CLI_BUILD="0")
        compose = [*COMPOSE, "-p", project, "-f", str(COMPOSE_FILE)]

        def down():
            log("compose down")
            run([*compose, "down", "-v", "--remove-orphans", "-t", "10"], timeout=300,
                check=False, env=env, cwd=SOURCE_DIR)
            prune_stale_images()

        stack.callback(down)  # runs before dockerd stops and the temp dir goes
        try:
            log(f"compose up ({project}, controller on port {port})")
            run([*compose, "up", "-d", "--build", "--scale", f"tunnel-relay={RELAYS}"],
                timeout=1200, env=env, cwd=SOURCE_DIR)
            log("compose up done; polling hermesctl status")
            ctl = [str(hermesctl), "-c", f"tcp://127.0.0.1:{port}", "--keys-dir", str(keys)]
            status = wait_converged(ctl, CONVERGE_S, min_version=0)
            relays = {s["instance"] for s in status["services"] if s["kind"] == "relay"}
            assert len(relays) == RELAYS, f"relay instances not distinct: {relays}"

            # A config change reaches every container over the push channel (7101).
            version = status["config_version"]
            log(f"converged at config version {version}; adding the relays' node")
            run([*ctl, "node", "add", "relays", "--address", "tunnel-relay:4433"], timeout=30)
            status = wait_converged(ctl, PUSH_S, min_version=version + 1)
            log(f"converged at config version {status['config_version']}")
            # every relay container registered the node it serves (HERMES_NODE)
            assert relay_node(ctl) == (RELAYS, RELAYS, None)

            # Flows from the ingress's node through the relays' node: the ingress dials the
            # relays by their service name (Docker's DNS answers with every relay's address)
            run([*ctl, "node", "add", "edge"], timeout=30)
            run([*ctl, "link", "add", "edge", "relays"], timeout=30)
            rule = {"id": "citest-overlay", "priority": 4, "action": "route", "route": "relays",
                    "match": {"ports": ["7101"]}}
            run([*ctl, "policy", "add", "-"], timeout=30, input=json.dumps(rule))
            status = wait_converged(ctl, PUSH_S, min_version=status["config_version"] + 3)
            # (the ingress keeps a connection to each relay, and new flows take turns)
            ip = ingress_ip(compose, env)
            errors = [e for e in (overlay_flow(ip) for _ in range(2 * RELAYS)) if e]
            assert not errors, f"flows through the relays failed: {errors}"
            carried = relays_carried(ctl, 2 * RELAYS)
            assert len(carried) == RELAYS and min(carried.values()) >= 1, \
                f"the flows did not spread over the {RELAYS} relays: {carried}"
            log(f"flows through {ip}:3128 and the relays reach controller:7101, "
                f"carried by each relay: {sorted(carried.values())}")

            # The bypass agent shares the ingress's network namespace: its eBPF data plane
            # loaded, its SYN shaper on the ingress's interface, the ingress connected to it.
            stats = wait_bypass_ready(ctl, BYPASS_S)
            log(f"bypass agent ready: {stats}")
            check_bypass_splices(ctl, compose, env, status["config_version"])

            # A scale-down stops one relay gracefully: the node keeps its other relays,
            # so routes keep it and no version is made.
            # Flows go on meanwhile, and none fails: a flow whose relay connection drains
            # gets a new one, to a relay that is still up.
            version = ctl_json(ctl, "status")["config_version"]
            outcomes, stop = [], threading.Event()

            def flows():
                while not stop.is_set() and len(outcomes) < 5000:
                    outcomes.append(overlay_flow(ip))
                    time.sleep(0.02)

            sender = threading.Thread(target=flows, daemon=True)
            sender.start()
            try:
                run([*compose, "up", "-d", "--no-build", "--scale",
                     f"tunnel-relay={RELAYS - 1}"], timeout=300, env=env, cwd=SOURCE_DIR)
                deadline = time.monotonic() + PUSH_S
                while relay_node(ctl)[1] != RELAYS - 1 and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(2)
            finally:
                stop.set()
                sender.join(30)
            assert relay_node(ctl) == (RELAYS, RELAYS - 1, None)
            assert ctl_json(ctl, "status")["config_version"] == version
            failed = [e for e in outcomes if e]
            assert len(outcomes) >= 20 and not failed, \
                f"{len(failed)} of {len(outcomes)} flows failed during the scale-down: {failed[:5]}"
            log(f"scaled the relays down by one: their node is still used, and "
                f"{len(outcomes)} flows sent meanwhile all arrived")

            # A scale-up: the new relay registers and takes a share of new flows once the
            # ingress's pool sees it: a new address when the name's answer expires
            # (--dns-cache-s, 10 s), or the stopped relay's address reused by Docker when
            # the pool's back-off for it ends (6.4 s at most).
            known = set(relays_carried(ctl, 0))
            run([*compose, "up", "-d", "--no-build", "--scale", f"tunnel-relay={RELAYS}"],
                timeout=300, env=env, cwd=SOURCE_DIR)
            started = time.monotonic()
            deadline = started + PUSH_S
            while relay_node(ctl)[1] != RELAYS and time.monotonic() < deadline:
                time.sleep(0.5)
            assert relay_node(ctl) == (RELAYS + 1, RELAYS, None)
            new, sent, deadline = {}, 0, time.monotonic() + 40
            while time.monotonic() < deadline and not any(new.values()):
                for _ in range(5):
                    err = overlay_flow(ip)
                    assert not err, f"a flow after the scale-up failed: {err}"
                    sent += 1
                    time.sleep(0.1)
                new = {r: n for r, n in relays_carried(ctl, 0).items() if r not in known}
            assert len(new) == 1 and sum(new.values()) >= 1, \
                f"the new relay took no flow in {sent} flows: {new}"
            log(f"scaled the relays up by one: the new relay carried flows "
                f"{time.monotonic() - started:.1f} s after the scale-up ({sent} flows sent)")
        except BaseException:
            dump_logs(compose, env)
            raise


def ctl_json(ctl, *args):
    return json.loads(run([*ctl, *args, "--json"], timeout=30).stdout)


def relays_carried(ctl, flows, seconds=10):
    """Per relay instance, the flows it terminated (relay_terminated, from the heartbeats
    the controller keeps), once they add up to flows or after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        carried = {r["instance"]: r["stats"].get("relay_terminated", 0)
                   for r in ctl_json(ctl, "stats", "--kind", "relay")}
        if sum(carried.values()) >= flows or time.monotonic() > deadline:
            return carried
        time.sleep(0.5)


def relay_node(ctl):
    """(relay instances, of them up, why routes avoid it or None) of the node "relays"."""
    node = {n["name"]: n for n in ctl_json(ctl, "node", "list")}["relays"]
    return node["relays"], node["relays_up"], node.get("avoided")


def dump_logs(compose, env):
    """Prints `compose ps` and `compose logs` (pytest shows them with the failure)."""
    for args, timeout in ((["ps"], 60), (["logs", "--no-color", "--tail", "300"], 120)):
        try:
            p = subprocess.run([*compose, *args], capture_output=True, text=True,
                               timeout=timeout, env=env, cwd=SOURCE_DIR)
            print(f"--- compose {' '.join(args)}\n{p.stdout}{p.stderr}")
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"--- compose {' '.join(args)}: {e}")
