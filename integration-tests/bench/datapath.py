#!/usr/bin/env python3
"""Data-path benchmark (scripts/hermes bench datapath).

Measures, side by side in one run, the Hermes ingress and relays against no proxy, squid 5.7
(HTTP/1.1 CONNECT), haproxy 2.6 (mode tcp) and nghttpx (HTTP/2 CONNECT over TLS):
  latency     added latency per hop: 1 KiB ping-pong on an open tunnel, everything on CPU 0
  setup       connection setup to first byte (connect, CONNECT, first round trip), CPU 0
  concurrent  1000 concurrent short HTTPS-like exchanges on loopback
  throughput  one tunnel, each direction, and the proxies' CPU seconds per GiB
  wan         1000 concurrent HTTPS-like exchanges across an emulated 20 ms RTT WAN
              (network namespaces + an NFQUEUE delay line): direct vs ingress + relay with
              the client's own TLS through CONNECT; and 1000 concurrent real HTTPS GETs of an
              https:// URL (haproxy as the TLS origin): direct vs handed to the ingress in
              absolute form, the relay near the origin fetching it in TLS
  idle        10,000 idle tunnels: RSS per tunnel of ingress + relay (squid, haproxy too)
Prints tables, the verdict of each target (met / MISSED) and a JSON document (also written
to $BUILD_DIR/bench/datapath.json, or --out). Exit 0 when the benchmark ran, even with
missed targets; 1 when it could not run; 2 on a usage error. Every process it starts is
stopped by PID, every namespace it creates is deleted, also on failure.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("HERMES_ROOT") or os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR") or os.path.join(ROOT, "build")
BIN = os.path.join(BUILD_DIR, "bin")
os.environ.setdefault("HERMES_BIN_DIR", BIN)
os.environ.setdefault("HERMES_SOURCE_DIR", ROOT)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import hermes_harness as hh  # noqa: E402

PARTS = ["latency", "setup", "concurrent", "throughput", "idle", "wan"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(Exception):
    """The benchmark could not run; the message says what failed."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)\n"


def free_port():
    return hh.free_port()


def wait_port(host, port, timeout, what, proc=None, ns=None):
    """Waits until something accepts on host:port (in namespace ns, through `ip netns exec`
    when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            logp = getattr(proc, "bench_log", None)
            raise BenchError(f"{what} exited with {proc.returncode} before listening"
                             + (f":\n{tail(logp, 8)}" if logp else ""))
        if ns:
            r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                                f"import socket; socket.create_connection(('{host}', {port}), 1)"],
                               capture_output=True, timeout=10)
            if r.returncode == 0:
                return
        else:
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex((host, port)) == 0:
                    return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on {host}:{port} within {timeout}s")


# ---- processes: started and stopped by PID; CPU time, RSS and CPU affinity --------------

def children_of(pid):
    """PIDs of all descendants of pid (from /proc)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def tree(pid):
    return [pid] + children_of(pid)


def cpu_seconds(pids):
    """utime + stime (all threads) of the processes, with their descendants."""
    total = 0.0
    for pid in {q for p in pids for q in tree(p)}:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
    return total


def children_cpu_seconds():
    """CPU seconds (user + system) of this process's children that were waited for."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def pin(pids, cpus):
    """Sets the CPU affinity of every thread of the processes and their descendants."""
    for pid in {q for p in pids for q in tree(p)}:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass


class Procs:
    """Every process the benchmark starts itself (not the Hermes daemons of a harness
    Suite, which stops its own): stopped by PID, TERM then KILL."""

    def __init__(self):
        self.items = []

    def start(self, name, argv, log_path, **kw):
        logf = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", logf), stderr=logf,
                             stdin=kw.pop("stdin", subprocess.DEVNULL), **kw)
        p.bench_name, p.bench_log, p.bench_logf = name, log_path, logf
        self.items.append(p)
        return p

    def stop(self, p, timeout=5):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            except ProcessLookupError:
                pass
        try:
            p.bench_logf.close()
        except Exception:
            pass
        if p in self.items:
            self.items.remove(p)
        return p.returncode

    def stop_all(self):
        for p in reversed(list(self.items)):
            try:
                self.stop(p)
            except Exception as e:  # keep going: everything must be stopped
                log(f"could not stop {p.bench_name} (pid {p.pid}): {e}")


def read_port_line(p, timeout, what):
    """The 'port N' line a hermes-bench-target prints on stdout."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.1)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"port (\d+)\n", buf)
            if m:
                return int(m.group(1))
        if p.poll() is not None:
            break
    raise BenchError(f"{what} did not report its port: {buf[-300:]!r}")


def start_target(procs, tmp, name, listen="127.0.0.1:0", ns=None):
    argv = [os.path.join(BIN, "hermes-bench-target"), "--listen", listen]
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    p = procs.start(name, argv, os.path.join(tmp, f"{name}.log"), stdout=subprocess.PIPE)
    p.port = read_port_line(p, 10, name)
    return p


# ---- the client ---------------------------------------------------------------------------

def pingpong(mode, connect, proxy="none", target=None, cpu=None, ns=None, timeout=180,
             user=None, **opts):
    """Runs hermes-pingpong once (as uid `user` when given) and returns its JSON result
    (raises on failure)."""
    argv = [os.path.join(BIN, "hermes-pingpong"), mode, "--connect", connect, "--proxy", proxy,
            "--timeout-s", str(timeout - 10)]
    if user is not None:
        argv = ["setpriv", "--reuid", str(user), "--regid", str(user), "--clear-groups"] + argv
        if opts.get("samples"):  # written by that user
            with open(opts["samples"], "w"):
                pass
            os.chmod(opts["samples"], 0o666)
    if target:
        argv += ["--target", target]
    for k, v in opts.items():
        if v is True:
            argv.append("--" + k.replace("_", "-"))
        elif v is not None and v is not False:
            argv += ["--" + k.replace("_", "-"), str(v)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu)] + argv
    return run_client(argv, f"hermes-pingpong {mode} via {connect} ({proxy})", ns, timeout)


def run_client(argv, what, ns, timeout):
    """Runs a benchmark client (in namespace ns when given) and returns the last JSON object
    it printed; raises when it did not finish, printed none, or printed an error."""
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish in {timeout}s")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"{what}: no result (exit {r.returncode}): {r.stderr.strip()[-400:]}")
    res = json.loads(lines[-1])
    if "error" in res:
        raise BenchError(f"{what}: {res['error']}")
    return res


# ---- baselines: haproxy, squid, nghttpx ---------------------------------------------------

def nofile_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def baseline_max_conns():
    """Connections a proxy with two descriptors per connection can hold here."""
    return (nofile_limit() - 200) // 2


def start_haproxy(procs, tmp, target_port):
    port = free_port()
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn {baseline_max_conns()}
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 600s
    timeout server 600s
frontend bench
    bind 127.0.0.1:{port}
    default_backend target
backend target
    server target 127.0.0.1:{target_port}
""")
    p = procs.start("haproxy", ["haproxy", "-f", cfg, "-db"], os.path.join(tmp, "haproxy.log"))
    wait_port("127.0.0.1", port, 10, "haproxy", p)
    p.port = port
    return p


def start_squid(procs, tmp):
    port = free_port()
    d = os.path.join(tmp, "squid")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "squid.conf")
    with open(cfg, "w") as f:
        f.write(f"""http_port 127.0.0.1:{port}
acl bench_clients src 127.0.0.1/32
http_access allow bench_clients
http_access deny all
cache deny all
cache_mem 0 MB
access_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
pinger_enable off
visible_hostname hermes-bench
max_filedescriptors {nofile_limit()}
shutdown_lifetime 0 seconds
""")
    # squid drops to user proxy: its files must be writable by it
    try:
        shutil.chown(d, user="proxy")
    except (LookupError, PermissionError) as e:
        raise BenchError(f"squid needs its log dir writable by user proxy: {e}")
    p = procs.start("squid", ["squid", "-N", "-f", cfg, "-n", f"hbench{os.getpid()}"],
                    os.path.join(tmp, "squid.log"))
    p.bench_extra_log = os.path.join(d, "cache.log")
    wait_port("127.0.0.1", port, 20, "squid", p)
    p.port = port
    return p


def start_nghttpx(procs, tmp, backend_port):
    """nghttpx -s: HTTP/2 over TLS in front, the squid on backend_port behind (nghttpx
    forwards CONNECT to a backend proxy; it does not terminate CONNECT itself)."""
    port = free_port()
    key, cert = os.path.join(tmp, "nghttpx.key"), os.path.join(tmp, "nghttpx.crt")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-keyout", key, "-out", cert],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        raise BenchError(f"openssl could not make nghttpx's certificate: {r.stderr[-300:]}")
    argv = ["nghttpx", "-s", f"--frontend=127.0.0.1,{port}", f"--backend=127.0.0.1,{backend_port}",
            "--single-process", "--single-thread", "--no-ocsp",
            f"--errorlog-file={os.path.join(tmp, 'nghttpx-error.log')}",
            "--frontend-read-timeout=10m", "--frontend-write-timeout=10m",
            "--backend-read-timeout=10m", "--backend-write-timeout=10m",
            "--stream-read-timeout=0", "--stream-write-timeout=0",
            "--frontend-http2-window-size=256K", "--frontend-http2-connection-window-size=16M",
            key, cert]
    p = procs.start("nghttpx", argv, os.path.join(tmp, "nghttpx.log"))
    wait_port("127.0.0.1", port, 10, "nghttpx", p)
    p.port = port
    return p


# ---- Hermes on loopback (the integration-test harness) ------------------------------------

POLICY = {
    "direct": {"id": "all", "priority": 1000, "action": "allow"},
    "core": {"id": "all", "priority": 1000, "action": "route", "route": "core"},
    "far": {"id": "all", "priority": 1000, "action": "route", "route": "far"},
}


class Hermes:
    """controller, policy engine, ingress (node edge), relays on nodes core and far; links
    edge -> core -> far (the `overlay` fixture of integration-tests/datapath)."""

    def __init__(self, relays=("core", "far")):
        self.s = hh.Suite()
        self.policy = None
        s = self.s
        try:
            s.start_controller()
            s.start_service("policy")
            s.start_service("ingress", extra=("--node", "edge", "--connect-timeout-ms", "2000"))
            for r in relays:
                s.start_service("relay", f"relay-{r}", extra=("--node", r))
            s.ctl("node", "add", "edge")
            prev = "edge"
            for r in relays:
                s.ctl("node", "add", r, "--address", f"127.0.0.1:{s.port('relay-' + r, 'tunnel')}")
                s.ctl("link", "add", prev, r)
                prev = r
            self.expect = 2 + len(relays)
            s.wait_converged(expect=self.expect, timeout=15)
            self.http_port = s.port("ingress-1", "http")
            self.h2_port = s.port("ingress-1", "h2")
            wait_port("127.0.0.1", self.http_port, 10, "hermes-ingress")
        except BaseException:
            self.stop()
            raise

    def pid(self, name):
        return self.s.daemons[name].proc.pid

    def pids(self, names=None):
        return [d.proc.pid for n, d in self.s.daemons.items()
                if d.alive() and (names is None or n in names)]

    def set_policy(self, mode):
        if self.policy == mode:
            return
        self.s.ctl("policy", "add", "-", input=json.dumps(POLICY[mode]))
        self.s.wait_converged(expect=self.expect, timeout=15)
        self.policy = mode
        time.sleep(0.2)  # let the ingress warm its pool toward the new first hop

    def check_alive(self):
        dead = [f"{n} (exit {d.proc.returncode})" for n, d in self.s.daemons.items()
                if not d.alive()]
        if dead:
            raise BenchError("Hermes daemon(s) died: " + ", ".join(dead) + "\n" + "".join(
                f"--- {n} ---\n{tail(d.log_path)}" for n, d in self.s.daemons.items()
                if not d.alive()))

    def log_problems(self):
        """Warnings, errors and sanitizer lines in the daemons' logs (for the report)."""
        out = []
        for n, d in self.s.daemons.items():
            try:
                for line in d.log_text().splitlines():
                    if " error " in line or " warning " in line or "Sanitizer" in line:
                        out.append(f"{n}: {line.strip()}")
            except OSError:
                pass
        return out

    def stop(self):
        try:
            for n, d in self.s.daemons.items():
                if d.alive():
                    rc = d.stop()
                    if rc != 0:
                        EXIT_PROBLEMS.append(f"{n} exited with {rc} on SIGTERM")
                        log(f"{n} exited with {rc} on SIGTERM:\n{tail(d.log_path, 5)}")
            self.s.stop_all()
        finally:
            if not KEEP:
                shutil.rmtree(self.s.dir, ignore_errors=True)


KEEP = False
EXIT_PROBLEMS = []  # Hermes daemons that did not exit 0 on SIGTERM


# ---- arms -------------------------------------------------------------------------------------

class Arm:
    def __init__(self, name, proxy, connect, label, policy=None, cpu_pids=(), target=None,
                 pipeline=False, user=None):
        self.name, self.proxy, self.connect, self.label = name, proxy, connect, label
        self.policy, self.cpu_pids, self.target = policy, list(cpu_pids), target
        self.pipeline = pipeline  # the client's first bytes ride with its CONNECT
        self.user = user  # the client runs as this uid (the transparent arm's REDIRECT rule)


# The transparent arm: the client (run as this uid) connects to the target itself, and an
# iptables REDIRECT rule for that uid's connections sends it to the ingress's transparent
# port (the ingress, as root, reaches the target unredirected). Like haproxy in mode tcp,
# no CONNECT exchange; unlike it, netfilter NAT on every segment of the client leg.
TRANSPARENT_UID = 65534


class Redirect:
    """The REDIRECT rule of the transparent arm (nat OUTPUT, this run's ports only)."""

    def __init__(self, target_port, to_port):
        self.spec = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(target_port),
                     "-m", "owner", "--uid-owner", str(TRANSPARENT_UID), "-j", "REDIRECT",
                     "--to-ports", str(to_port)]
        r = subprocess.run(["iptables", "-w", "-t", "nat", "-A", *self.spec],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise BenchError(f"iptables REDIRECT for the transparent arm: {r.stderr.strip()}")

    def remove(self):
        subprocess.run(["iptables", "-w", "-t", "nat", "-D", *self.spec], capture_output=True,
                       timeout=30)


def build_arms(env):
    t = f"127.0.0.1:{env['target'].port}"
    h = env["hermes"]
    ing = h.pid("ingress-1")
    arms = [
        Arm("direct", "none", t, "no proxy", target=t),
        Arm("haproxy", "none", f"127.0.0.1:{env['haproxy'].port}", "haproxy 2.6 mode tcp",
            cpu_pids=[env["haproxy"].pid], target=t),
        Arm("squid", "h1", f"127.0.0.1:{env['squid'].port}", "squid 5.7 CONNECT",
            cpu_pids=[env["squid"].pid], target=t),
        Arm("hermes", "h1", f"127.0.0.1:{h.http_port}", "Hermes ingress direct (H1 CONNECT)",
            policy="direct", cpu_pids=[ing], target=t),
        Arm("hermes-pipelined", "h1", f"127.0.0.1:{h.http_port}",
            "Hermes ingress direct, client sends with its CONNECT", policy="direct",
            cpu_pids=[ing], target=t, pipeline=True),
        Arm("hermes-name", "h1", f"127.0.0.1:{h.http_port}",
            "Hermes ingress direct, CONNECT to a name (localhost: its cached lookup)",
            policy="direct", cpu_pids=[ing], target=f"localhost:{env['target'].port}"),
        Arm("hermes-transparent", "none", t,
            "Hermes ingress direct, transparent front (iptables REDIRECT, no CONNECT)",
            policy="direct", cpu_pids=[ing], target=t, user=TRANSPARENT_UID),
        Arm("hermes-h2", "h2", f"127.0.0.1:{h.h2_port}",
            "Hermes ingress direct (H2 CONNECT over TLS)", policy="direct", cpu_pids=[ing],
            target=t),
        Arm("nghttpx", "h2", f"127.0.0.1:{env['nghttpx'].port}",
            "nghttpx (H2/TLS) -> squid", cpu_pids=[env["nghttpx"].pid, env["squid"].pid],
            target=t),
        Arm("hermes-relay", "h1", f"127.0.0.1:{h.http_port}",
            "Hermes ingress -> relay (H2/TLS) -> target", policy="core",
            cpu_pids=[ing, h.pid("relay-core")], target=t),
        Arm("hermes-2relays", "h1", f"127.0.0.1:{h.http_port}",
            "Hermes ingress -> relay -> relay -> target", policy="far",
            cpu_pids=[ing, h.pid("relay-core"), h.pid("relay-far")], target=t),
    ]
    return {a.name: a for a in arms}


def all_proxy_pids(env):
    pids = env["hermes"].pids() + [env[k].pid for k in ("haproxy", "squid", "nghttpx")]
    return pids


# --arms: the loopback parts run only these arms (None: all)
SELECTED_ARMS = None


def ordered(arms, names):
    """Arms in an order that changes the Hermes policy as rarely as possible."""
    rank = {None: 0, "direct": 1, "core": 2, "far": 3}
    if SELECTED_ARMS:
        names = [n for n in names if n in SELECTED_ARMS]
    return sorted((arms[n] for n in names), key=lambda a: (rank[a.policy], names.index(a.name)))


def run_arm(env, arm, fn):
    if arm.policy:
        env["hermes"].set_policy(arm.policy)
    try:
        return fn(arm)
    finally:
        if arm.policy:
            env["hermes"].check_alive()


# ---- parts ------------------------------------------------------------------------------------

LAT_ARMS = ["direct", "haproxy", "squid", "hermes", "hermes-h2", "nghttpx", "hermes-relay",
            "hermes-2relays"]


def stats(samples_us):
    v = sorted(samples_us)
    return {"n": len(v), "p50_us": round(pct(v, 50), 1), "p90_us": round(pct(v, 90), 1),
            "p99_us": round(pct(v, 99), 1), "p999_us": round(pct(v, 99.9), 1),
            "min_us": round(v[0], 1) if v else 0.0, "max_us": round(v[-1], 1) if v else 0.0,
            "mean_us": round(sum(v) / len(v), 1) if v else 0.0}


def rounds(env, args, names, tag, run, nrounds=None):
    """Runs every arm nrounds (default args.rounds) times, arms interleaved round by round,
    and merges the samples: a burst of other load on the machine then touches every arm, not
    one."""
    nrounds = nrounds or args.rounds
    acc = {n: [] for n in names}
    for rd in range(nrounds):
        for arm in ordered(env["arms"], names):
            log(f"{tag}: {arm.name} (round {rd + 1}/{nrounds})")
            path = os.path.join(env["tmp"], f"{tag}-{arm.name}-{rd}.samples")
            run_arm(env, arm, lambda a: run(a, path))
            with open(path) as f:
                acc[arm.name] += [float(x) for x in f.read().split()]
    return {n: stats(acc[n]) for n in names if acc[n]}


def part_latency(env, args):
    pin(all_proxy_pids(env) + [env["target"].pid], {0})
    per = max(1, args.lat_count // args.rounds)
    return rounds(env, args, LAT_ARMS, "latency", lambda a, path: pingpong(
        "latency", a.connect, a.proxy, a.target, cpu=0, count=per,
        warmup=args.lat_warmup, size=1024, samples=path))


def part_setup(env, args):
    pin(all_proxy_pids(env) + [env["target"].pid], {0})
    per = max(1, args.setup_count // args.setup_rounds)
    return rounds(env, args, SETUP_ARMS, "setup", lambda a, path: pingpong(
        "setup", a.connect, a.proxy, a.target, cpu=0, count=per, user=a.user,
        warmup=max(10, per // 10), size=1024, samples=path, pipeline=a.pipeline),
        nrounds=args.setup_rounds)


# haproxy in mode tcp needs no CONNECT round trip: a pipelining client makes the same number
# of round trips through Hermes
SETUP_ARMS = LAT_ARMS[:4] + ["hermes-pipelined", "hermes-transparent"] + LAT_ARMS[4:]


CONC_ARMS = ["direct", "haproxy", "squid", "hermes", "hermes-pipelined", "hermes-transparent",
             "hermes-name", "hermes-relay"]


def pct(sorted_vals, p):
    """Nearest-rank percentile (as hermes-pingpong computes it)."""
    if not sorted_vals:
        return 0.0
    rank = max(1, min(len(sorted_vals), int(p / 100.0 * len(sorted_vals) + 0.999999)))
    return sorted_vals[rank - 1]


def syn_retransmits():
    """The kernel's count of SYNs sent again in this network namespace (TcpExt
    TCPSynRetrans): a SYN lost on loopback costs its connection 1 s, then 3 s."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split(), values.split()))["TCPSynRetrans"])
    except (OSError, KeyError, ValueError):
        pass
    return None


def waves(arms_runs, nwaves, tmp, tag, loopback=False):
    """Runs each arm's wave function nwaves times, arms interleaved wave by wave (so that
    drift and other load on the machine touch every arm alike), and merges the samples.
    arms_runs: [(name, setup_fn or None, wave_fn(samples_path) -> result dict)].
    loopback: the waves run on loopback in this namespace, the proxies on a CPU of their own;
    then the proxies' idle time per wave is reported, and the SYNs sent again during each
    arm's waves are counted (a wave that lost SYNs has seconds-long exchanges, whatever the
    arm)."""
    acc = {name: {"samples": [], "totals": [], "failed": 0, "cpu": 0.0, "load": 0.0,
                  "client": 0.0, "n": 0, "syn": 0 if loopback else None}
           for name, _, _ in arms_runs}
    for w in range(nwaves):
        for name, setup, wave in arms_runs:
            if setup:
                setup()
            path = os.path.join(tmp, f"{tag}-{name}-{w}.samples")
            s0 = syn_retransmits() if loopback else None
            r = wave(path)
            a = acc[name]
            s1 = syn_retransmits() if loopback else None
            if s0 is not None and s1 is not None:
                a["syn"] += s1 - s0
            with open(path) as f:
                a["samples"] += [float(x) for x in f.read().split()]
            a["totals"].append(r["total_s"])
            a["failed"] += r["failed"] + r.get("unfinished", 0)
            a["cpu"] += r.get("proxy_cpu_s", 0.0)
            a["client"] += r.get("client_cpu_s", 0.0)
            a["load"] += r.get("client_cpu_s", 0.0) + r.get("target_cpu_s", 0.0)
            a["n"] += r["requests"]
            if r.get("first_error") and not a.get("first_error"):
                a["first_error"] = r["first_error"]
    out = {}
    for name, a in acc.items():
        v = sorted(a["samples"])
        out[name] = {"waves": nwaves, "requests": a["n"], "completed": len(v),
                     "failed": a["failed"], "p50_us": round(pct(v, 50), 1),
                     "p90_us": round(pct(v, 90), 1), "p99_us": round(pct(v, 99), 1),
                     "max_us": round(v[-1], 1) if v else 0.0,
                     "wave_s_mean": round(sum(a["totals"]) / len(a["totals"]), 3),
                     "wave_s_max": round(max(a["totals"]), 3),
                     "proxy_cpu_s": round(a["cpu"], 3),
                     "proxy_cpu_us_per_exchange": round(a["cpu"] / max(1, a["n"]) * 1e6, 1),
                     # the wave's time that the proxies (on their own CPU) did not run: they
                     # waited for the load, e.g. a CONNECT proxy for the client's requests
                     # while the client still opens its connections
                     "proxy_idle_ms_per_wave":
                         round((sum(a["totals"]) - a["cpu"]) / nwaves * 1e3, 1)
                         if loopback and a["cpu"] else None,
                     "client_cpu_us_per_exchange": round(a["client"] / max(1, a["n"]) * 1e6, 1),
                     "load_cpu_ms_per_wave": round(a["load"] / nwaves * 1e3, 1),
                     "syn_retransmits": a["syn"],
                     "first_error": a.get("first_error", "")}
    return out


def part_concurrent(env, args):
    """Waves of `concurrency` HTTPS-like exchanges started at once, on new connections."""
    # the load (client and target) on CPU 0, the proxies on CPU 1
    pin(all_proxy_pids(env), {1})
    pin([env["target"].pid], {0})
    runs = []
    for arm in ordered(env["arms"], CONC_ARMS):
        def setup(a=arm):
            if a.policy:
                env["hermes"].set_policy(a.policy)

        def wave(path, a=arm):
            c0 = cpu_seconds(a.cpu_pids) if a.cpu_pids else 0.0
            t0, k0 = cpu_seconds([env["target"].pid]), children_cpu_seconds()
            r = pingpong("rpc", a.connect, a.proxy, a.target, cpu=0, count=args.concurrency,
                         concurrency=args.concurrency, rpc=args.rpc, samples=path, user=a.user,
                         pipeline=a.pipeline)
            r["proxy_cpu_s"] = cpu_seconds(a.cpu_pids) - c0 if a.cpu_pids else 0.0
            # the load's own CPU (CPU 0): the client (taskset and setpriv exec it, so it is
            # this process's waited-for child) and the target
            r["client_cpu_s"] = children_cpu_seconds() - k0
            r["target_cpu_s"] = cpu_seconds([env["target"].pid]) - t0
            if a.policy:
                env["hermes"].check_alive()
            return r
        setup()
        log(f"concurrent: warm-up {arm.name}")
        pingpong("rpc", arm.connect, arm.proxy, arm.target, cpu=0, count=300, concurrency=100,
                 rpc=args.rpc, user=arm.user)
        runs.append((arm.name, setup, wave))
    log(f"concurrent: {args.conc_waves} waves of {args.concurrency} over {len(runs)} arms")
    return waves(runs, args.conc_waves, env["tmp"], "conc", loopback=True)


TPUT_ARMS = ["direct", "haproxy", "squid", "hermes", "hermes-h2", "nghttpx", "hermes-relay"]


def part_throughput(env, args):
    pin(all_proxy_pids(env), {1})
    pin([env["target"].pid], {0})
    nbytes = args.bulk_mib * 1024 * 1024
    gib = nbytes / (1 << 30)
    out = {}
    for arm in ordered(env["arms"], TPUT_ARMS):
        log(f"throughput: {arm.name}")

        def run(a):
            res = {}
            for mode in ("bulk-up", "bulk-down"):
                per = {pid: cpu_seconds([pid]) for pid in a.cpu_pids}
                r = pingpong(mode, a.connect, a.proxy, a.target, cpu=0, bytes=nbytes,
                             timeout=300)
                cpu = {pid: cpu_seconds([pid]) - c for pid, c in per.items()}
                r["proxy_cpu_s"] = round(sum(cpu.values()), 3)
                r["proxy_cpu_s_per_gib"] = round(sum(cpu.values()) / gib, 3)
                r["proxy_cpu_by_pid"] = {str(k): round(v, 3) for k, v in cpu.items()}
                res[mode] = r
            return res
        out[arm.name] = run_arm(env, arm, run)
    return out


def run_idle_client(connect, target, count, size, concurrency, timeout, pids, ns=None):
    """Opens `count` idle CONNECT tunnels, measures the RSS of pids while they are open."""
    argv = [os.path.join(BIN, "hermes-pingpong"), "idle", "--connect", connect, "--proxy", "h1",
            "--target", target, "--count", str(count), "--size", str(size), "--concurrency",
            str(concurrency), "--timeout-s", str(timeout), "--hold-s", str(timeout + 60)]
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    before = {pid: rss_kib(pid) for pid in pids}
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout + 20
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if r:
                line = p.stdout.readline()
                break
            if p.poll() is not None:
                break
        if not line.startswith("{"):
            raise BenchError(f"idle client gave no result: {line!r} {p.stderr.read()[-300:] if p.poll() is not None else ''}")
        opened = json.loads(line)
        time.sleep(1.0)  # let the daemons settle (frees, lazily returned buffers)
        during = {pid: rss_kib(pid) for pid in pids}
        p.stdin.close()
        closed = json.loads(p.stdout.readline() or "{}")
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    return opened, closed, before, during


def part_idle(env, args):
    """A fresh ingress + relay (so their RSS says what the tunnels cost), then squid and
    haproxy for comparison."""
    out = {}
    procs, tmp = env["procs"], env["tmp"]
    tgt = start_target(procs, tmp, "target-idle")
    t = f"127.0.0.1:{tgt.port}"
    log("idle: a fresh Hermes (ingress + one relay)")
    h = Hermes(relays=("core",))
    try:
        h.set_policy("core")
        ing, rel = h.pid("ingress-1"), h.pid("relay-core")
        # one tunnel first: the pool's connection and the first allocations are not per tunnel
        run_idle_client(f"127.0.0.1:{h.http_port}", t, 20, args.idle_size, 20, 60, [])
        time.sleep(0.5)
        opened, closed, before, during = run_idle_client(
            f"127.0.0.1:{h.http_port}", t, args.idle_tunnels, args.idle_size, 200, 240,
            [ing, rel])
        n = max(1, opened["open"])
        res = {"tunnels": opened["open"], "failed": opened["failed"],
               "open_s": opened["seconds"], "first_error": opened.get("first_error", ""),
               "peer_closed_while_idle": closed.get("peer_closed_while_idle"),
               "rss_kib_before": {"ingress": before[ing], "relay": before[rel]},
               "rss_kib_open": {"ingress": during[ing], "relay": during[rel]}}
        d_ing, d_rel = during[ing] - before[ing], during[rel] - before[rel]
        res["kib_per_tunnel"] = {"ingress": round(d_ing / n, 2), "relay": round(d_rel / n, 2),
                                 "total": round((d_ing + d_rel) / n, 2)}
        h.check_alive()
        res["log_problems"] = h.log_problems()[:20]
        out["hermes-relay"] = res
    finally:
        h.stop()
    if "squid" not in env:
        env["squid"] = start_squid(procs, tmp)
    for name in ("squid", "haproxy"):
        log(f"idle: {name}")
        if name == "haproxy":
            # haproxy's backend is the main target; give it a fresh one of its own
            hp = start_haproxy(procs, tmp, tgt.port)
            connect, proxy, pids = f"127.0.0.1:{hp.port}", "none", [hp.pid]
        else:
            hp = None
            connect, proxy, pids = f"127.0.0.1:{env['squid'].port}", "h1", [env["squid"].pid]
        try:
            if proxy == "none":
                # haproxy is no CONNECT proxy: plain TCP connections, each with an echo
                res = idle_plain(connect, args, pids)
            else:
                opened, closed, before, during = run_idle_client(
                    connect, t, min(args.idle_tunnels, baseline_max_conns() - 100),
                    args.idle_size, 200, 240, pids)
                n = max(1, opened["open"])
                res = {"tunnels": opened["open"], "failed": opened["failed"],
                       "rss_kib_before": before[pids[0]], "rss_kib_open": during[pids[0]],
                       "kib_per_tunnel": {"total": round((during[pids[0]] - before[pids[0]]) / n,
                                                         2)}}
            out[name] = res
        finally:
            if hp:
                procs.stop(hp)
    procs.stop(tgt)
    return out


def idle_plain(connect, args, pids):
    """Idle connections through a TCP proxy (no CONNECT): hermes-pingpong idle without a
    proxy head, each connection echoing once."""
    argv = [os.path.join(BIN, "hermes-pingpong"), "idle", "--connect", connect, "--proxy", "none",
            "--count", str(min(args.idle_tunnels, baseline_max_conns() - 100)), "--size",
            str(args.idle_size), "--concurrency",
            "200", "--timeout-s", "240", "--hold-s", "300"]
    before = {pid: rss_kib(pid) for pid in pids}
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        r, _, _ = select.select([p.stdout], [], [], 260)
        line = p.stdout.readline() if r else ""
        if not line.startswith("{"):
            raise BenchError(f"idle client gave no result: {line!r}")
        opened = json.loads(line)
        time.sleep(1.0)
        during = {pid: rss_kib(pid) for pid in pids}
        p.stdin.close()
        p.stdout.readline()
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    n = max(1, opened["open"])
    return {"tunnels": opened["open"], "failed": opened["failed"],
            "rss_kib_before": before[pids[0]], "rss_kib_open": during[pids[0]],
            "kib_per_tunnel": {"total": round((during[pids[0]] - before[pids[0]]) / n, 2)}}


# ---- the emulated WAN: namespaces, veths, the NFQUEUE delay line --------------------------

class Wan:
    """client <-> router <-> server namespaces; the router delays every forwarded packet by
    rtt/2 in each direction (hermes-nfq-delay on NFQUEUE). Addresses from 198.18.0.0/15
    (the benchmarking range), used only inside these namespaces."""

    CLIENT, ROUTER_C, ROUTER_S, SERVER = "198.18.1.1", "198.18.1.2", "198.18.2.1", "198.18.2.2"

    def __init__(self, procs, tmp, rtt_ms):
        self.procs, self.tmp, self.rtt_ms = procs, tmp, rtt_ms
        tag = f"hermes-bench-{os.getpid()}"
        self.ns = {k: f"{tag}-{k}" for k in ("client", "router", "server")}
        self.created = []
        self.delay = None

    def sh(self, *argv, ns=None, check=True):
        cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise BenchError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def up(self):
        for k, name in self.ns.items():
            self.sh("ip", "netns", "add", name)
            self.created.append(name)
        c, r, s = self.ns["client"], self.ns["router"], self.ns["server"]
        pid = os.getpid()
        a, b, x, y = f"hb{pid}a", f"hb{pid}b", f"hb{pid}x", f"hb{pid}y"
        self.sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        self.sh("ip", "link", "set", a, "netns", c)
        self.sh("ip", "link", "set", b, "netns", r)
        self.sh("ip", "link", "add", x, "type", "veth", "peer", "name", y)
        self.sh("ip", "link", "set", x, "netns", r)
        self.sh("ip", "link", "set", y, "netns", s)
        for ns, dev, addr in ((c, a, self.CLIENT), (r, b, self.ROUTER_C), (r, x, self.ROUTER_S),
                              (s, y, self.SERVER)):
            self.sh("ip", "addr", "add", addr + "/24", "dev", dev, ns=ns)
            self.sh("ip", "link", "set", dev, "up", ns=ns)
        for ns in (c, r, s):
            self.sh("ip", "link", "set", "lo", "up", ns=ns)
        self.sh("ip", "route", "add", "default", "via", self.ROUTER_C, ns=c)
        self.sh("ip", "route", "add", "default", "via", self.ROUTER_S, ns=s)
        self.sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=r)
        for ns in (c, s):  # many short connections from one client address
            self.sh("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", ns=ns, check=False)
            self.sh("sysctl", "-qw", "net.core.somaxconn=8192", ns=ns, check=False)
            self.sh("sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=8192", ns=ns, check=False)
        # the delay line first, then the rule that feeds it (no listener: packets dropped)
        self.delay = self.procs.start(
            "nfq-delay", ["ip", "netns", "exec", r, *self.realtime(),
                          os.path.join(BIN, "hermes-nfq-delay"),
                          "--queue", "0", "--delay-ms", str(self.rtt_ms / 2.0),
                          "--max-held", "200000"],
            os.path.join(self.tmp, "nfq-delay.log"), stdout=subprocess.PIPE)
        r_, _, _ = select.select([self.delay.stdout], [], [], 10)
        if not r_ or b"ready" not in self.delay.stdout.readline():
            raise BenchError("hermes-nfq-delay did not start: " +
                             tail(os.path.join(self.tmp, "nfq-delay.log")))
        self.sh("iptables", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", "0", ns=r)

    @staticmethod
    def realtime():
        """The delay line is the network: it runs SCHED_FIFO so that the endpoints, which
        share the two CPUs with it, cannot hold packets past their due time."""
        if shutil.which("chrt") and os.geteuid() == 0:
            r = subprocess.run(["chrt", "-f", "20", "true"], capture_output=True, timeout=10)
            if r.returncode == 0:
                return ["chrt", "-f", "20"]
        return []

    def delay_stats(self):
        if not self.delay:
            return {}
        self.procs.stop(self.delay)
        try:
            line = self.delay.stdout.read().decode(errors="replace").strip().splitlines()
            return json.loads(line[-1]) if line and line[-1].startswith("{") else {}
        except Exception:
            return {}
        finally:
            self.delay = None

    def down(self):
        for name in reversed(self.created):
            # processes still inside would keep it alive: stop ours first (by the caller)
            r = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0:
                log(f"could not delete namespace {name}: {r.stderr.strip()}")
        self.created = []


class NsHermes:
    """controller + policy engine + ingress in the client namespace, the relay in the
    server namespace, registering with the controller across the WAN."""

    def __init__(self, wan, tmp, origin_ca):
        self.wan, self.dir, self.origin_ca = wan, os.path.join(tmp, "hermes-wan"), origin_ca
        os.makedirs(self.dir, exist_ok=True)
        self.keys = os.path.join(self.dir, "keys")
        r = subprocess.run([os.path.join(BIN, "hermesctl"), "keygen", "--dir", self.keys],
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise BenchError(f"hermesctl keygen: {r.stderr}")
        c = wan.CLIENT
        self.api, self.push = f"tcp://{c}:7100", f"tcp://{c}:7101"
        self.daemons = {}

    def _start(self, name, ns, argv):
        d = hh.Daemon(name, ["ip", "netns", "exec", ns] + argv,
                      os.path.join(self.dir, f"{name}.log")).start()
        self.daemons[name] = d
        return d

    def ctl(self, *args, input=None):
        r = subprocess.run(["ip", "netns", "exec", self.wan.ns["client"],
                            os.path.join(BIN, "hermesctl"), "-c", self.api, "--keys-dir",
                            self.keys, *args], capture_output=True, text=True, timeout=20,
                           input=input)
        if r.returncode != 0:
            raise BenchError(f"hermesctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def up(self):
        cns, sns = self.wan.ns["client"], self.wan.ns["server"]
        common = ["--controller", self.api, "--controller-push", self.push, "--keys-dir",
                  self.keys]
        self._start("controller", cns, [os.path.join(BIN, "hermes-controller"), "--api-bind",
                                        self.api, "--push-bind", self.push, "--db",
                                        os.path.join(self.dir, "hermes.db"), "--keys-dir",
                                        self.keys])
        hh.wait_for(lambda: self._status() is not None, 15, what="controller in the namespace")
        self._start("policy", cns, [os.path.join(BIN, "hermes-policy"), *common, "--instance",
                                    "policy-1", "--listen", "tcp://127.0.0.1:7200"])
        self._start("ingress", cns, [os.path.join(BIN, "hermes-ingress"), *common, "--instance",
                                     "ingress-1", "--node", "edge", "--policy",
                                     "tcp://127.0.0.1:7200", "--http-listen", "127.0.0.1:3128",
                                     "--h2-listen", "127.0.0.1:3129", "--transparent-listen",
                                     "127.0.0.1:3130"])
        # the same, answering overlay CONNECTs before the relay does (optimistic_connect)
        self._start("ingress-opt", cns, [os.path.join(BIN, "hermes-ingress"), *common,
                                         "--instance", "ingress-2", "--node", "edge", "--policy",
                                         "tcp://127.0.0.1:7200", "--http-listen",
                                         "127.0.0.1:3138", "--h2-listen", "",
                                         "--transparent-listen", "", "--optimistic-connect",
                                         "true"])
        self._start("relay", sns, [os.path.join(BIN, "hermes-relay"), *common, "--instance",
                                   "relay-core", "--node", "core", "--listen",
                                   f"{self.wan.SERVER}:4433", "--origin-ca-file",
                                   self.origin_ca])
        self.ctl("node", "add", "edge")
        self.ctl("node", "add", "core", "--address", f"{self.wan.SERVER}:4433")
        self.ctl("link", "add", "edge", "core")
        self.ctl("policy", "add", "-", input=json.dumps(POLICY["core"]))
        hh.wait_for(self._converged, 30, interval=0.2, what="Hermes converged across the WAN")
        wait_port("127.0.0.1", 3128, 10, "ingress in the client namespace", ns=cns)
        wait_port("127.0.0.1", 3138, 10, "optimistic ingress in the client namespace", ns=cns)

    def _status(self):
        try:
            return json.loads(self.ctl("status", "--json"))
        except (BenchError, ValueError, subprocess.TimeoutExpired):
            return None

    def _converged(self):
        st = self._status()
        if not st:
            return False
        svcs = [s for s in st["services"] if s["kind"] != "controller"]
        up = [s for s in svcs if s["state"] == "up" and s["applied_version"] == st["config_version"]]
        return len(up) == 4

    def check_alive(self):
        dead = [n for n, d in self.daemons.items() if not d.alive()]
        if dead:
            raise BenchError("Hermes daemon(s) died in the WAN scenario: " + ", ".join(dead) +
                             "\n" + "".join(f"--- {n} ---\n{tail(self.daemons[n].log_path)}"
                                            for n in dead))

    def stop(self):
        for n, d in reversed(list(self.daemons.items())):
            if d.proc and d.proc.poll() is None:
                rc = d.stop()
                if rc != 0:
                    EXIT_PROBLEMS.append(f"{n} (WAN) exited with {rc} on SIGTERM")
            elif d.proc and not d.log.closed:
                d.log.close()


def start_https_origin(procs, tmp, wan, body_size):
    """haproxy in the server namespace as an HTTPS origin: TLS (ECDSA P-256, a certificate
    for the server's address), every GET answered with body_size bytes, keep-alive."""
    d = os.path.join(tmp, "https-origin")
    os.makedirs(d, exist_ok=True)
    cert, key, pem = (os.path.join(d, n) for n in ("origin.crt", "origin.key", "origin.pem"))
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=bench-origin", "-addext", f"subjectAltName=IP:{wan.SERVER}",
                        "-keyout", key, "-out", cert], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise BenchError(f"openssl req (origin certificate): {r.stderr.strip()}")
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    body = os.path.join(d, "body")
    with open(body, "wb") as f:
        f.write(b"x" * body_size)
    cfg = os.path.join(d, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn {baseline_max_conns()}
    tune.bufsize {max(16384, body_size) + 16384}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 30s
frontend origin
    bind {wan.SERVER}:8443 ssl crt {pem}
    http-request return status 200 content-type application/octet-stream file {body}
""")
    p = procs.start("https-origin", ["ip", "netns", "exec", wan.ns["server"], "haproxy", "-f",
                                     cfg, "-db"], os.path.join(d, "haproxy.log"))
    wait_port(wan.SERVER, 8443, 10, "the HTTPS origin (haproxy)", p, ns=wan.ns["server"])
    p.cert = cert
    return p


def https_load(connect, url, proxy, ns, ca=None, timeout=180, **opts):
    """Runs hermes-https-load once and returns its JSON result (raises on failure)."""
    argv = [os.path.join(BIN, "hermes-https-load"), "--connect", connect, "--url", url,
            "--proxy", proxy, "--timeout-s", str(timeout - 10)]
    if ca:
        argv += ["--ca", ca]
    for k, v in opts.items():
        if v is not None:
            argv += ["--" + k.replace("_", "-"), str(v)]
    return run_client(argv, f"hermes-https-load via {connect} ({proxy})", ns, timeout)


# The WAN arms, in report order: (name, the arm its ratios compare with).
WAN_ARMS = [("direct", None), ("hermes", "direct"), ("hermes-pipelined", "direct"),
            ("hermes-optimistic", "direct"), ("https-direct", None),
            ("hermes-https", "https-direct")]


def part_wan(env, args):
    procs, tmp = env["procs"], env["tmp"]
    if not os.path.exists(os.path.join(BIN, "hermes-nfq-delay")):
        raise BenchError("hermes-nfq-delay was not built (libnetfilter-queue-dev missing): "
                         "run scripts/hermes bench datapath, which installs it")
    wan = Wan(procs, tmp, args.wan_rtt_ms)
    hermes = None
    tgt = origin = None
    out = {}
    try:
        wan.up()
        cns, sns = wan.ns["client"], wan.ns["server"]
        tgt = start_target(procs, tmp, "target-wan", f"{wan.SERVER}:8080", ns=sns)
        target = f"{wan.SERVER}:8080"
        size = int(args.rpc.split(",")[3])
        origin = start_https_origin(procs, tmp, wan, size)
        url = f"https://{wan.SERVER}:8443/"
        # the round trip as TCP sees it: connect + one 1 KiB echo = 2 RTT
        probe = pingpong("setup", target, "none", None, ns=cns, count=10, warmup=2, size=1024)
        out["measured_rtt_ms"] = round(probe["p50_us"] / 2000.0, 2)
        log(f"wan: measured RTT {out['measured_rtt_ms']} ms (target {args.wan_rtt_ms})")
        hermes = NsHermes(wan, tmp, origin.cert)
        hermes.up()
        rel = hermes.daemons["relay"].proc.pid
        runs = []

        def arm(name, client, pids):
            """One arm: its wave function (client(path, conc), plus the proxies' CPU time
            when pids, then a check that the daemons are all still up) and a light one."""
            def wave(path, conc=args.concurrency):
                c0 = cpu_seconds(pids) if pids else 0.0
                r = client(path, conc)
                if pids:
                    r["proxy_cpu_s"] = cpu_seconds(pids) - c0
                hermes.check_alive()
                return r
            runs.append((name, None, wave, lambda path: wave(path, conc=args.wan_light)))

        for name, connect, proxy, pipe, ingress in (
                ("direct", target, "none", False, None),
                ("hermes", "127.0.0.1:3128", "h1", False, "ingress"),
                ("hermes-pipelined", "127.0.0.1:3128", "h1", True, "ingress"),
                ("hermes-optimistic", "127.0.0.1:3138", "h1", False, "ingress-opt")):
            log(f"wan: warm-up {name}")
            pingpong("rpc", connect, proxy, target, ns=cns, count=200, concurrency=100,
                     rpc=args.rpc, pipeline=pipe)
            arm(name, lambda path, conc, connect=connect, proxy=proxy, pipe=pipe: pingpong(
                "rpc", connect, proxy, target, ns=cns, count=conc, concurrency=conc,
                rpc=args.rpc, pipeline=pipe, flow_timeout_s=60, timeout=180, samples=path),
                [hermes.daemons[ingress].proc.pid, rel] if ingress else None)
        # real HTTPS: the client's own TLS to the origin, or the URL handed to the ingress
        for name, connect, proxy in (("https-direct", f"{wan.SERVER}:8443", "none"),
                                     ("hermes-https", "127.0.0.1:3128", "h1")):
            # warm at the wave's size: the exit relay then holds as many kept TLS connections
            # to the origin as a wave needs (the other arms keep nothing between waves)
            log(f"wan: warm-up {name}")
            https_load(connect, url, proxy, cns, ca=origin.cert, count=args.concurrency,
                       concurrency=args.concurrency)
            arm(name, lambda path, conc, connect=connect, proxy=proxy: https_load(
                connect, url, proxy, cns, ca=origin.cert, count=conc, concurrency=conc,
                flow_timeout_s=60, samples=path),
                [hermes.daemons["ingress"].proc.pid, rel] if proxy != "none" else None)
        log(f"wan: {args.wan_waves} waves of {args.concurrency} over {len(runs)} arms")
        out.update(waves([r[:3] for r in runs], args.wan_waves, tmp, "wan"))
        if args.wan_light:
            # the same exchanges with little load: the round trips each path needs, without
            # the CPU of a 2-core machine as the bottleneck
            log(f"wan: {args.wan_waves} light waves of {args.wan_light}")
            out["light"] = waves([(r[0], None, r[3]) for r in runs], args.wan_waves, tmp,
                                 "wanlight")
    finally:
        if hermes:
            hermes.stop()
        if tgt:
            procs.stop(tgt)
        if origin:
            procs.stop(origin)
        out["delay_line"] = wan.delay_stats()
        wan.down()
    return out


# ---- report -------------------------------------------------------------------------------

def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    print("  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def hop(res, arm, base, key):
    if arm in res and base in res:
        return round(res[arm][key] - res[base][key], 1)
    return None


HOPS = [  # name, arm, base, kind
    ("squid (plain hop)", "squid", "direct", "plain"),
    ("haproxy (plain hop)", "haproxy", "direct", "plain"),
    ("Hermes ingress (plain hop)", "hermes", "direct", "plain"),
    ("nghttpx H2/TLS in front of squid", "nghttpx", "squid", "h2"),
    ("Hermes H2/TLS front (h2 port vs h1 port)", "hermes-h2", "hermes", "h2"),
    ("Hermes relay hop (H2/TLS, ingress->relay)", "hermes-relay", "hermes", "h2"),
    ("Hermes second relay hop", "hermes-2relays", "hermes-relay", "h2"),
]


def verdicts(R, args):
    """[(target, figures, met)] for every target whose parts ran."""
    out = []

    def add(what, figure, ok):
        out.append({"target": what, "figure": figure, "met": bool(ok)})

    lat = R.get("latency")
    if lat and "hops" in R:
        hops = R["hops"]
        for base in ("haproxy", "squid"):
            for q in ("p50", "p99"):
                h = hops.get(f"Hermes ingress (plain hop)", {}).get(q)
                b = hops.get(f"{base} (plain hop)", {}).get(q)
                if h is not None and b is not None:
                    add(f"plain hop added {q} <= {base}'s", f"Hermes {h} us vs {base} {b} us"
                        + (f" ({h / b:.2f}x)" if b > 0 else ""), h <= b)
        for q in ("p50", "p99"):
            h = hops.get("Hermes relay hop (H2/TLS, ingress->relay)", {}).get(q)
            b = hops.get("nghttpx H2/TLS in front of squid", {}).get(q)
            if h is not None and b is not None:
                add(f"H2/TLS hop added {q} <= nghttpx's", f"Hermes relay hop {h} us vs nghttpx "
                    f"{b} us" + (f" ({h / b:.2f}x)" if b > 0 else ""), h <= b)
    st = R.get("setup")
    for arm, how in (("hermes", "client waits for the 200"),
                     ("hermes-pipelined", "client sends with its CONNECT"),
                     ("hermes-transparent", "transparent front, no CONNECT")):
        if st and arm in st and "haproxy" in st:
            h, b = st[arm]["p50_us"], st["haproxy"]["p50_us"]
            add(f"connection setup p50 <= haproxy's ({how})", f"Hermes {h} us vs haproxy {b} us "
                f"({h / b:.2f}x)", h <= b)
    tp = R.get("throughput")
    if tp and "hermes" in tp and "haproxy" in tp:
        for mode in ("bulk-up", "bulk-down"):
            h, b = tp["hermes"][mode], tp["haproxy"][mode]
            add(f"one-tunnel throughput ({mode}) >= haproxy's",
                f"Hermes {h['mib_per_s']} MiB/s vs haproxy {b['mib_per_s']} MiB/s "
                f"({h['mib_per_s'] / b['mib_per_s']:.2f}x)", h["mib_per_s"] >= b["mib_per_s"])
            add(f"proxy CPU per GiB ({mode}) <= haproxy's",
                f"Hermes {h['proxy_cpu_s_per_gib']} s/GiB vs haproxy "
                f"{b['proxy_cpu_s_per_gib']} s/GiB",
                h["proxy_cpu_s_per_gib"] <= b["proxy_cpu_s_per_gib"])
    cc = R.get("concurrent")
    for arm, how in (("hermes", "H1 CONNECT"), ("hermes-pipelined", "client sends with its CONNECT"),
                     ("hermes-transparent", "transparent front")):
        if cc and arm in cc and "haproxy" in cc:
            h, b = cc[arm]["p99_us"], cc["haproxy"]["p99_us"]
            # the CPU the load (client + target, CPU 0) needed per wave in each arm: a CONNECT
            # client's own extra work shows here, not in the proxy's column
            lh, lb = cc[arm].get("load_cpu_ms_per_wave"), cc["haproxy"].get("load_cpu_ms_per_wave")
            load = f"; load CPU {lh:.0f} vs {lb:.0f} ms per wave" if lh and lb else ""
            ih = cc[arm].get("proxy_idle_ms_per_wave")
            ib = cc["haproxy"].get("proxy_idle_ms_per_wave")
            if ih is not None and ib is not None:
                load += f"; proxy idle {ih:.0f} vs {ib:.0f} ms per wave"
            sh, sb = cc[arm].get("syn_retransmits"), cc["haproxy"].get("syn_retransmits")
            if sh or sb:
                load += (f"; the kernel resent {sh} vs {sb} SYNs in these waves (each costs its "
                         "connection 1 s or more: the p99 then measures the machine)")
            add(f"{args.concurrency} concurrent on loopback p99 <= haproxy's ({how})",
                f"Hermes {h / 1000:.2f} ms vs haproxy {b / 1000:.2f} ms ({h / b:.2f}x){load}",
                h <= b and cc[arm]["failed"] == 0)
    w = R.get("wan")
    for arm, base in WAN_ARMS:
        if not (w and base and base in w and arm in w):
            continue
        for q in ("p50", "p99"):
            h, d = w[arm][f"{q}_us"], w[base][f"{q}_us"]
            add(f"WAN overlay ({arm}) {q} <= 0.5x {base}", f"overlay {h / 1000:.1f} ms vs "
                f"{base} {d / 1000:.1f} ms ({h / d:.2f}x)",
                h <= 0.5 * d and w[arm]["failed"] == 0)
    idle = R.get("idle", {}).get("hermes-relay")
    if idle:
        k = idle["kib_per_tunnel"]["total"]
        add("RSS per idle tunnel (ingress + relay) <= 64 KiB",
            f"{k} KiB (ingress {idle['kib_per_tunnel']['ingress']}, relay "
            f"{idle['kib_per_tunnel']['relay']}) over {idle['tunnels']} tunnels",
            k <= 64 and idle["tunnels"] >= args.idle_tunnels)
    return out


def report(R, args):
    labels = R.get("arms", {})
    if "latency" in R:
        lat = R["latency"]
        rows = []
        for a, r in lat.items():
            rows.append([a, fmt(r["p50_us"]), fmt(r["p99_us"]), fmt(r["p999_us"]),
                         fmt(hop(lat, a, "direct", "p50_us")), fmt(hop(lat, a, "direct", "p99_us")),
                         labels.get(a, "")])
        table("1 KiB ping-pong on an open tunnel (client, proxies, target all on CPU 0), us",
              ["arm", "p50", "p99", "p99.9", "+p50 vs direct", "+p99 vs direct", "path"], rows)
        R["hops"] = {}
        rows = []
        for name, arm, base, kind in HOPS:
            p50, p99 = hop(lat, arm, base, "p50_us"), hop(lat, arm, base, "p99_us")
            if p50 is None:
                continue
            R["hops"][name] = {"p50": p50, "p99": p99, "arm": arm, "base": base, "kind": kind}
            rows.append([name, fmt(p50), fmt(p99), f"{arm} - {base}"])
        table("Added latency per hop, us", ["hop", "p50", "p99", "computed as"], rows)
    if "setup" in R:
        rows = [[a, fmt(r["p50_us"]), fmt(r["p99_us"]), fmt(r["p999_us"]), labels.get(a, "")]
                for a, r in R["setup"].items()]
        table("Connection setup to first byte (connect + CONNECT + 1 KiB round trip, CPU 0), us",
              ["arm", "p50", "p99", "p99.9", "path"], rows)
    if "concurrent" in R:
        rows = [[a, fmt(r["p50_us"] / 1000, 2), fmt(r["p99_us"] / 1000, 2),
                 fmt(r["wave_s_mean"], 3), r["failed"], fmt(r["proxy_cpu_us_per_exchange"], 0),
                 fmt(r.get("proxy_idle_ms_per_wave"), 0),
                 fmt(r.get("client_cpu_us_per_exchange", 0), 0),
                 fmt(r.get("load_cpu_ms_per_wave", 0), 0), fmt(r.get("syn_retransmits")),
                 labels.get(a, "")]
                for a, r in R["concurrent"].items()]
        table(f"{args.concurrency} HTTPS-like exchanges ({args.rpc} bytes) started at once, "
              f"{args.conc_waves} waves, loopback (load on CPU 0, proxies on CPU 1)",
              ["arm", "p50 ms", "p99 ms", "wave s", "failed", "proxy cpu us/exch",
               "proxy idle ms/wave", "client cpu us/exch", "load cpu ms/wave", "SYNs resent",
               "path"], rows)
    if "throughput" in R:
        rows = []
        for a, r in R["throughput"].items():
            u, d = r["bulk-up"], r["bulk-down"]
            rows.append([a, fmt(u["mib_per_s"], 0), fmt(d["mib_per_s"], 0),
                         fmt(u["proxy_cpu_s_per_gib"], 2), fmt(d["proxy_cpu_s_per_gib"], 2),
                         labels.get(a, "")])
        table(f"One tunnel, {args.bulk_mib} MiB each way (load on CPU 0, proxies on CPU 1)",
              ["arm", "up MiB/s", "down MiB/s", "cpu s/GiB up", "cpu s/GiB down", "path"], rows)
    if "idle" in R:
        rows = []
        for a, r in R["idle"].items():
            k = r["kib_per_tunnel"]
            rows.append([a, r["tunnels"], r["failed"], fmt(k.get("ingress")), fmt(k.get("relay")),
                         fmt(k["total"])])
        what = f"one {args.idle_size}-byte echo each" if args.idle_size else "no data"
        table(f"{args.idle_tunnels} idle tunnels ({what}; squid, haproxy: as many as 2 "
              "descriptors each allow), RSS KiB per tunnel", ["arm", "open", "failed", "ingress", "relay", "total"], rows)
    if "wan" in R:
        w = R["wan"]
        rows = []
        for res, tag in ((w, ""), (w.get("light", {}), f" ({args.wan_light} at once)")):
            for a, base in WAN_ARMS:
                if a not in res:
                    continue
                r, d = res[a], res.get(base or a)
                rows.append([a + tag, fmt(r["p50_us"] / 1000, 1), fmt(r["p99_us"] / 1000, 1),
                             fmt(r["wave_s_mean"], 2), r["failed"],
                             fmt(r["p50_us"] / d["p50_us"], 2) if d else "-",
                             fmt(r["p99_us"] / d["p99_us"], 2) if d else "-", base or a])
        table(f"WAN: {args.concurrency} exchanges started at once, {args.wan_waves} waves, RTT "
              f"{w.get('measured_rtt_ms')} ms measured ({args.wan_rtt_ms} ms set); HTTPS-like "
              "through CONNECT (end-to-end TLS), and real HTTPS GETs (https-*: the relay near "
              "the origin does the TLS)",
              ["arm", "p50 ms", "p99 ms", "wave s", "failed", "p50 ratio", "p99 ratio", "vs"],
              rows)
    R["targets"] = verdicts(R, args)
    print("\nTargets")
    for t in R["targets"]:
        print(f"  {'met   ' if t['met'] else 'MISSED'}  {t['target']}: {t['figure']}")
    for p in R.get("failed_parts", []):
        print(f"  NOT RUN {p['part']}: {p['error'].splitlines()[0]}")
    for p in EXIT_PROBLEMS:
        print(f"  NOTE    {p}")


# ---- main -----------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/hermes bench datapath",
                                 description="Hermes data-path benchmark against squid, "
                                             "haproxy and nghttpx")
    ap.add_argument("--only", default=",".join(PARTS),
                    help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    ap.add_argument("--arms", default="",
                    help="comma-separated arms the latency, setup, concurrent and throughput "
                         "parts run (default all; the targets need haproxy and the Hermes arm)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="latency and setup: rounds over all arms, interleaved")
    ap.add_argument("--lat-count", type=int, default=30000, help="round trips per arm")
    ap.add_argument("--lat-warmup", type=int, default=1000, help="per arm and round")
    ap.add_argument("--setup-count", type=int, default=3000, help="connections per arm")
    ap.add_argument("--setup-rounds", type=int, default=10,
                    help="setup: rounds over all arms, interleaved (fewer: the p50 of an arm "
                         "swings by 20%% with the VM's drift between arms)")
    ap.add_argument("--concurrency", type=int, default=1000,
                    help="exchanges started at once in one wave (concurrent, wan)")
    ap.add_argument("--conc-waves", type=int, default=8,
                    help="waves per arm on loopback (fewer: the verdicts swing with the VM's noise)")
    ap.add_argument("--rpc", default="517,4096,600,16384",
                    help="HTTPS-like exchange: client A bytes, server B, client C, server D")
    ap.add_argument("--bulk-mib", type=int, default=1024, help="MiB each way per arm")
    ap.add_argument("--idle-tunnels", type=int, default=10000)
    ap.add_argument("--idle-size", type=int, default=1024,
                    help="bytes echoed once on each idle tunnel before it idles (0: none)")
    ap.add_argument("--wan-rtt-ms", type=float, default=20.0)
    ap.add_argument("--wan-waves", type=int, default=3, help="waves per arm across the WAN")
    ap.add_argument("--wan-light", type=int, default=100,
                    help="also waves of this many at once across the WAN (0: none)")
    ap.add_argument("--out", default=os.path.join(BUILD_DIR, "bench", "datapath.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}: choose from {PARTS}")
    for name in ("rounds", "lat_count", "setup_count", "setup_rounds", "concurrency", "conc_waves", "bulk_mib",
                 "idle_tunnels", "wan_waves"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.concurrency > 10000 or args.idle_size > 65536 or args.wan_rtt_ms < 0:
        ap.error("--concurrency at most 10000, --idle-size at most 65536, --wan-rtt-ms >= 0")
    if not re.fullmatch(r"\d+,\d+,\d+,\d+", args.rpc):
        ap.error("--rpc takes A,B,C,D (bytes)")
    known = sorted(set(LAT_ARMS + SETUP_ARMS + CONC_ARMS + TPUT_ARMS))
    args.arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in args.arms if a not in known]
    if bad:
        ap.error(f"unknown arm(s) {bad}: choose from {known}")
    return args


def check_tools(args):
    need = [os.path.join(BIN, b) for b in ("hermes-pingpong", "hermes-bench-target",
                                           "hermes-controller", "hermes-ingress",
                                           "hermes-relay", "hermes-policy", "hermesctl")]
    missing = [p for p in need if not os.access(p, os.X_OK)]
    for tool in ("haproxy", "squid", "nghttpx", "openssl", "taskset"):
        if not shutil.which(tool):
            missing.append(tool)
    if "wan" in args.parts:
        for tool in ("ip", "iptables"):
            if not shutil.which(tool):
                missing.append(tool)
        if os.geteuid() != 0:
            missing.append("root (network namespaces)")
    if missing:
        raise BenchError("missing: " + ", ".join(missing) +
                         " (scripts/hermes bench datapath installs and builds them)")


def main(argv):
    global KEEP, SELECTED_ARMS
    args = parse_args(argv)
    KEEP = args.keep
    SELECTED_ARMS = set(args.arms) or None
    check_tools(args)
    # the daemons and the client take every descriptor they may: 10k tunnels need 2 each
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536
        if hard < want and os.geteuid() == 0:
            hard = want
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    except (ValueError, OSError):
        pass
    # SIGTERM / SIGHUP end the run through the same cleanup as an error
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_stop_signal)

    tmp = tempfile.mkdtemp(prefix="hermes-bench-datapath-")
    os.chmod(tmp, 0o755)
    procs = Procs()
    env = {"procs": procs, "tmp": tmp}
    R = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                  "machine": platform.machine()},
         "params": {k: v for k, v in vars(args).items() if k not in ("out",)},
         "failed_parts": []}
    t_start = time.monotonic()
    rc = 0
    try:
        loop_parts = [p for p in args.parts if p in ("latency", "setup", "concurrent",
                                                     "throughput")]
        if loop_parts:
            log("starting the target, haproxy, squid, nghttpx and Hermes on loopback")
            env["target"] = start_target(procs, tmp, "target")
            env["haproxy"] = start_haproxy(procs, tmp, env["target"].port)
            env["squid"] = start_squid(procs, tmp)
            env["nghttpx"] = start_nghttpx(procs, tmp, env["squid"].port)
            env["hermes"] = Hermes()
            env["redirect"] = Redirect(env["target"].port,
                                       env["hermes"].s.port("ingress-1", "transparent"))
            env["arms"] = build_arms(env)
            R["arms"] = {a.name: a.label for a in env["arms"].values()}
            R["versions"] = versions()
        fns = {"latency": part_latency, "setup": part_setup, "concurrent": part_concurrent,
               "throughput": part_throughput, "idle": part_idle, "wan": part_wan}
        for part in args.parts:
            t0 = time.monotonic()
            try:
                R[part] = fns[part](env, args)
            except BenchError as e:
                log(f"{part}: could not run: {e}")
                R["failed_parts"].append({"part": part, "error": str(e)})
            R.setdefault("seconds", {})[part] = round(time.monotonic() - t0, 1)
        if "hermes" in env:
            R["hermes_log_problems"] = env["hermes"].log_problems()[:40]
    except BenchError as e:
        log(f"the benchmark could not run: {e}")
        rc = 1
    except KeyboardInterrupt:
        log("interrupted")
        rc = 1
    finally:
        pin([p.pid for p in procs.items], set(range(os.cpu_count() or 1)))
        if "redirect" in env:
            env["redirect"].remove()
        if "hermes" in env:
            env["hermes"].stop()
        procs.stop_all()
        if not KEEP:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"logs kept in {tmp}")
    R["daemon_exit_problems"] = EXIT_PROBLEMS
    R["total_s"] = round(time.monotonic() - t_start, 1)
    if rc == 0:
        report(R, args)
        if R["failed_parts"] and len(R["failed_parts"]) == len(args.parts):
            rc = 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(R, f, indent=1)
    print("\n" + json.dumps({k: R[k] for k in R if k not in ("params",)}, indent=None)[:200000])
    print(f"\n(written to {args.out}; {R['total_s']} s)")
    return rc


def on_stop_signal(signum, frame):
    raise KeyboardInterrupt()


def versions():
    out = {}
    for name, argv in (("squid", ["squid", "-v"]), ("haproxy", ["haproxy", "-v"]),
                       ("nghttpx", ["nghttpx", "--version"])):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            out[name] = (r.stdout or r.stderr).splitlines()[0].strip()
        except Exception:
            out[name] = "?"
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
