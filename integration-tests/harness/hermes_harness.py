"""Starts real Hermes daemons on loopback for integration tests: keys, free ports, logs,
readiness by polling the controller, TERM-then-KILL shutdown, and a check that no daemon
died or logged an error the test did not cause."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SOURCE_DIR = os.environ.get("HERMES_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("HERMES_BIN_DIR") or os.path.join(SOURCE_DIR, "build", "bin")
KINDS = ["ingress", "relay", "policy", "retry", "ndn", "bypass"]
BINARY = {k: "hermes-" + k for k in KINDS}


_handed_out = set()


def free_port():
    """A loopback port nobody listens on, never one this process handed out before: two
    daemons started together must not be told the same port (the kernel may give the same
    free port to two binds in a row, and our listeners share ports with SO_REUSEPORT)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError("no fresh loopback port in 100 tries")


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def read_cert(path):
    """Z85 public and secret keys of a czmq zcert file pair (path = NAME.cert)."""
    keys = {}
    for p, field in ((path, "public-key"), (path + "_secret", "secret-key")):
        if not os.path.exists(p):
            continue
        with open(p) as f:
            m = re.search(field + r'\s*=\s*"([^"]+)"', f.read())
            if m:
                keys[field] = m.group(1).encode()
    return keys.get("public-key"), keys.get("secret-key")


class Daemon:
    def __init__(self, name, argv, log_path, env=None):
        self.name, self.argv, self.log_path, self.env = name, argv, log_path, env
        self.proc = None
        self.expected_exit = False
        self.log_offset = 0

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env)
        self.expected_exit = False
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """TERM, then KILL after timeout (longer than an ingress's or relay's default
        drain_s, 10 s: TERM lets open flows finish). Returns the exit code."""
        if not self.proc:
            return None
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode

    def kill9(self):
        self.expected_exit = True
        self.proc.kill()
        self.proc.wait(5)
        self.log.close()

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


class Suite:
    """A controller and any number of service daemons in a private temp dir."""

    def __init__(self, keep=False, netns=None):
        self.dir = tempfile.mkdtemp(prefix="hermes-it-")
        # netns: run every daemon and hermesctl inside that network namespace (ip netns exec,
        # which execs the command: the PID stays the daemon's own); loopback there must be up
        self.netns = netns
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.keys = os.path.join(self.dir, "keys")
        self.db = os.path.join(self.dir, "hermes.db")
        self.api_port, self.push_port = free_port(), free_port()
        self.api = f"tcp://127.0.0.1:{self.api_port}"
        self.push = f"tcp://127.0.0.1:{self.push_port}"
        self.daemons = {}
        self.listen = {}  # instance -> endpoint of its own listener (listen_endpoint)
        self.allowed_errors = []
        rc = subprocess.run([os.path.join(BIN_DIR, "hermesctl"), "keygen", "--dir", self.keys],
                            capture_output=True, text=True, timeout=20)
        assert rc.returncode == 0, rc.stderr

    # -- processes ---------------------------------------------------------------------
    def start_controller(self, wait=True, db_tmpfs_kib=None):
        """db_tmpfs_kib: the database's directory is a tmpfs of that size that this
        controller alone sees (a mount namespace of its own; the PID stays the controller's),
        so that a test can fill it through /proc/PID/root (a full disk)."""
        argv = [*self.prefix, os.path.join(BIN_DIR, "hermes-controller"), "--api-bind", self.api,
                "--push-bind", self.push, "--db", self.db, "--keys-dir", self.keys]
        if db_tmpfs_kib:
            db_dir = os.path.dirname(self.db)
            os.makedirs(db_dir, exist_ok=True)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    f'mount -t tmpfs -o size={int(db_tmpfs_kib)}k tmpfs "$0" && exec "$@"',
                    db_dir, *argv]
        d = Daemon("controller", argv, os.path.join(self.dir, "controller.log")).start()
        self.daemons["controller"] = d
        if wait:
            wait_for(lambda: self.ctl("status", "--json", check=False)[0] == 0, 10,
                     what="controller to answer")
        return d

    def listen_endpoint(self, instance):
        """A loopback endpoint on a free port for a daemon's own listener, the same one each
        time the instance starts (the policy engine's decisions: --listen)."""
        if instance not in self.listen:
            self.listen[instance] = f"tcp://127.0.0.1:{free_port()}"
        return self.listen[instance]

    def port(self, instance, name):
        """A free loopback port for one listener of an instance, stable across restarts."""
        key = f"{instance}/{name}"
        if key not in self.listen:
            self.listen[key] = free_port()
        return self.listen[key]

    def start_service(self, kind, instance=None, extra=(), policy="policy-1", hosts=None):
        """Every listener on loopback and a free port, so that tests never meet the
        default ports (a suite of the user's, or another test). hosts: the text of an
        /etc/hosts that this daemon alone sees (a mount namespace of its own with the file
        bind-mounted over the system's; the PID stays the daemon's own)."""
        instance = instance or f"{kind}-1"
        if kind == "policy" and "--listen" not in extra:
            extra = ("--listen", self.listen_endpoint(instance), *extra)
        if kind == "bypass" and "--socket" not in extra:
            extra = ("--socket", os.path.join(self.dir, f"{instance}.sock"), *extra)
        if kind == "relay" and "--listen" not in extra:
            extra = ("--listen", f"127.0.0.1:{self.port(instance, 'tunnel')}", *extra)
        if "--metrics-listen" not in extra:
            extra = ("--metrics-listen", f"127.0.0.1:{self.port(instance, 'metrics')}", *extra)
        if kind == "ingress":
            fronts = {"--http-listen": "http", "--h2-listen": "h2",
                      "--transparent-listen": "transparent"}
            for flag, name in fronts.items():
                if flag not in extra:
                    extra = (flag, f"127.0.0.1:{self.port(instance, name)}", *extra)
            if "--policy" not in extra:
                extra = ("--policy", self.listen_endpoint(policy), *extra)
        argv = [*self.prefix, os.path.join(BIN_DIR, BINARY[kind]), "--controller", self.api,
                "--controller-push", self.push, "--keys-dir", self.keys, "--instance", instance,
                *extra]
        if hosts is not None:
            path = os.path.join(self.dir, f"{instance}.hosts")
            with open(path, "w") as f:
                f.write(hosts)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$0" /etc/hosts && exec "$@"', path, *argv]
        d = Daemon(instance, argv, os.path.join(self.dir, f"{instance}.log")).start()
        self.daemons[instance] = d
        return d

    def start_all(self):
        self.start_controller()
        for kind in KINDS:
            self.start_service(kind)
        self.wait_converged(expect=len(KINDS))

    def stop_all(self):
        for d in self.daemons.values():
            if d.proc and d.proc.poll() is None:
                d.stop()
            elif d.proc and not d.log.closed:
                d.log.close()

    def cleanup(self):
        self.stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the admin client --------------------------------------------------------------
    def ctl(self, *args, check=True, timeout=15, input=None, controller=None):
        argv = [*self.prefix, os.path.join(BIN_DIR, "hermesctl"), "-c", controller or self.api,
                "--keys-dir", self.keys, *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check:
            assert r.returncode == 0, f"hermesctl {' '.join(args)} -> {r.returncode}: {r.stderr}"
        return r.returncode, r.stdout, r.stderr

    def ctl_json(self, *args):
        return json.loads(self.ctl(*args, "--json")[1])

    def status(self):
        return self.ctl_json("status")

    def services(self, kind=None):
        return [s for s in self.status()["services"]
                if s["kind"] != "controller" and (kind is None or s["kind"] == kind)]

    def wait_converged(self, expect, timeout=10, version=None):
        """All `expect` services up and running the current (or given) version."""
        def ok():
            st = self.status()
            v = version or st["config_version"]
            svcs = [s for s in st["services"] if s["kind"] != "controller"]
            up = [s for s in svcs if s["state"] == "up" and s["applied_version"] == v]
            return st if len(up) == expect and len(svcs) >= expect else None
        return wait_for(ok, timeout, what=f"{expect} services converged")

    # -- end-of-test checks ------------------------------------------------------------
    def allow_error(self, pattern):
        self.allowed_errors.append(re.compile(pattern))

    def check_health(self):
        """Every daemon not stopped on purpose is still alive; then all are stopped with
        TERM and must exit 0, and no log may hold an error, a warning or a sanitizer report
        that the test did not announce with allow_error."""
        problems = []
        for name, d in self.daemons.items():
            if not d.expected_exit and not d.alive():
                problems.append(f"{name} died with {d.proc.returncode}")
        # what the daemons logged while the test ran (not what one logs when another
        # stops first during the shutdown below)
        before = {name: len(d.log_text()) for name, d in self.daemons.items()}
        for name, d in self.daemons.items():
            if d.alive():
                rc = d.stop()
                if rc != 0:
                    problems.append(f"{name} exited with {rc} on SIGTERM")
        for name, d in self.daemons.items():
            text = d.log_text()
            offset = 0
            for line in text.splitlines(keepends=True):
                during_test = offset < before[name]
                offset += len(line)
                if "Sanitizer" in line or "runtime error:" in line:
                    problems.append(f"{name}: sanitizer report: {line.rstrip()}")
                elif during_test and (" error " in line or " warning " in line):
                    if not any(p.search(line) for p in self.allowed_errors):
                        problems.append(f"{name}: unexpected log line: {line.rstrip()}")
        assert not problems, "\n".join(problems)
