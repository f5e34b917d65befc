#!/usr/bin/env python3
"""Bypass benchmark (scripts/hermes bench bypass).

One TCP flow from a client to a server, in three network namespaces that the benchmark
creates and deletes (client C -- proxy P -- server S, veth pairs), side by side in one run:
  direct     no proxy process: P forwards IP (the limit)
  userspace  the Hermes ingress in P relays the flow in user space (--splice false)
  splice     the ingress relays it with splice(2) (--splice true)
  offload    policy bypass: the ingress offers the quiet flow to the bypass agent, which
             splices it in eBPF (tc on P's interfaces); then the bulk transfer
  offload-stream  the same with the bulk from the first byte: offered mid-stream
  direct+tc  direct routing again, now with the agent's tc programs on P's interfaces
in --rounds rounds, the arms interleaved. For each: Gbit/s, the proxy's CPU seconds per GiB
(ingress, plus the agent for offload) and the kernel's CPU (sys + softirq, all CPUs, from
/proc/stat) per GiB. Then the time from offer to splice over a number of flows, and the
client's RTT (TCP_INFO) every 100 ms, and each write's time to its ACK, through the delay
ramp and the offload with a 60 ms server leg (an NFQUEUE delay line in S), with the agent's
ramp and, for comparison, without it. Prints tables, the targets (met / MISSED) and a
JSON document (also written to $BUILD_DIR/bench/bypass.json, or --out). Exit 0 when the
benchmark ran, even with missed targets; 1 when it could not run (or, with --smoke, when an
arm failed or its bytes were not exact); 2 on a usage error; 77 when it cannot run here (not
root). Every process it starts is stopped by PID, every namespace and iptables rule it made is
removed, also on failure or Ctrl-C.
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
sys.path.insert(0, HERE)
import datapath as dp  # noqa: E402  (its process, CPU and table helpers; sets up the harness)
from datapath import BIN, BUILD_DIR, BenchError, log, tail  # noqa: E402

hh = dp.hh
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
SKIP = 77  # ctest SKIP_RETURN_CODE: cannot run on this machine (not root)

# addresses from 198.18.0.0/15 (the benchmarking range), only inside the namespaces
C_ADDR, P1_ADDR, P2_ADDR, S_ADDR = "198.18.21.2", "198.18.21.1", "198.18.22.1", "198.18.22.2"
RELAY_PORT, BYPASS_PORT = 9000, 9001  # server ports: the policy rule without / with bypass
INGRESS_PORT = {"userspace": 3128, "splice": 3129, "offload": 3130, "offload-stream": 3130}
DELAY_QUEUE = 3  # NFQUEUE of the 60 ms delay line in S (the agent's ramp uses its own, in P)
CPU_LOAD, CPU_PROXY = 0, 1

LABEL = {
    "direct": "no proxy: P forwards IP",
    "userspace": "ingress relays in user space (--splice false)",
    "splice": "ingress relays with splice(2) (--splice true)",
    "offload": "ingress offers the quiet flow, the agent splices it in eBPF, then the bulk",
    "offload-stream": "the same, bulk from the first byte: offered mid-stream",
    "direct+tc": "direct again, the agent's tc programs on P's interfaces",
}
ARMS = ["direct", "userspace", "splice", "offload", "offload-stream", "direct+tc"]


# ---- small tools ---------------------------------------------------------------------------

def sh(*argv, ns=None, check=True, timeout=30):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


def proc_stat():
    """System-wide CPU seconds by kind (all CPUs), from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return {n: v[i] / CLK_TCK for i, n in enumerate(names)}


def stat_delta(a, b):
    d = {k: b[k] - a[k] for k in a}
    d["kernel"] = d["system"] + d["irq"] + d["softirq"]
    d["busy"] = d["user"] + d["nice"] + d["kernel"]
    return {k: round(v, 3) for k, v in d.items()}


def self_cpu():
    """CPU seconds of this driver and the short commands it ran (ip, ss, iptables)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def pct(vals, p):
    return dp.pct(sorted(vals), p) if vals else None


def summary_ms(vals):
    if not vals:
        return {"n": 0}
    return {"n": len(vals), "p50": round(pct(vals, 50), 1), "max": round(max(vals), 1),
            "min": round(min(vals), 1)}


def agent_query(path, op, timeout=5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.send(json.dumps({"v": 1, "op": op, "id": f"bench-{op}"}).encode())
        data = s.recv(16 << 20)
    finally:
        s.close()
    return json.loads(data.split(b"\0")[0])


# ---- the namespaces ----------------------------------------------------------------------

class World:
    """client C -- proxy P -- server S; C and S route through P (used by the direct arms,
    when P forwards). Tracks the iptables rules it adds, to remove them."""

    def __init__(self):
        pid = os.getpid()
        self.ns = {k: f"hermes-bypass-{pid}-{k}" for k in ("c", "p", "s")}
        self.dev = {"c": f"hbb{pid}c", "p1": f"hbb{pid}p1", "p2": f"hbb{pid}p2", "s": f"hbb{pid}s"}
        self.created = []
        self.rules = []  # (ns, table, chain, spec)

    @property
    def C(self):
        return self.ns["c"]

    @property
    def P(self):
        return self.ns["p"]

    @property
    def S(self):
        return self.ns["s"]

    def up(self):
        for name in self.ns.values():
            sh("ip", "netns", "add", name)
            self.created.append(name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        d = self.dev
        sh("ip", "link", "add", d["c"], "netns", self.C, "type", "veth", "peer", "name", d["p1"],
           "netns", self.P)
        sh("ip", "link", "add", d["s"], "netns", self.S, "type", "veth", "peer", "name", d["p2"],
           "netns", self.P)
        for ns, dev, addr in ((self.C, d["c"], C_ADDR), (self.P, d["p1"], P1_ADDR),
                              (self.P, d["p2"], P2_ADDR), (self.S, d["s"], S_ADDR)):
            sh("ip", "addr", "add", addr + "/24", "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        sh("ip", "route", "add", "default", "via", P1_ADDR, ns=self.C)
        sh("ip", "route", "add", "default", "via", P2_ADDR, ns=self.S)
        for ns in self.ns.values():
            for k in ("tcp_timestamps", "tcp_sack", "tcp_window_scaling"):
                sh("sysctl", "-qw", f"net.ipv4.{k}=1", ns=ns)
        self.forward(False)

    def forward(self, on):
        sh("sysctl", "-qw", f"net.ipv4.ip_forward={1 if on else 0}", ns=self.P)

    def add_rule(self, ns, table, chain, spec):
        sh("iptables", "-w", "-t", table, "-A", chain, *spec, ns=ns)
        self.rules.append((ns, table, chain, spec))

    def del_rule(self, ns, table, chain, spec):
        if (ns, table, chain, spec) in self.rules:
            self.rules.remove((ns, table, chain, spec))
            sh("iptables", "-w", "-t", table, "-D", chain, *spec, ns=ns, check=False)

    def tc_programs(self):
        """Names of the tc ingress BPF programs on P's two interfaces."""
        out = []
        for dev in (self.dev["p1"], self.dev["p2"]):
            r = sh("tc", "filter", "show", "dev", dev, "ingress", ns=self.P, check=False)
            out += [f"{dev}:{m}" for m in re.findall(r" name (\S+)", r.stdout)]
        return out

    def down(self):
        for rule in list(self.rules):
            self.del_rule(*rule)
        for name in reversed(self.created):
            r = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0:
                log(f"could not delete namespace {name}: {r.stderr.strip()}")
        self.created = []


# ---- processes ---------------------------------------------------------------------------

def read_line(p, timeout, what):
    """The next line p prints on stdout (bytes buffered on p.bench_buf)."""
    deadline = time.monotonic() + timeout
    buf = getattr(p, "bench_buf", b"")
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{what}: nothing within {timeout:.0f} s")
        r, _, _ = select.select([p.stdout], [], [], min(left, 0.2))
        if r:
            chunk = os.read(p.stdout.fileno(), 1 << 20)
            if not chunk:
                p.bench_buf = buf
                raise BenchError(f"{what}: exited ({p.poll()}) without a line: "
                                 f"{tail(p.bench_log, 5).strip()}")
            buf += chunk
    line, p.bench_buf = buf.split(b"\n", 1)
    return line.decode(errors="replace")


class Client:
    """One hermes-bypass-stream sender in C, on CPU_LOAD; its CPU comes from wait4."""

    def __init__(self, env, name, connect, target=None, timeout_s=60, **opts):
        argv = [os.path.join(BIN, "hermes-bypass-stream"), "send", "--connect", connect,
                "--timeout-s", str(timeout_s)]
        if target:
            argv += ["--target", target]
        for k, v in opts.items():
            if v is True:
                argv.append("--" + k.replace("_", "-"))
            elif v not in (None, False):
                argv += ["--" + k.replace("_", "-"), str(v)]
        argv = ["ip", "netns", "exec", env["world"].C, "taskset", "-c", str(CPU_LOAD)] + argv
        self.procs = env["procs"]
        self.p = self.procs.start(name, argv, os.path.join(env["tmp"], f"{name}.log"),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.name, self.timeout_s = name, timeout_s
        self.cpu_s = None

    def event(self, timeout):
        while True:
            line = read_line(self.p, timeout, f"client {self.name}")
            if not line.startswith("{"):
                continue
            ev = json.loads(line)
            if ev.get("event") == "error":
                raise BenchError(f"client {self.name}: {ev['error']}")
            return ev

    def ready(self):
        self.r = self.event(30)
        return self.r

    def go(self):
        self.p.stdin.write(b"go\n")
        self.p.stdin.flush()

    def close_stdin(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass

    def exited(self):
        """Whether the client has exited, without reaping it (done() wants its rusage)."""
        try:
            return os.waitid(os.P_PID, self.p.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def done(self, timeout):
        ev = self.event(timeout)
        # reaped here for its rusage: the client's own CPU (it is gone from /proc after)
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = ru.ru_utime + ru.ru_stime
        self.procs.stop(self.p)
        return ev

    def abort(self):
        self.close_stdin()
        self.procs.stop(self.p)


# ---- Hermes in P -----------------------------------------------------------------------------

class Hermes:
    """controller, policy engine, bypass agent and one ingress per relaying arm, all in P
    (integration-tests/harness Suite(netns=P)), pinned to CPU_PROXY."""

    def __init__(self, world, args, splice_option):
        self.world, self.args = world, args
        self.s = hh.Suite(netns=world.P)
        self.sock = os.path.join(self.s.dir, "bypass.sock")
        self.ingress = {}  # arm -> instance
        self.expect = 0
        s = self.s
        try:
            s.start_controller()
            s.start_service("policy")
            self.start_agent(ramp=True)
            fronts = ("--h2-listen", "", "--transparent-listen", "")
            if splice_option:
                for arm, flag in (("userspace", "false"), ("splice", "true")):
                    self.ingress[arm] = f"ingress-{arm}"
                    s.start_service("ingress", self.ingress[arm], extra=(
                        "--http-listen", f"{P1_ADDR}:{INGRESS_PORT[arm]}", *fronts,
                        "--splice", flag))
            self.ingress["offload"] = "ingress-offload"
            s.start_service("ingress", "ingress-offload", extra=(
                "--http-listen", f"{P1_ADDR}:{INGRESS_PORT['offload']}", *fronts,
                "--bypass-socket", self.sock, "--bypass-after-ms", str(args.bypass_after_ms)))
            self.expect = 2 + len(self.ingress)
            s.wait_converged(expect=self.expect, timeout=20)
            # no bypass for the relaying arms' server port, bypass for the offload's
            s.ctl("policy", "add", "-", input=json.dumps({
                "id": "bench-relay", "priority": 10, "action": "allow",
                "match": {"dst": [f"{S_ADDR}/32"], "ports": [str(RELAY_PORT)]}}))
            s.ctl("policy", "add", "-", input=json.dumps({
                "id": "bench-bypass", "priority": 11, "action": "allow", "bypass": True,
                "match": {"dst": [f"{S_ADDR}/32"], "ports": [str(BYPASS_PORT)]}}))
            s.wait_converged(expect=self.expect, timeout=20)
            for arm, inst in self.ingress.items():
                port = INGRESS_PORT[arm]
                hh.wait_for(lambda port=port: f"{P1_ADDR}:{port}" in sh(
                    "ss", "-Hltn", ns=world.P).stdout, 10, what=f"{inst} listening")
            self.pin()
        except BaseException:
            self.stop()
            raise

    def start_agent(self, ramp):
        extra = ["--socket", self.sock, "--delay-step-ms",
                 str(self.args.ramp_step_ms if ramp else 0),
                 "--delay-step-hold-ms", str(self.args.ramp_hold_ms)]
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.s.start_service("bypass", "bypass-1", extra=tuple(extra))
        hh.wait_for(lambda: os.path.exists(self.sock), 10, what="the agent's socket")
        self.ramp = ramp

    def stop_agent(self):
        """Stops the agent: it takes its tc programs off P's interfaces."""
        self.s.daemons["bypass-1"].stop()

    def restart_agent(self, ramp):
        """A new agent with or without the delay ramp; the offload ingress reconnects to it
        at its next offer (it logs that it lost the old one)."""
        if self.s.daemons["bypass-1"].alive():
            self.stop_agent()
        self.start_agent(ramp)
        self.s.wait_converged(expect=self.expect, timeout=20)
        self.pin()

    def pin(self):
        dp.pin(self.pids(), {CPU_PROXY})

    def pid(self, name):
        return self.s.daemons[name].proc.pid

    def pids(self):
        return [d.proc.pid for d in self.s.daemons.values() if d.alive()]

    def log(self, name):
        return self.s.daemons[name].log_text()

    def flows(self):
        return agent_query(self.sock, "flows")

    def check_alive(self):
        dead = [f"{n} (exit {d.proc.returncode})" for n, d in self.s.daemons.items()
                if not d.alive() and not d.expected_exit]
        if dead:
            raise BenchError("Hermes daemon(s) died: " + ", ".join(dead) + "\n" + "".join(
                f"--- {n} ---\n{tail(d.log_path)}" for n, d in self.s.daemons.items()
                if not d.alive() and not d.expected_exit))

    def log_problems(self):
        """Warnings, errors and sanitizer lines, but the ones the benchmark causes itself (it
        restarts the agent: the offload ingress loses its connection to it, the controller
        misses its heartbeats)."""
        out = []
        for n, d in self.s.daemons.items():
            try:
                for line in d.log_text().splitlines():
                    if "bypass agent connection lost" in line or \
                            "instance down kind=bypass" in line:
                        continue
                    if " error " in line or " warning " in line or "Sanitizer" in line:
                        out.append(f"{n}: {line.strip()}")
            except OSError:
                pass
        return out

    def stop(self):
        try:
            for n, d in reversed(list(self.s.daemons.items())):
                if d.alive():
                    rc = d.stop()
                    if rc != 0:
                        EXIT_PROBLEMS.append(f"{n} exited with {rc} on SIGTERM")
            self.s.stop_all()
        finally:
            if KEEP:
                log(f"Hermes logs kept in {self.s.dir}")
            else:
                shutil.rmtree(self.s.dir, ignore_errors=True)


KEEP = False
EXIT_PROBLEMS = []


# ---- one offloaded flow: connect, wait for the splice, then stream ------------------------

def find_flow(hermes, client, closed_since_ms=None):
    """The agent's entry for the client's flow ("ip:port"): live, or (closed_since_ms: wall
    ms) among the closed ones spliced since then (an older flow may have had the port)."""
    st = hermes.flows()
    for f in st["flows"]:
        if f["client"] == client:
            return f
    if closed_since_ms is not None:
        for f in st["closed"]:
            if f["client"] == client and f["spliced_at_ms"] >= closed_since_ms:
                return dict(f, state="closed")
    return None


def log_since(hermes, name, offset):
    return hermes.log(name)[offset:]


def wait_spliced(env, client, local, timeout, on_poll=None):
    """Polls the agent until the client's flow is spliced. Returns the time it was seen
    spliced (monotonic) or raises with the ingress's reason."""
    hermes = env["hermes"]
    deadline = time.monotonic() + timeout
    seen_state = None  # the agent's last state of the flow, once offered
    while True:
        f = find_flow(hermes, local)
        seen_state = f["state"] if f else seen_state
        now = time.monotonic()
        if on_poll:
            on_poll(now, f)
        if f and f["state"] in ("spliced", "closing"):
            return now, f
        text = log_since(hermes, "ingress-offload", env["ing_log_off"])
        m = re.search(r"offload refused client=\S+ target=\S+ reason=(\S+)(.*)", text)
        if m:
            raise BenchError(f"the offer was refused: {m.group(1)}{m.group(2)}")
        where = (f"the agent's flow was {seen_state}" if seen_state else
                 "never offered: the ingress found no quiet moment to pause the flow")
        if now > deadline:
            raise BenchError(f"not spliced within {timeout} s ({where})")
        if client.exited():
            raise BenchError(f"the client finished before the splice ({where})")
        time.sleep(0.005)


def spliced_line(hermes, local):
    """drain_ms (offer to splice, the agent's clock) and the rest of the agent's log line."""
    port = local.rsplit(":", 1)[1]
    m = None
    for m in re.finditer(rf"(\S+Z) \S+ .*flow spliced flow=(\d+) client={re.escape(C_ADDR)}:{port} "
                         rf".*retries=(\d+) drain_ms=(\d+)", hermes.log("bypass-1")):
        pass
    if not m:
        return None
    return {"flow": int(m.group(2)), "retries": int(m.group(3)), "drain_ms": int(m.group(4)),
            "logged_at": m.group(1)}


def wall_ms(stamp):
    """A log line's time stamp (2026-01-01T00:00:00.000Z) in ms since the epoch."""
    dt = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000


# ---- the throughput arms ---------------------------------------------------------------------

def run_bulk(env, args, arm, seconds):
    world, hermes = env["world"], env.get("hermes")
    offload = arm.startswith("offload")
    if arm in ("direct", "direct+tc"):
        connect, target, port = f"{S_ADDR}:{RELAY_PORT}", None, RELAY_PORT
        proxy = {}
    else:
        port = BYPASS_PORT if offload else RELAY_PORT
        connect, target = f"{P1_ADDR}:{INGRESS_PORT[arm]}", f"{S_ADDR}:{port}"
        inst = hermes.ingress["offload" if offload else arm]
        proxy = {inst: hermes.pid(inst)}
        if offload:
            proxy["bypass-1"] = hermes.pid("bypass-1")
            stats0 = hermes.flows()["stats"]
    out = {"label": LABEL[arm], "path": f"C -> {connect}" + (f" -> {target}" if target else "")}
    if arm.startswith("direct"):
        out["tc_programs"] = world.tc_programs()
    if arm.startswith("direct"):
        world.forward(True)
    logs = {n: len(hermes.log(n)) for n in proxy} if hermes else {}
    if offload:
        env["ing_log_off"] = logs["ingress-offload"]
    srv = env["server"].pid
    cpu0 = {n: dp.cpu_seconds([p]) for n, p in proxy.items()}
    srv0, me0, st0 = dp.cpu_seconds([srv]), self_cpu(), proc_stat()
    t0, t0_wall = time.monotonic(), time.time() * 1000
    c = Client(env, f"bulk-{arm}", connect, target, timeout_s=seconds + 90,
               seconds=seconds, bytes=int(args.max_gib * GIB) or None, go_on_stdin=True)
    try:
        ready = c.ready()
        if arm == "offload":
            # the flow is quiet after the server's OK: offered after --bypass-after-ms
            seen, _ = wait_spliced(env, c, ready["local"], 15)
            out["quiet_to_spliced_ms"] = round((seen - ready["t_ready"]) * 1000, 1)
            out["offloaded"] = True
        c.go()
        if arm == "offload-stream":
            # the ingress relays from the first byte and offers the flow once both directions
            # are quiet for a moment; the agent drains (relays) until the legs are quiet, or
            # gives the flow back (busy); the driver watches meanwhile
            t_go = time.monotonic()
            try:
                seen, _ = wait_spliced(env, c, ready["local"], seconds + 30)
                out["offloaded"] = True
                out["spliced_after_s"] = round(seen - t_go, 3)
            except BenchError as e:
                out["offloaded"] = False
                out["offload_outcome"] = str(e)
        done = c.done(seconds + 60)
    except BaseException:
        c.abort()
        raise
    finally:
        if arm.startswith("direct"):
            world.forward(False)
    t1 = time.monotonic()
    st, srv_cpu, me = stat_delta(st0, proc_stat()), dp.cpu_seconds([srv]) - srv0, self_cpu() - me0
    cpu = {n: round(dp.cpu_seconds([p]) - cpu0[n], 3) for n, p in proxy.items()}
    gib = done["sent"] / GIB
    proxy_cpu = sum(cpu.values())
    ours = proxy_cpu + srv_cpu + c.cpu_s + me
    out.update({
        "bytes": done["sent"], "received": done["received"], "exact": done["exact"],
        "first_bad_offset": done["first_bad_offset"], "seconds": round(done["seconds"], 3),
        "gbit_s": round(done["gbit_s"], 3), "gib": round(gib, 3),
        "retransmits": done["total_retrans"],
        "proxy_cpu_s": round(proxy_cpu, 3), "proxy_cpu_by_process": cpu,
        "proxy_cpu_s_per_gib": round(proxy_cpu / gib, 4) if gib else None,
        "kernel_cpu_s": st["kernel"], "system_cpu": st,
        "kernel_cpu_s_per_gib": round(st["kernel"] / gib, 4) if gib else None,
        "client_cpu_s": round(c.cpu_s, 3), "server_cpu_s": round(srv_cpu, 3),
        "endpoints_cpu_s_per_gib": round((c.cpu_s + srv_cpu) / gib, 4) if gib else None,
        # busy CPU on the machine that none of our processes (nor the kernel's softirq and
        # irq work) accounts for: other work that disturbed this arm
        "other_cpu_s": round(max(0.0, st["busy"] - st["softirq"] - st["irq"] - ours), 2),
        "window_s": round(t1 - t0, 3),
    })
    if offload:
        sp = spliced_line(hermes, ready["local"]) if out["offloaded"] else None
        if sp:
            out["offer_to_splice_ms"] = sp["drain_ms"]
        f = find_flow(hermes, ready["local"], t0_wall) if out["offloaded"] else None
        if f and "spliced" in f:
            out["spliced_bytes"] = {"up": f["spliced"]["up"]["bytes"],
                                    "down": f["spliced"]["down"]["bytes"]}
        stats1 = hermes.flows()["stats"]
        out["agent_relayed_bytes"] = (stats1.get("bypass_agent_relayed_bytes", 0)
                                      - stats0.get("bypass_agent_relayed_bytes", 0))
    for n in proxy:
        if n.startswith("ingress"):
            m = None
            for m in re.finditer(r"flow done client=\S+ target=\S+ via=\S+ up=(\d+) down=(\d+)"
                                 r" (\S+)", log_since(hermes, n, logs[n])):
                pass
            if m:
                out["ingress_relayed"] = {"up": int(m.group(1)), "down": int(m.group(2)),
                                          "end": m.group(3)}
    if hermes:
        hermes.check_alive()
    return out


def merge_runs(runs):
    """One arm's rounds as one result: bytes, seconds and CPU added up; each round kept."""
    out = {k: v for k, v in runs[-1].items()}
    add = lambda k: sum(r[k] for r in runs)  # noqa: E731
    nbytes, secs = add("bytes"), add("seconds")
    gib = nbytes / GIB
    cpu = {}
    for r in runs:
        for k, v in r["proxy_cpu_by_process"].items():
            cpu[k] = round(cpu.get(k, 0) + v, 3)
    out.update({
        "bytes": nbytes, "received": add("received"), "exact": all(r["exact"] for r in runs),
        "first_bad_offset": next((r["first_bad_offset"] for r in runs
                                  if r["first_bad_offset"] != -1), -1),
        "seconds": round(secs, 3), "gbit_s": round(nbytes * 8 / secs / 1e9, 3) if secs else 0,
        "gib": round(gib, 3), "retransmits": add("retransmits"),
        "proxy_cpu_s": round(add("proxy_cpu_s"), 3), "proxy_cpu_by_process": cpu,
        "proxy_cpu_s_per_gib": round(add("proxy_cpu_s") / gib, 4) if gib else None,
        "kernel_cpu_s": round(add("kernel_cpu_s"), 3),
        "kernel_cpu_s_per_gib": round(add("kernel_cpu_s") / gib, 4) if gib else None,
        "system_cpu": {k: round(sum(r["system_cpu"][k] for r in runs), 3)
                       for k in runs[0]["system_cpu"]},
        "client_cpu_s": round(add("client_cpu_s"), 3),
        "server_cpu_s": round(add("server_cpu_s"), 3),
        "endpoints_cpu_s_per_gib": round((add("client_cpu_s") + add("server_cpu_s")) / gib, 4)
        if gib else None,
        "other_cpu_s": round(add("other_cpu_s"), 2), "window_s": round(add("window_s"), 3),
        "gbit_s_rounds": [r["gbit_s"] for r in runs],
        "gbit_s_median": round(pct([r["gbit_s"] for r in runs], 50), 3),
        "rounds": runs,
    })
    if "offloaded" in out:
        done = [r for r in runs if r["offloaded"]]
        out["offloaded"] = len(done) == len(runs)
        out["rounds_offloaded"] = len(done)
        failed = [r["offload_outcome"] for r in runs if not r["offloaded"]]
        if failed:
            out["offload_outcome"] = f"{len(failed)} of {len(runs)} rounds: {failed[0]}"
        out["agent_relayed_bytes"] = add("agent_relayed_bytes")
        for k in ("offer_to_splice_ms", "spliced_after_s", "quiet_to_spliced_ms"):
            vals = [r[k] for r in runs if k in r]
            out.pop(k, None)
            if vals:
                out[k + "_rounds"] = vals
        sp = [r["spliced_bytes"] for r in runs if "spliced_bytes" in r]
        out["spliced_bytes"] = {d: sum(x[d] for x in sp) for d in ("up", "down")} if sp else {}
    rel = [r["ingress_relayed"] for r in runs if "ingress_relayed" in r]
    if rel:
        out["ingress_relayed"] = {d: sum(x[d] for x in rel) for d in ("up", "down")}
    return out


def part_throughput(env, args, splice_option):
    """Every arm args.rounds times, arms interleaved round by round (a burst of other load
    then touches every arm). The direct arm runs while the agent is stopped: no tc program
    on P's interfaces then."""
    hermes = env["hermes"]
    per = args.seconds / args.rounds
    tp, runs = {}, {a: [] for a in ARMS}
    if not splice_option:
        for arm in ("userspace", "splice"):
            tp[arm] = {"label": LABEL[arm], "unavailable": "this hermes-ingress has no --splice "
                       "option (build it from a tree that has it)"}
            log(f"throughput: {arm}: unavailable (no --splice in hermes-ingress --help)")
    for rd in range(args.rounds):
        for arm in ARMS:
            if arm not in args.arm_list or arm in tp:
                continue
            log(f"throughput: {arm} ({per:g} s, round {rd + 1}/{args.rounds})")
            if arm == "direct":
                hermes.stop_agent()
            try:
                runs[arm].append(run_bulk(env, args, arm, per))
            except BenchError as e:
                log(f"throughput {arm}: {e}")
                tp[arm] = {"label": LABEL[arm], "error": str(e)}
            finally:
                if arm == "direct":
                    hermes.restart_agent(ramp=True)
    for arm in ARMS:
        if runs[arm] and arm not in tp:
            tp[arm] = merge_runs(runs[arm])
    return tp


# ---- offer to splice over many flows -----------------------------------------------------------

def part_offers(env, args):
    hermes = env["hermes"]
    rows = []
    for i in range(args.flows):
        env["ing_log_off"] = len(hermes.log("ingress-offload"))
        c = Client(env, f"offer-{i}", f"{P1_ADDR}:{INGRESS_PORT['offload']}",
                   f"{S_ADDR}:{BYPASS_PORT}", timeout_s=40, bytes=args.flow_bytes,
                   go_on_stdin=True)
        row = {}
        try:
            ready = c.ready()
            row["client"] = ready["local"]
            try:
                seen, f = wait_spliced(env, c, ready["local"], 10)
            except BenchError as e:
                row["error"] = str(e)
                c.abort()
                rows.append(row)
                continue
            c.go()
            done = c.done(30)
        except BaseException:
            c.abort()
            raise
        row.update({"exact": done["exact"], "bytes": done["sent"],
                    "quiet_to_spliced_ms": round((seen - ready["t_ready"]) * 1000, 1),
                    "connect_to_spliced_ms": round((seen - ready["t_connect"]) * 1000, 1)})
        sp = spliced_line(hermes, ready["local"])
        if sp:
            row["offer_to_splice_ms"] = sp["drain_ms"]
            row["freeze_retries"] = sp["retries"]
            m = re.search(r"(\S+Z) \S+ .*offloaded client=",
                          log_since(hermes, "ingress-offload", env["ing_log_off"]))
            if f and f.get("spliced_at_ms") and m:
                offer_wall = f["spliced_at_ms"] - sp["drain_ms"]
                row["offer_to_ingress_released_ms"] = round(wall_ms(m.group(1)) - offer_wall, 1)
        rows.append(row)
    hermes.check_alive()
    ok = [r for r in rows if "error" not in r]
    return {
        "flows": len(rows), "spliced": len(ok),
        "exact": sum(1 for r in ok if r["exact"]),
        "offer_to_splice_ms": summary_ms([r["offer_to_splice_ms"] for r in ok
                                          if "offer_to_splice_ms" in r]),
        "offer_to_ingress_released_ms": summary_ms([r["offer_to_ingress_released_ms"]
                                                    for r in ok
                                                    if "offer_to_ingress_released_ms" in r]),
        "quiet_to_spliced_ms": summary_ms([r["quiet_to_spliced_ms"] for r in ok]),
        "freeze_retries": sum(r.get("freeze_retries", 0) for r in ok),
        "per_flow": rows,
    }


# ---- the client's RTT through the ramp and the offload --------------------------------------

def rtt_run(env, args, tag):
    """One flow through the offload ingress while the server is 60 ms away; the client
    streams --rtt-chunk bytes every --rtt-period-ms and samples tcpi_rtt every 100 ms."""
    hermes = env["hermes"]
    before = hermes.flows()["stats"]
    env["ing_log_off"] = len(hermes.log("ingress-offload"))
    c = Client(env, f"rtt-{tag}", f"{P1_ADDR}:{INGRESS_PORT['offload']}",
               f"{S_ADDR}:{BYPASS_PORT}", timeout_s=args.rtt_after_s + 60,
               chunk=args.rtt_chunk, period_ms=args.rtt_period_ms, stop_on_stdin_eof=True,
               rtt_every_ms=args.rtt_every_ms, server_quickack=not args.rtt_delayed_acks)
    events = []  # (t, state, delay now)
    last = [None]

    def on_poll(now, f):
        if not f:
            return
        key = (f["state"], (f.get("delay_ms") or {}).get("now"))
        if key != last[0]:
            last[0] = key
            events.append({"t": now, "state": key[0], "delay_ms": key[1]})
    out = {}
    try:
        ready = c.ready()
        t_conn = ready["t_connect"]
        try:
            seen, _ = wait_spliced(env, c, ready["local"], 30, on_poll)
        except BenchError as e:
            out["error"] = str(e)
            seen = None
        time.sleep(args.rtt_after_s if seen else 0)
        c.close_stdin()
        done = c.done(30)
    except BaseException:
        c.abort()
        raise
    after = hermes.flows()["stats"]
    rel = lambda t: round((t - t_conn) * 1000, 1)  # noqa: E731
    samples = [[rel(s[0]), round(s[1] / 1000, 2), round(s[2] / 1000, 2)]
               for s in done["rtt_samples"]]
    acks = [[rel(a[0]), round(a[1] * 1000, 2) if a[1] >= 0 else None]
            for a in done.get("ack_samples", [])]
    out.update({
        "exact": done["exact"], "bytes": done["sent"], "retransmits": done["total_retrans"],
        "samples_ms": samples,  # [ms since connect, tcpi_rtt ms, tcpi_rttvar ms]
        # each write timed until all of it was acknowledged: [ms since connect, ms or None]
        "ack_samples_ms": acks,
        "events": [dict(e, t=rel(e["t"])) for e in events],
        "ramp_steps": after.get("bypass_delay_steps", 0) - before.get("bypass_delay_steps", 0),
        "delay_ramps": after.get("bypass_delay_ramps", 0) - before.get("bypass_delay_ramps", 0),
        "freeze_retries": after.get("bypass_freeze_retries", 0)
        - before.get("bypass_freeze_retries", 0),
    })
    sp = spliced_line(hermes, ready["local"])
    if sp and seen:
        out["offer_to_splice_ms"] = sp["drain_ms"]
    if seen:
        out["spliced_seen_ms"] = rel(seen)
        first = events[0]["t"] if events else seen
        out["offer_seen_ms"] = rel(first)
        lo, hi = rel(first) - 1000, rel(seen) + 2000
        steps = [(samples[i][0], round(samples[i][1] - samples[i - 1][1], 2))
                 for i in range(1, len(samples))
                 if lo <= samples[i - 1][0] and samples[i][0] <= hi]
        big = max(steps, key=lambda s: abs(s[1])) if steps else (None, 0.0)
        out["window_ms"] = [round(lo, 1), round(hi, 1)]
        out["max_step_ms"] = abs(big[1])
        out["max_step_at_ms"] = big[0]
        ack = [a for a in acks if a[1] is not None and lo <= a[0] <= hi]
        asteps = [(ack[i][0], round(ack[i][1] - ack[i - 1][1], 2)) for i in range(1, len(ack))]
        abig = max(asteps, key=lambda s: abs(s[1])) if asteps else (None, 0.0)
        out["ack_max_step_ms"], out["ack_max_step_at_ms"] = abs(abig[1]), abig[0]
        slow = max(ack, key=lambda a: a[1]) if ack else (None, None)
        out["ack_slowest_ms"], out["ack_slowest_at_ms"] = slow[1], slow[0]
        after = [a[1] for a in acks if a[1] is not None and a[0] > rel(seen) + 1000]
        out["ack_after_splice_ms"] = round(pct(after, 50), 1) if after else None
        before_offer = [s[1] for s in samples if s[0] < rel(first)]
        after_splice = [s[1] for s in samples if s[0] > rel(seen) + 1000]
        out["rtt_before_offer_ms"] = round(pct(before_offer, 50), 2) if before_offer else None
        out["rtt_after_splice_ms"] = round(pct(after_splice, 50), 2) if after_splice else None
    hermes.check_alive()
    return out


def part_rtt(env, args):
    world, procs, tmp = env["world"], env["procs"], env["tmp"]
    nfq = procs.start("nfq-delay", ["ip", "netns", "exec", world.S, *dp.Wan.realtime(),
                                    os.path.join(BIN, "hermes-nfq-delay"), "--queue",
                                    str(DELAY_QUEUE), "--delay-ms", str(args.server_rtt_ms)],
                      os.path.join(tmp, "nfq-delay.log"), stdout=subprocess.PIPE)
    rule = ["-p", "tcp", "-s", P2_ADDR, "-j", "NFQUEUE", "--queue-num", str(DELAY_QUEUE),
            "--queue-bypass"]
    out = {"server_rtt_ms": args.server_rtt_ms, "ramp_step_ms": args.ramp_step_ms,
           "ramp_hold_ms": args.ramp_hold_ms}
    try:
        if read_line(nfq, 10, "hermes-nfq-delay").strip() != "ready":
            raise BenchError("hermes-nfq-delay did not start: " + tail(nfq.bench_log))
        world.add_rule(world.S, "filter", "INPUT", rule)
        log("rtt: with the delay ramp")
        out["ramp"] = rtt_run(env, args, "ramp")
        if args.rtt_no_ramp:
            log("rtt: a new agent without the ramp, the same flow again (for comparison)")
            env["hermes"].restart_agent(ramp=False)
            try:
                out["no_ramp"] = rtt_run(env, args, "noramp")
            finally:
                env["hermes"].restart_agent(ramp=True)
    finally:
        world.del_rule(world.S, "filter", "INPUT", rule)
        procs.stop(nfq)
    return out


# ---- report ---------------------------------------------------------------------------------

def fmt(v, nd=2):
    return dp.fmt(v, nd)


def verdicts(R):
    out = []
    tp = R.get("throughput", {})
    d, o, u, s = (tp.get(a) for a in ("direct", "offload", "userspace", "splice"))

    def ok(x):
        return x and "error" not in x and x.get("offloaded", True) and x.get("exact")
    if ok(d) and ok(o):
        om, dm = o.get("gbit_s_median", o["gbit_s"]), d.get("gbit_s_median", d["gbit_s"])
        r = o["gbit_s"] / d["gbit_s"]
        out.append({"target": "offloaded throughput >= 0.9 x direct routing", "met": r >= 0.9,
                    "figure": f"{o['gbit_s']:.2f} / {d['gbit_s']:.2f} Gbit/s = {r:.2f} "
                              f"(medians of the rounds {om:.2f} / {dm:.2f} = {om / dm:.2f})"})
    if ok(o) and ok(u):
        r = o["proxy_cpu_s_per_gib"] / u["proxy_cpu_s_per_gib"] if u["proxy_cpu_s_per_gib"] \
            else None
        out.append({"target": "offloaded proxy CPU <= 5 % of user-space relaying",
                    "met": r is not None and r <= 0.05,
                    "figure": f"{o['proxy_cpu_s_per_gib']:.4f} / {u['proxy_cpu_s_per_gib']:.4f} "
                              f"s/GiB = {100 * r:.1f} %" if r is not None else "-"})
    elif ok(o):
        out.append({"target": "offloaded proxy CPU <= 5 % of user-space relaying", "met": None,
                    "figure": "not measured: the userspace arm did not run"})
    rt = R.get("rtt", {}).get("ramp")
    if rt and "max_step_ms" in rt:
        out.append({"target": f"no RTT step above 25 ms through the ramp and the offload "
                              f"({R['rtt']['ramp_step_ms']} ms steps)",
                    "met": rt["max_step_ms"] <= 25,
                    "figure": f"largest step {rt['max_step_ms']:.1f} ms at "
                              f"{rt['max_step_at_ms'] / 1000:.1f} s, "
                              f"{rt['ramp_steps']} ramp steps"})
    return out


def report(R, args):
    tp = R.get("throughput", {})
    rows = []
    for a in ARMS:
        r = tp.get(a)
        if r is None:
            continue
        if "error" in r or "unavailable" in r:
            rows.append([a, "-", "-", "-", "-", "-", "-", "-", "-", "-",
                         ("NOT RUN: " + r.get("unavailable", r.get("error", ""))).splitlines()[0]])
            continue
        spread = r.get("gbit_s_rounds") or [r["gbit_s"]]
        rows.append([a, fmt(r["gbit_s"]), fmt(r.get("gbit_s_median")),
                     f"{min(spread):.1f}-{max(spread):.1f}",
                     fmt(r["gib"], 1), "yes" if r["exact"] else "NO",
                     fmt(r["proxy_cpu_s_per_gib"], 3), fmt(r["kernel_cpu_s_per_gib"], 3),
                     fmt(r["endpoints_cpu_s_per_gib"], 3), fmt(r["other_cpu_s"], 1),
                     r["label"] + (" -- NOT OFFLOADED: " + r["offload_outcome"]
                                   if r.get("offloaded") is False else "")])
    dp.table(f"One TCP flow C -> S, {args.seconds:g} s per arm in {args.rounds} rounds"
             + (f" (at most {args.max_gib:g} GiB each)" if args.max_gib else "")
             + f"; client and server on CPU {CPU_LOAD}, Hermes daemons on CPU {CPU_PROXY}",
             ["arm", "Gbit/s", "median", "rounds", "GiB", "exact", "proxy cpu s/GiB",
              "kernel sys+softirq s/GiB",
              "client+server s/GiB", "other cpu s", "path"], rows)
    print("  Gbit/s: all rounds' bytes over their time; median: of the rounds' Gbit/s; rounds:"
          "\n  slowest-fastest round. proxy cpu: utime+stime of the ingress (offload: + agent)"
          "\n  from connect to the server's last byte; kernel: system+irq+softirq of all CPUs"
          "\n  (/proc/stat) in that window, which holds the endpoints' TCP work and the eBPF"
          "\n  splice; other: busy CPU that neither our processes nor softirq account for (other"
          "\n  load on the machine)")
    for a in ("offload", "offload-stream"):
        o = tp.get(a, {})
        if "offloaded" not in o:
            continue
        rel = o.get("ingress_relayed", {})
        n = len(o["rounds"])
        what = [f"offloaded in {o['rounds_offloaded']} of {n} rounds"]
        if o.get("spliced_after_s_rounds"):
            what.append("spliced " + ", ".join(f"{v:.2f}" for v in o["spliced_after_s_rounds"])
                        + " s into the stream")
        if o.get("offer_to_splice_ms_rounds"):
            what.append("offer -> splice " + ", ".join(str(v) for v in
                                                        o["offer_to_splice_ms_rounds"]) + " ms")
        print(f"  {a}: {'; '.join(what)}")
        print(f"    bytes up: the ingress relayed {rel.get('up', '?')}, the agent while draining "
              f"{o['agent_relayed_bytes']}, the splice {o.get('spliced_bytes', {}).get('up', '-')}"
              + (f"; not offloaded: {o['offload_outcome']}" if "offload_outcome" in o else ""))
    noisy = [f"{a} {r['other_cpu_s']:.1f} s" for a, r in tp.items()
             if r.get("other_cpu_s", 0) > 0.05 * r.get("window_s", 0) * (os.cpu_count() or 1)]
    if noisy:
        print(f"  NOTE: other load on the machine during {', '.join(noisy)} of other CPU: "
              "those figures are disturbed; run again on a quiet machine")
    rows = []
    for name, a, b, key in (("offloaded / direct throughput (medians)", "offload", "direct",
                             "gbit_s_median"),
                            ("offloaded / direct throughput (means)", "offload", "direct",
                             "gbit_s"),
                            ("offloaded / user-space relay proxy CPU", "offload", "userspace",
                             "proxy_cpu_s_per_gib"),
                            ("offloaded / splice(2) relay proxy CPU", "offload", "splice",
                             "proxy_cpu_s_per_gib"),
                            ("splice(2) / user-space relay proxy CPU", "splice", "userspace",
                             "proxy_cpu_s_per_gib"),
                            ("offloaded / direct kernel CPU per GiB", "offload", "direct",
                             "kernel_cpu_s_per_gib"),
                            ("offloaded / user-space relay kernel CPU per GiB", "offload",
                             "userspace", "kernel_cpu_s_per_gib"),
                            ("offloaded mid-stream / direct throughput (medians)",
                             "offload-stream", "direct", "gbit_s_median"),
                            ("offloaded mid-stream / user-space relay proxy CPU",
                             "offload-stream", "userspace", "proxy_cpu_s_per_gib"),
                            ("direct+tc / direct throughput (medians)", "direct+tc", "direct",
                             "gbit_s_median")):
        x, y = tp.get(a, {}), tp.get(b, {})
        if x.get(key) is None or not y.get(key):
            continue
        v = x[key] / y[key]
        rows.append([name, f"{100 * v:.1f} %" if "proxy CPU" in name else f"{v:.2f}"])
    R["ratios"] = {r[0]: r[1] for r in rows}
    if rows:
        dp.table("Ratios", ["ratio", "value"], rows)
    if "offers" in R:
        e = R["offers"]
        rows = [[k, e[k]["n"], fmt(e[k].get("p50"), 1), fmt(e[k].get("max"), 1)]
                for k in ("offer_to_splice_ms", "offer_to_ingress_released_ms",
                          "quiet_to_spliced_ms") if e[k]["n"]]
        dp.table(f"Offer to splice, {e['flows']} flows one after another ({e['spliced']} spliced,"
                 f" {e['exact']} exact, {e['freeze_retries']} undone freezes), ms",
                 ["from -> to", "n", "p50", "max"], rows)
        print("  offer_to_splice: the agent's drain_ms (offer received -> splice installed);"
              "\n  offer_to_ingress_released: offer -> the ingress logged the accepted answer"
              "\n  (log stamps, 1 ms); quiet_to_spliced: the client's last byte -> the driver saw"
              "\n  the flow spliced (includes --bypass-after-ms "
              f"{args.bypass_after_ms}; 5 ms polls)")
    if "rtt" in R:
        for key, title in (("ramp", "with the delay ramp"), ("no_ramp", "without the ramp")):
            r = R["rtt"].get(key)
            if not r:
                continue
            print(f"\nClient RTT (tcpi_rtt, every {args.rtt_every_ms} ms), {title}: server leg "
                  f"{args.server_rtt_ms} ms away, {args.rtt_chunk} B every {args.rtt_period_ms} ms")
            if "error" in r:
                print(f"  NOT SPLICED: {r['error']}")
            ev = ", ".join(e["state"] + ("" if e["delay_ms"] is None else f" {e['delay_ms']} ms")
                           + f" @{e['t'] / 1000:.2f}s" for e in r["events"])
            print(f"  agent states seen: {ev or '-'}")
            lo, hi = r.get("window_ms", [None, None])
            line = []
            for t, v, _ in r["samples_ms"]:
                if lo is not None and not (lo - 500 <= t <= hi + 500):
                    continue
                line.append(f"{t / 1000:.1f}s:{v:.1f}")
            for i in range(0, len(line), 8):
                print("  " + "  ".join(line[i:i + 8]))
            if "max_step_ms" in r:
                print(f"  largest step between samples {r['max_step_ms']:.1f} ms "
                      f"(at {r['max_step_at_ms'] / 1000:.2f} s); RTT {r['rtt_before_offer_ms']} ms "
                      f"before the offer, {r['rtt_after_splice_ms']} ms after the splice; "
                      f"{r['ramp_steps']} ramp steps; offer -> splice "
                      f"{r.get('offer_to_splice_ms', '?')} ms; exact: {r['exact']}")
            if r.get("ack_samples_ms"):
                line = [f"{t / 1000:.1f}s:{'-' if v is None else f'{v:.0f}'}"
                        for t, v in r["ack_samples_ms"]
                        if lo is None or lo - 500 <= t <= hi + 500]
                print("  each write until its last byte was acknowledged, ms (unsmoothed; "
                      "includes any wait for a retransmission):")
                for i in range(0, len(line), 10):
                    print("  " + "  ".join(line[i:i + 10]))
                if r.get("ack_slowest_ms") is not None:
                    print(f"  slowest write {r['ack_slowest_ms']:.0f} ms (at "
                          f"{r['ack_slowest_at_ms'] / 1000:.2f} s), largest step between writes "
                          f"{r['ack_max_step_ms']:.0f} ms; {r['retransmits']} retransmitted "
                          f"segments in the flow")
    R["targets"] = verdicts(R)
    print("\nTargets")
    for t in R["targets"]:
        state = "n/a   " if t["met"] is None else ("met   " if t["met"] else "MISSED")
        print(f"  {state}  {t['target']}: {t['figure']}")
    rt = R.get("rtt", {}).get("ramp") or {}
    if rt.get("ack_slowest_ms") and rt.get("ack_after_splice_ms") and \
            rt["ack_slowest_ms"] > 2 * rt["ack_after_splice_ms"]:
        print(f"  NOTE    handover stall with the ramp: a write took {rt['ack_slowest_ms']:.0f} ms "
              f"to be acknowledged at {rt['ack_slowest_at_ms'] / 1000:.2f} s "
              f"({rt['ack_after_splice_ms']:.0f} ms after the splice; tcpi_rtt does not show it)")
    for p in R.get("failed_parts", []):
        print(f"  NOT RUN {p['part']}: {p['error'].splitlines()[0]}")
    for p in EXIT_PROBLEMS:
        print(f"  NOTE    {p}")
    print(f"\nPinned: client (hermes-bypass-stream send) and server (serve) with taskset on CPU "
          f"{CPU_LOAD}; every thread of the Hermes daemons (controller, policy, agent, ingresses) "
          f"on CPU {CPU_PROXY}; the delay line unpinned, SCHED_FIFO. Softirq work runs where the "
          f"packets are sent (veth), mostly CPU {CPU_LOAD} for the kernel-only paths.")


# ---- main -------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/hermes bench bypass",
                                 description="Hermes TCP proxy bypass benchmark: direct routing, "
                                             "user-space and splice(2) relaying, eBPF offload")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="per throughput arm, split over --rounds")
    ap.add_argument("--rounds", type=int, default=5,
                    help="throughput: rounds over all arms, interleaved")
    ap.add_argument("--max-gib", type=float, default=0.0,
                    help="also stop a throughput arm after this many GiB (0: no limit)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"throughput arms ({','.join(ARMS)})")
    ap.add_argument("--flows", type=int, default=20, help="flows timed from offer to splice")
    ap.add_argument("--flow-bytes", type=int, default=1 << 20,
                    help="bytes each timed flow sends through the splice")
    ap.add_argument("--bypass-after-ms", type=int, default=100, help="ingress option")
    ap.add_argument("--server-rtt-ms", type=float, default=60.0,
                    help="delay line in S on what arrives from P (RTT part)")
    ap.add_argument("--ramp-step-ms", type=int, default=20, help="agent --delay-step-ms")
    ap.add_argument("--ramp-hold-ms", type=int, default=100, help="agent --delay-step-hold-ms")
    ap.add_argument("--rtt-every-ms", type=int, default=100, help="client TCP_INFO sampling")
    ap.add_argument("--rtt-chunk", type=int, default=8192, help="bytes per write, RTT part")
    ap.add_argument("--rtt-period-ms", type=int, default=100,
                    help="one write every this often, RTT part (the drain needs the server leg "
                         "quiet for a moment: longer than the server RTT)")
    ap.add_argument("--rtt-delayed-acks", action="store_true",
                    help="RTT part: the server delays its ACKs as usual (default: it acks every "
                         "read at once, so that each write gives the client RTT samples)")
    ap.add_argument("--rtt-after-s", type=float, default=3.0,
                    help="keep sampling this long after the splice")
    ap.add_argument("--no-ramp-compare", dest="rtt_no_ramp", action="store_false",
                    help="skip the RTT run with an agent without the ramp")
    ap.add_argument("--skip", default="", help="parts to skip: throughput,offers,rtt")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run (CI): short transfers, 3 flows; fails unless every arm that "
                         "can run here ran with exact bytes")
    ap.add_argument("--out", default=os.path.join(BUILD_DIR, "bench", "bypass.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.seconds, args.max_gib, args.flows, args.rounds = 0.5, 0.25, 3, 1
        args.rtt_after_s, args.rtt_no_ramp = 1.0, False
    args.arm_list = [a.strip() for a in args.arms.split(",") if a.strip()]
    args.skip_list = [p.strip() for p in args.skip.split(",") if p.strip()]
    bad = [a for a in args.arm_list if a not in ARMS]
    bad += [p for p in args.skip_list if p not in ("throughput", "offers", "rtt")]
    if bad:
        ap.error(f"unknown arm(s) or part(s): {bad}")
    if args.seconds <= 0 or args.rounds < 1 or args.flows < 1 or args.rtt_every_ms < 10 \
            or args.rtt_period_ms < 1:
        ap.error("--seconds > 0, --flows >= 1, --rtt-every-ms >= 10, --rtt-period-ms >= 1")
    return args


def has_option(binary, option):
    r = subprocess.run([os.path.join(BIN, binary), "--help"], capture_output=True, text=True,
                       timeout=10)
    return re.search(rf"^\s*{re.escape(option)}\s", r.stdout + r.stderr, re.M) is not None


def check_tools():
    need = [os.path.join(BIN, b) for b in ("hermes-bypass-stream", "hermes-controller",
                                           "hermes-ingress", "hermes-policy", "hermes-bypass",
                                           "hermesctl")]
    missing = [p for p in need if not os.access(p, os.X_OK)]
    for tool in ("ip", "iptables", "tc", "ss", "taskset", "sysctl"):
        if not shutil.which(tool):
            missing.append(tool)
    if missing:
        raise BenchError("missing: " + ", ".join(missing) +
                         " (scripts/hermes bench bypass installs and builds them)")


def main(argv):
    global KEEP
    args = parse_args(argv)
    KEEP = args.keep
    if os.geteuid() != 0:
        print("hermes bench bypass: needs root (network namespaces, BPF, TCP_REPAIR): skipped",
              file=sys.stderr)
        return SKIP
    # Ctrl-C, SIGTERM and SIGHUP end the run through the same cleanup as an error (SIGINT
    # too when the shell started us with it ignored, as for a background job)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_stop_signal)
    tmp = tempfile.mkdtemp(prefix="hermes-bench-bypass-")
    os.chmod(tmp, 0o755)
    procs = dp.Procs()
    world = World()
    env = {"procs": procs, "tmp": tmp, "world": world}
    R = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                  "machine": platform.machine(), "loadavg_at_start": loadavg()},
         "params": {k: v for k, v in vars(args).items() if k not in ("out",)},
         "pinned": {"client": CPU_LOAD, "server": CPU_LOAD, "hermes_daemons": CPU_PROXY,
                    "delay_line": "unpinned, SCHED_FIFO 20 (chrt) when allowed"},
         "failed_parts": []}
    t_start = time.monotonic()
    rc = 0
    try:
        check_tools()
        splice_option = has_option("hermes-ingress", "--splice")
        R["ingress_has_splice_option"] = splice_option
        log("namespaces C, P, S and the server in S")
        world.up()
        srv = procs.start("server", ["ip", "netns", "exec", world.S, "taskset", "-c",
                                     str(CPU_LOAD), os.path.join(BIN, "hermes-bypass-stream"),
                                     "serve", "--listen", f"{S_ADDR}:{RELAY_PORT}", "--listen",
                                     f"{S_ADDR}:{BYPASS_PORT}"],
                          os.path.join(tmp, "server.log"), stdout=subprocess.PIPE)
        if read_line(srv, 10, "the server") != "ready":
            raise BenchError("the server did not start: " + tail(srv.bench_log))
        env["server"] = srv
        log("Hermes in P: controller, policy engine, bypass agent, ingresses")
        env["hermes"] = Hermes(world, args, splice_option)
        R["daemons_argv"] = {n: d.argv[4:] for n, d in env["hermes"].s.daemons.items()}
        if "throughput" not in args.skip_list:
            R["throughput"] = part_throughput(env, args, splice_option)
        for part, fn in (("offers", part_offers), ("rtt", part_rtt)):
            if part in args.skip_list:
                continue
            if part == "rtt" and not os.access(os.path.join(BIN, "hermes-nfq-delay"), os.X_OK):
                R["failed_parts"].append({"part": part, "unavailable": True, "error":
                                          "hermes-nfq-delay was not built (libnetfilter-queue-dev "
                                          "missing: scripts/hermes install)"})
                continue
            log(f"{part}: {'%d flows' % args.flows if part == 'offers' else 'RTT series'}")
            t0 = time.monotonic()
            try:
                R[part] = fn(env, args)
            except BenchError as e:
                log(f"{part}: could not run: {e}")
                R["failed_parts"].append({"part": part, "error": str(e)})
            R.setdefault("seconds", {})[part] = round(time.monotonic() - t0, 1)
        R["hermes_log_problems"] = env["hermes"].log_problems()[:40]
    except BenchError as e:
        log(f"the benchmark could not run: {e}")
        R["error"] = str(e)
        rc = 1
    except KeyboardInterrupt:
        log("interrupted")
        R["error"] = "interrupted"
        rc = 1
    finally:
        if "hermes" in env:
            env["hermes"].stop()
        procs.stop_all()
        world.down()
        if KEEP:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    R["daemon_exit_problems"] = EXIT_PROBLEMS
    R["total_s"] = round(time.monotonic() - t_start, 1)
    if rc == 0:
        report(R, args)
        if args.smoke:
            problems = smoke_problems(R)
            for p in problems:
                print(f"SMOKE FAILED: {p}")
            rc = 1 if problems else 0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(R, f, indent=1)
    print("\n" + json.dumps({k: R[k] for k in R if k != "params"}))
    print(f"\n(written to {args.out}; {R['total_s']} s)")
    return rc


def smoke_problems(R):
    """What a smoke run must show: every arm that can run here ran with exact bytes; the
    timed flows and the RTT run were spliced and exact. Never a timing."""
    out = []
    for arm, r in R.get("throughput", {}).items():
        if "unavailable" in r:
            continue
        if "error" in r:
            out.append(f"{arm}: {r['error']}")
        elif not r.get("exact") or not r.get("bytes"):
            out.append(f"{arm}: bytes not exact ({r.get('bytes')} sent, {r.get('received')} "
                       f"received, first bad offset {r.get('first_bad_offset')})")
    for p in R.get("failed_parts", []):
        if not p.get("unavailable"):
            out.append(f"{p['part']}: {p['error']}")
    e = R.get("offers")
    if e and (e["spliced"] != e["flows"] or e["exact"] != e["flows"]):
        out.append(f"offers: {e['spliced']} of {e['flows']} spliced, {e['exact']} exact")
    for k, r in R.get("rtt", {}).items():
        if isinstance(r, dict) and ("error" in r or not r.get("exact")):
            out.append(f"rtt {k}: {r.get('error', 'bytes not exact')}")
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def on_stop_signal(signum, frame):
    raise KeyboardInterrupt()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
