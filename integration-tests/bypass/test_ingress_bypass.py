"""The real ingress hands bypass-eligible flows to the real bypass agent, end to end.

    client ns --veth-- proxy ns (controller, policy engine, ingress, bypass agent) --veth-- server

Clients in the client namespace CONNECT through the ingress (HTTP/1.1) to two kinds of server in
the server namespace:
- an HTTP origin, from which a client fetches a file several times on one tunnel, pausing
  between requests: the splice works, also under 1 % loss, and the proxy sends no FIN or RST;
- the seeded server of bypass_world (test_bypass.py's), with which a client exchanges seeded
  bytes in both directions, checked by sha256 at both ends: test_bypass.py's matrix (options,
  who closes first, resets, idle flows, 100 flows at once, data during the freeze, ineligible
  flows), here with the real ingress as the proxy instead of the test proxy.
The policy marks a flow bypass-eligible: once it was relayed --bypass-after-ms and is quiet the
ingress offers both sockets to the agent, which splices them in the kernel; the later bytes go
through the splice, byte-exact, and the ingress relays none of them (its "flow done ...
why=offloaded" counts hold only what it relayed before the offer). The agent runs with a short
idle timeout (3 s), FIN linger (0.3 s) and 5 ms freezes, so that cleanup and undone freezes can
be watched."""
import concurrent.futures
import hashlib
import itertools
import json
import os
import random
import re
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest

import bypass_world
from bypass_world import Server, agent_query, netns, payload, sh, sysctl
from hermes_harness import Suite, wait_for

HERE = os.path.dirname(__file__)
TAG = f"hib{os.getpid() % 100000}"
NS_C, NS_P, NS_S = f"{TAG}-c", f"{TAG}-p", f"{TAG}-s"
C_ADDR, P1_ADDR = "10.232.1.2", "10.232.1.1"
P2_ADDR, S_ADDR = "10.232.2.1", "10.232.2.2"
PROXY_PORT, ORIGIN_PORT, TRANSPARENT_PORT = 3128, 8080, 3130
BYPASS_PORT, PLAIN_PORT = 9000, 9001  # the seeded server: under a bypass rule / a plain rule
FILE_SIZE = 2 * 1024 * 1024
IDLE_S, LINGER_MS = 3, 300
FIXTURE_SYSCTLS = {"tcp_timestamps": 1, "tcp_sack": 1, "tcp_window_scaling": 1, "tcp_ecn": 2}
NOFILE = 4096  # 100 flows at once: their sockets in this process, the ingress and the agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


def _raise_nofile():
    """The daemons inherit this process's descriptor limit: at least NOFILE when allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < NOFILE:
        want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _raise_nofile()
    root = tmp_path_factory.mktemp("origin")
    data = os.urandom(FILE_SIZE)
    (root / "file.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    for ns in (NS_C, NS_P, NS_S):
        sh(f"ip netns add {ns}")
        sh(f"ip -n {ns} link set lo up")
    sh(f"ip link add {TAG}c netns {NS_C} type veth peer name {TAG}p1 netns {NS_P}")
    sh(f"ip link add {TAG}s netns {NS_S} type veth peer name {TAG}p2 netns {NS_P}")
    for ns, dev, addr in ((NS_C, f"{TAG}c", C_ADDR), (NS_P, f"{TAG}p1", P1_ADDR),
                          (NS_P, f"{TAG}p2", P2_ADDR), (NS_S, f"{TAG}s", S_ADDR)):
        sh(f"ip -n {ns} addr add {addr}/24 dev {dev}")
        sh(f"ip -n {ns} link set {dev} up")
    for ns in (NS_C, NS_P, NS_S):
        sysctl(ns, **FIXTURE_SYSCTLS)
    # transparent clients reach the server's network through the proxy (which redirects them
    # to its transparent port: test_transparent_*)
    sh(f"ip -n {NS_C} route add {S_ADDR}/32 via {P1_ADDR}")
    suite = Suite(netns=NS_P)
    sock = os.path.join(suite.dir, "bypass.sock")
    origin = None
    servers = {}
    try:
        origin = subprocess.Popen(
            in_ns(NS_S, sys.executable, os.path.join(HERE, "..", "datapath", "http_origin.py"),
                  str(ORIGIN_PORT), str(root), S_ADDR),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in (BYPASS_PORT, PLAIN_PORT):
            servers[port] = Server(NS_S, S_ADDR, port, IDLE_S + 8)
        suite.start_controller()
        suite.start_service("policy")
        suite.start_service("bypass", extra=(
            "--socket", sock, "--idle-timeout-s", str(IDLE_S), "--fin-linger-ms", str(LINGER_MS),
            "--drain-timeout-ms", "2000",
            # every freeze lasts 5 ms (the agent sleeps: 100 flows at once freeze in turn), so
            # that a trickling client makes data arrive during one
            # (test_ingress_data_in_flight_at_the_freeze)
            "--freeze-pause-ms", "5"))
        wait_for(lambda: os.path.exists(sock), 10, what="the agent's socket")
        suite.start_service("ingress", extra=(
            "--http-listen", f"{P1_ADDR}:{PROXY_PORT}", "--h2-listen", "",
            "--transparent-listen", f"{P1_ADDR}:{TRANSPARENT_PORT}", "--bypass-socket", sock,
            "--bypass-after-ms", "100"))
        suite.wait_converged(expect=3)
        for rule in (
                {"id": "bulk", "priority": 10, "action": "allow", "bypass": True,
                 "match": {"dst": [f"{S_ADDR}/32"], "ports": [str(ORIGIN_PORT)]}},
                {"id": "stream", "priority": 10, "action": "allow", "bypass": True,
                 "match": {"dst": [f"{S_ADDR}/32"], "ports": [str(BYPASS_PORT)]}},
                {"id": "plain", "priority": 10, "action": "allow",
                 "match": {"dst": [f"{S_ADDR}/32"], "ports": [str(PLAIN_PORT)]}}):
            suite.ctl("policy", "add", "-", input=json.dumps(rule))
        suite.wait_converged(expect=3)
        wait_for(lambda: subprocess.run(in_ns(NS_S, "ss", "-ltn"), capture_output=True,
                                        text=True).stdout.count(f"{S_ADDR}:{ORIGIN_PORT}") > 0, 10,
                 what="the origin")
        yield {"suite": suite, "digest": digest, "sock": sock, "servers": servers}
        suite.check_health()
    finally:
        for name, d in suite.daemons.items():  # shown by pytest when the test fails
            tail = None if os.environ.get("HERMES_TEST_FULL_LOGS") else -8000
            print(f"----- log of {name} -----\n{d.log_text()[tail:] if tail else d.log_text()}")
        for server in servers.values():
            server.close()
        if origin:
            origin.terminate()
            origin.wait(5)
        suite.cleanup()
        for ns in (NS_C, NS_P, NS_S):
            sh(f"ip netns del {ns}", check=False)


CLIENT = r"""
import hashlib, socket, sys, time
proxy, target, size, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host, port = proxy.split(":")
c = socket.create_connection((host, int(port)), timeout=20)
c.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += c.recv(1)
assert head.startswith(b"HTTP/1.1 200"), head
for i in range(rounds):
    c.sendall(f"GET /file.bin HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(65536)
    hdr, body = buf.split(b"\r\n\r\n", 1)
    while len(body) < size:
        chunk = c.recv(1 << 20)
        assert chunk, f"closed after {len(body)} bytes in round {i}"
        body += chunk
    print(hashlib.sha256(body[:size]).hexdigest(), flush=True)
    time.sleep(0.4)  # quiet: the ingress may offer the flow now
print("CLOSE", time.time(), c.getsockname()[1], flush=True)
c.close()
"""


def test_the_ingress_offers_a_bypass_flow_and_the_agent_splices_it(world):
    s = world["suite"]
    r = subprocess.run(in_ns(NS_C, sys.executable, "-c", CLIENT, f"{P1_ADDR}:{PROXY_PORT}",
                             f"{S_ADDR}:{ORIGIN_PORT}", str(FILE_SIZE), "4"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    digests = [l for l in r.stdout.split("\n") if l and not l.startswith("CLOSE")]
    assert digests == [world["digest"]] * 4
    # the ingress relayed the first answer(s) only: the rest crossed the splice (its access
    # line may follow the flow's end by a loop turn)
    pat = re.compile(rf"flow done client={C_ADDR} target={S_ADDR}:{ORIGIN_PORT} via=direct "
                     r"up=(\d+) down=(\d+) why=offloaded")
    done = wait_for(lambda: pat.search(s.daemons["ingress-1"].log_text()), 5,
                    what="the ingress's flow done line of an offloaded flow")
    log = s.daemons["ingress-1"].log_text()
    assert re.search(rf"offloaded client={C_ADDR} target={S_ADDR}:{ORIGIN_PORT} flow=", log), log
    assert int(done.group(2)) < 4 * FILE_SIZE
    rows = s.ctl_json("stats", "--kind", "ingress")
    wait_for(lambda: s.ctl_json("stats", "--kind", "ingress")[0]["stats"].get(
        "ingress_offloaded", 0) >= 1, 5, what="ingress_offloaded in hermesctl stats")
    agent = wait_for(lambda: (s.ctl_json("bypass", "stats")[0]["stats"] or None), 5,
                     what="the agent's counters")
    assert agent["bypass_accepted"] >= 1, agent
    assert rows is not None


def test_one_percent_loss_on_both_legs_stays_exact(world):
    """Random loss (1 %) on both legs, before and after the splice: retransmissions and SACK
    blocks cross the translation and every byte still arrives exactly."""
    s = world["suite"]
    rules = [(NS_C, "OUTPUT"), (NS_S, "OUTPUT")]
    for ns, chain in rules:
        sh(f"ip netns exec {ns} iptables -A {chain} -p tcp -m statistic --mode random "
           f"--probability 0.01 -j DROP")
    try:
        r = subprocess.run(in_ns(NS_C, sys.executable, "-c", CLIENT, f"{P1_ADDR}:{PROXY_PORT}",
                                 f"{S_ADDR}:{ORIGIN_PORT}", str(FILE_SIZE), "4"),
                           capture_output=True, text=True, timeout=90)
    finally:
        for ns, chain in rules:
            sh(f"ip netns exec {ns} iptables -D {chain} -p tcp -m statistic --mode random "
               f"--probability 0.01 -j DROP", check=False)
    assert r.returncode == 0, r.stderr
    assert [l for l in r.stdout.split("\n") if l and not l.startswith("CLOSE")] == \
        [world["digest"]] * 4
    log = s.daemons["ingress-1"].log_text()
    assert log.count("offloaded client=") >= 2  # this flow too (the first test's was one)


def test_the_proxy_sends_no_fin_or_rst_when_it_lets_go(world):
    """tcpdump on both of the proxy's interfaces: from the start of the flow until the client
    closes, no segment carries FIN or RST; the offload closed the proxy's sockets silently."""
    caps = []
    for dev in (f"{TAG}p1", f"{TAG}p2"):
        p = subprocess.Popen(in_ns(NS_P, "tcpdump", "-i", dev, "-nn", "-tt", "-l", "-U",
                                   "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        caps.append(p)
    try:
        for p in caps:  # capturing before the client starts
            lines = [p.stderr.readline() for _ in range(2)]
            assert any("listening on" in l for l in lines), lines
        r = subprocess.run(in_ns(NS_C, sys.executable, "-c", CLIENT, f"{P1_ADDR}:{PROXY_PORT}",
                                 f"{S_ADDR}:{ORIGIN_PORT}", str(FILE_SIZE), "3"),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        close_line = [l for l in r.stdout.split("\n") if l.startswith("CLOSE")][0].split()
        closed_at, client_port = float(close_line[1]), close_line[2]
        time.sleep(0.5)
    finally:
        out = []
        for p in caps:
            p.terminate()
            out.append(p.communicate(timeout=5)[0])
    log = world["suite"].daemons["ingress-1"].log_text()
    assert log.count("offloaded client=") >= 1
    # this flow only: an earlier test's flow may still retransmit its closing FIN (it ran under
    # random loss); the agent's log names the proxy's port towards the server for this client
    spliced = re.search(rf"flow spliced flow=\d+ client={C_ADDR}:{client_port} server=\S+ "
                        rf"proxy={P1_ADDR}:\d+,[\d.]+:(\d+)",
                        world["suite"].daemons["bypass-1"].log_text())
    assert spliced, "the agent never spliced the client's flow"
    ports = {f".{client_port} ", f".{client_port}:", f".{spliced.group(1)} ",
             f".{spliced.group(1)}:"}
    mine = [l for o in out for l in o.splitlines() if l and any(p in l for p in ports)]
    early = [l for l in mine if float(l.split()[0]) < closed_at]
    assert early == [], "FIN or RST before the client closed:\n" + "\n".join(early)
    # and the capture does see the client's FIN after it closed (the filter works)
    assert any(float(l.split()[0]) >= closed_at for l in mine)


# ---- the bypass matrix through the ingress: seeded bytes both ways ---------------------------

_seq = itertools.count(1)


def ingress_log(world):
    return world["suite"].daemons["ingress-1"].log_text()


def agent_log(world):
    return world["suite"].daemons["bypass-1"].log_text()


def flows(world):
    return agent_query(world["sock"], "flows")


def flow_of(world, client, answer=None):
    for f in (answer or flows(world))["flows"]:
        if f["client"] == client:
            return f
    return None


def closed_of(world, client, answer=None):
    for f in (answer or flows(world))["closed"]:
        if f["client"] == client:
            return f
    return None


def wait_removed(world, client, reason, timeout=IDLE_S + 5):
    rec = wait_for(lambda: closed_of(world, client), timeout, interval=0.1,
                   what=f"flow of {client} removed")
    assert rec["reason"] == reason, rec
    assert flow_of(world, client) is None
    return rec


class Client:
    """A client in C: CONNECT through the ingress to the seeded server on `port`, 200, then
    "HELLO seed up down mode" and "OK" (relayed by the ingress; then the flow is quiet and the
    ingress may offer it), `up` bytes sent while `down` bytes are received, and a close as
    `mode` says (see bypass_world.Server)."""

    def __init__(self, world, up, down, mode="cfin", port=BYPASS_PORT, mss=None,
                 transparent=False):
        self.world, self.up, self.down, self.mode = world, up, down, mode
        self.server = world["servers"][port]
        self.target = f"{S_ADDR}:{port}"
        self.seed = f"i{next(_seq)}-{random.randrange(1 << 30)}"
        self.data = payload(self.seed, "up", up)
        self.log_at = len(ingress_log(world))  # this flow's lines come after (tests in turn)
        with netns(NS_C):
            self.sock = socket.socket()
        if mss:  # the segment size this client announces
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        self.sock.settimeout(30)
        if transparent:  # to the server itself; the proxy's REDIRECT rule takes it
            self.sock.connect((S_ADDR, port))
            self.addr = "%s:%d" % self.sock.getsockname()
            self.connect_reply = 0
        else:
            self.sock.connect((P1_ADDR, PROXY_PORT))
            self.addr = "%s:%d" % self.sock.getsockname()
            self.sock.sendall(
                f"CONNECT {self.target} HTTP/1.1\r\nHost: {self.target}\r\n\r\n".encode())
            head = b""
            while not head.endswith(b"\r\n\r\n"):  # byte by byte: none of the tunnel's bytes
                b = self.sock.recv(1)
                assert b, f"the ingress closed after {head!r}"
                head += b
            assert head.startswith(b"HTTP/1.1 200"), head
            self.connect_reply = len(head)
        self.header = f"HELLO {self.seed} {up} {down} {mode}\n".encode()
        self.sock.sendall(self.header)
        ok = b""
        while len(ok) < 3:
            b = self.sock.recv(3 - len(ok))
            assert b, "the ingress closed before OK"
            ok += b
        assert ok == b"OK\n"

    def outcome(self, timeout=10):
        """The agent's answer to the ingress's offer of this flow: ("spliced", None) or
        ("refused", reason)."""
        pat = re.compile(rf"flow spliced flow=\d+ client={re.escape(self.addr)} |offer refused "
                         rf"flow=\d+ client={re.escape(self.addr)} server=\S+ reason=(\w+)")
        m = wait_for(lambda: pat.search(agent_log(self.world)), timeout,
                     what=f"the agent's answer to the offer of {self.addr}")
        return ("refused", m.group(1)) if m.group(1) else ("spliced", None)

    def offloaded(self, entry, timeout=5):
        """The ingress's lines for this flow (entry: the agent's): "offloaded ... flow=ID" and
        the flow's end right after it (the worker logs both in one go); returns what the ingress
        relayed itself (up, down)."""
        let_go = re.compile(rf"offloaded client={C_ADDR} target={self.target} "
                            rf"flow={re.escape(str(entry['offer_id']))}:")
        done = re.compile(rf"flow done client={C_ADDR} target={self.target} via=direct "
                          r"up=(\d+) down=(\d+) why=offloaded")

        def find():
            log = ingress_log(self.world)
            m = let_go.search(log)
            return m and done.search(log, m.end())
        m = wait_for(find, timeout, what=f"the ingress letting go of {self.addr} ({entry})")
        return int(m.group(1)), int(m.group(2))

    def relayed_to_the_end(self, timeout=10):
        """The ingress's "flow done" line of this flow, relayed to its end: (up, down)."""
        pat = re.compile(rf"flow done client={C_ADDR} target={self.target} via=direct "
                         r"up=(\d+) down=(\d+) (\S+)")
        m = wait_for(lambda: pat.search(ingress_log(self.world), self.log_at), timeout,
                     what=f"the ingress's end of {self.addr}")
        assert m.group(3) != "why=offloaded", m.group(0)
        return int(m.group(1)), int(m.group(2))

    def down_counted(self, n, tunnel_down):
        """Whether n, a count of bytes sent to this client by the ingress (and the agent), is
        the tunnel's tunnel_down bytes plus the part of the ingress's 200 that went through the
        tunnel (none when the ingress wrote it to the socket straight away)."""
        return tunnel_down <= n <= tunnel_down + self.connect_reply

    def ingress_lines(self):
        return ingress_log(self.world)[self.log_at:]

    def transfer(self):
        """Sends `up` bytes while receiving `down`; returns the sha256 of what came."""
        return bypass_world.transfer(self.sock, self.data, self.down)

    def finish(self):
        bypass_world.finish(self.sock, self.mode)

    def check(self, down_sha, final=True):
        """Both directions exact: what came here, and what the server got."""
        assert down_sha == hashlib.sha256(payload(self.seed, "down", self.down)).hexdigest(), \
            "server -> client bytes differ"
        res = self.server.result(self.seed, final)
        assert res["error"] is None, res
        assert res["up_sha"] == hashlib.sha256(self.data).hexdigest(), \
            "client -> server bytes differ"
        return res


def check_let_go(c, entry, relayed, quiet=True):
    """Before the splice, the ingress relayed its 200, the HELLO and the OK, and nothing else:
    the rest crossed the splice. quiet=False: the flow was offered while the HELLO or the OK
    were on their way (many flows at once): the agent relayed them while it drained, or they
    crossed the splice."""
    up, down = relayed
    # what the ingress told the agent it had relayed
    assert entry["relayed_by_proxy"] == {"up": up, "down": down}, (relayed, entry)
    by_agent = entry["relayed_by_agent"]
    if quiet:
        assert up + by_agent["up"] == len(c.header), (relayed, entry)
        assert c.down_counted(down + by_agent["down"], 3), (relayed, entry)
    else:
        assert up + by_agent["up"] <= len(c.header), (relayed, entry)
        assert down + by_agent["down"] <= c.connect_reply + 3, (relayed, entry)


def connect_with(world, sysctls, *args, **kwargs):
    """A Client made while the namespaces have sysctls ({ns: {key: value}}); then the fixture's
    settings again."""
    for ns, kv in (sysctls or {}).items():
        sysctl(ns, **kv)
    try:
        return Client(world, *args, **kwargs)
    finally:
        for ns, kv in (sysctls or {}).items():
            sysctl(ns, **{k: FIXTURE_SYSCTLS[k] for k in kv})


def spliced_run(world, up=4 << 20, down=4 << 20, mode="cfin", sysctls=None, transparent=False):
    """One flow offered by the ingress and spliced: the transfer crosses the splice, exact
    both ways; then closed. sysctls: {ns: {key: value}} while the connection is made."""
    c = connect_with(world, sysctls, up, down, mode, transparent=transparent)
    assert c.outcome() == ("spliced", None), c.ingress_lines()
    f = flow_of(world, c.addr)
    assert f and f["state"] == "spliced", f
    relayed = c.offloaded(f)
    check_let_go(c, f, relayed)
    sha = c.transfer()
    c.check(sha, final=False)  # the server has all the client's bytes too
    f2 = flow_of(world, c.addr)
    assert f2["spliced"]["up"]["bytes"] > up and f2["spliced"]["down"]["bytes"] > down, f2
    c.finish()
    res = c.check(sha)
    return c, f, res


def test_ingress_default_options_spliced_exact_client_fin_first(world):
    c, f, res = spliced_run(world, mode="cfin")
    assert f["options"]["timestamps"] and f["options"]["sack"], f
    assert f["policy_rule"] == "stream", f
    assert res["eof"]
    # the client leg's port is the ingress's listener; the server leg's is reserved
    assert f["reserved_ports"] == {"client": False, "server": True}, f
    rec = wait_removed(world, c.addr, "fin", timeout=5)
    assert rec["spliced"]["up"]["bytes"] > 4 << 20 and rec["spliced"]["down"]["bytes"] > 4 << 20


def test_ingress_server_fin_first(world):
    c, _, res = spliced_run(world, up=1 << 20, down=1 << 20, mode="sfin")
    assert res["eof"]
    wait_removed(world, c.addr, "fin", timeout=5)


def test_ingress_timestamps_off_on_both_legs(world):
    c, f, _ = spliced_run(world, up=2 << 20, down=2 << 20,
                          sysctls={NS_P: {"tcp_timestamps": 0}})
    assert not f["options"]["timestamps"], f
    wait_removed(world, c.addr, "fin", timeout=5)


def test_ingress_sack_off(world):
    c, f, _ = spliced_run(world, up=2 << 20, down=2 << 20, sysctls={NS_P: {"tcp_sack": 0}})
    assert not f["options"]["sack"] and f["options"]["timestamps"], f
    wait_removed(world, c.addr, "fin", timeout=5)


def test_ingress_window_scale_mismatch_between_legs(world):
    """The client does not scale its windows, the server does: the splice rescales."""
    c, f, _ = spliced_run(world, up=2 << 20, down=2 << 20,
                          sysctls={NS_C: {"tcp_window_scaling": 0}})
    ws = f["options"]["wscale"]
    assert ws["client"] == [0, 0] and ws["server"] != [0, 0], f
    wait_removed(world, c.addr, "fin", timeout=5)


def test_ingress_reset_from_the_client_removes_the_flow(world):
    c, _, res = spliced_run(world, up=1 << 20, down=1 << 20, mode="rst")
    assert res.get("reset"), res
    wait_removed(world, c.addr, "rst", timeout=5)


def test_ingress_idle_flow_is_removed(world):
    c = Client(world, 256 << 10, 256 << 10, mode="idle")
    assert c.outcome() == ("spliced", None), c.ingress_lines()
    f = flow_of(world, c.addr)
    check_let_go(c, f, c.offloaded(f))
    sha = c.transfer()
    t0 = time.monotonic()
    rec = wait_removed(world, c.addr, "idle", timeout=IDLE_S + 5)
    assert time.monotonic() - t0 >= IDLE_S - 1
    assert rec["spliced"]["down"]["bytes"] > 256 << 10
    c.check(sha, final=False)
    c.sock.close()


def test_ingress_hundred_concurrent_offloads(world):
    """100 clients at once through the ingress: all offered, all spliced, all exact both ways,
    all removed after their FINs."""
    n, size = 100, 256 << 10
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 4 * n + 64:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low for {n} flows")
    before = flows(world)["stats"]
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        clients = list(ex.map(lambda _: Client(world, size, size), range(n)))
    addrs = {c.addr for c in clients}

    def answered():
        got = {f["client"] for f in flows(world)["flows"] if f["state"] == "spliced"}
        log = agent_log(world)
        refused = [a for a in addrs
                   if re.search(rf"offer refused flow=\d+ client={re.escape(a)} ", log)]
        return (got, refused) if addrs <= got | set(refused) else None
    _, refused = wait_for(answered, 15, interval=0.2, what=f"{n} offers answered")
    assert not refused, [l for l in agent_log(world).splitlines() if "offer refused" in l and
                         any(a + " " in l for a in refused)]
    answer = flows(world)
    for c in clients:  # what the ingress relayed itself, flow by flow
        f = flow_of(world, c.addr, answer)
        check_let_go(c, f, c.offloaded(f), quiet=False)
    results = [None] * n

    def run(i):
        try:
            results[i] = clients[i].transfer()
        except Exception as e:  # reported below
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0, deadline - time.monotonic()))
    for c, sha in zip(clients, results):
        assert isinstance(sha, str), f"the transfer of {c.addr}: {sha!r}"
    def crossed():  # every byte of every transfer crossed the splice (the last bytes a
        answer = flows(world)  # client sent may still be on their way when its sendall returns)
        short = [f for f in (flow_of(world, c.addr, answer) for c in clients)
                 if not (f["spliced"]["up"]["bytes"] > size and
                         f["spliced"]["down"]["bytes"] > size)]
        return not short or None
    wait_for(crossed, 10, interval=0.2, what="every transfer's bytes counted by the splice")
    for c, sha in zip(clients, results):
        c.finish()
        c.check(sha)

    def all_removed():
        answer = flows(world)
        return not addrs & {f["client"] for f in answer["flows"]} and answer
    answer = wait_for(all_removed, 10, interval=0.2, what=f"{n} flows removed")
    st = answer["stats"]
    assert st["bypass_accepted"] - before["bypass_accepted"] == n, st
    assert st["bypass_removed_fin"] - before["bypass_removed_fin"] == n, st
    # the last 64 removals are listed: all of them these flows', all on FIN
    recent = [r for r in answer["closed"] if r["client"] in addrs]
    assert len(recent) == min(n, len(answer["closed"])) and \
        all(r["reason"] == "fin" for r in recent), recent


def _trickle(world, seconds):
    """A client that sends 500 bytes every 2 ms for `seconds` from before the ingress offers
    its flow, and receives 64 KiB. Checks that the bytes are exact and who carried them;
    returns the offer's outcome and how many freezes the agent undid meanwhile."""
    before = flows(world)["stats"]["bypass_freeze_retries"]
    n = int(seconds / 0.002)
    c = Client(world, 500 * n, 64 << 10)

    def send():
        for i in range(n):
            c.sock.sendall(c.data[i * 500:(i + 1) * 500])
            time.sleep(0.002)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    outcome = c.outcome(timeout=15)
    entry = flow_of(world, c.addr) if outcome[0] == "spliced" else None
    h, got = hashlib.sha256(), 0
    while got < c.down:
        b = c.sock.recv(1 << 16)
        assert b, f"EOF after {got} of {c.down} bytes"
        h.update(b)
        got += len(b)
    t.join(30)
    assert not t.is_alive(), "the trickle did not end"
    c.finish()
    c.check(h.hexdigest())
    undone = flows(world)["stats"]["bypass_freeze_retries"] - before
    print("trickle:", outcome, "undone freezes:", undone)
    if outcome[0] == "spliced":
        # the ingress relayed the start, the agent some more while it drained, the splice the
        # rest (the trickle went on through it)
        up, down = c.offloaded(entry)
        assert entry["relayed_by_proxy"] == {"up": up, "down": down}, entry
        assert up + entry["relayed_by_agent"]["up"] < len(c.header) + c.up, entry
        rec = wait_removed(world, c.addr, "fin", timeout=5)
        assert rec["spliced"]["up"]["bytes"] > 0, rec
    else:
        assert outcome == ("refused", "busy"), outcome
        assert re.search(rf"offload refused client={C_ADDR} target={c.target} reason=busy",
                         c.ingress_lines()), c.ingress_lines()
        up, down = c.relayed_to_the_end()
        # the agent relayed some bytes while it drained; the ingress all the others
        m = re.search(rf"offer refused flow=\d+ client={re.escape(c.addr)} server=\S+ "
                      r"reason=busy .* relayed_up=(\d+) relayed_down=(\d+)", agent_log(world))
        assert int(m.group(1)) > 0, m.group(0)
        assert up + int(m.group(1)) == len(c.header) + c.up, (up, m.group(0))
        assert c.down_counted(down + int(m.group(2)), 3 + c.down), (down, m.group(0))
    return outcome, undone


def test_ingress_data_in_flight_at_the_freeze(world):
    """A client trickles bytes from before the ingress offers its flow: data arrives while the
    legs are frozen (each freeze lasts 5 ms), the agent undoes the freeze and tries again, and
    in the end either splices or hands the flow back (busy), and the ingress relays on. The
    bytes are exact either way. Rarely, a freeze falls between two trickled segments and the
    first one succeeds: then the trickle runs again (three times at most)."""
    runs = []
    for _ in range(3):
        runs.append(_trickle(world, 1.0))
        if runs[-1][1] > 0:
            break
    assert runs[-1][1] > 0, f"no freeze undone in {len(runs)} trickles: {runs}"


def test_ingress_flow_without_bypass_is_never_offered(world):
    """A policy rule without bypass: the ingress relays the flow to its end, exact, and the
    agent never hears of it."""
    before = flows(world)["stats"]
    c = Client(world, 1 << 20, 1 << 20, port=PLAIN_PORT)
    time.sleep(0.3)  # well past --bypass-after-ms
    sha = c.transfer()
    c.finish()
    c.check(sha)
    up, down = c.relayed_to_the_end()
    assert up == len(c.header) + c.up and c.down_counted(down, 3 + c.down), (up, down)
    assert "offload" not in c.ingress_lines(), c.ingress_lines()
    assert flows(world)["stats"]["bypass_offers"] == before["bypass_offers"]
    assert closed_of(world, c.addr) is None


def test_ingress_ineligible_flow_stays_relayed_and_exact(world):
    """Timestamps on the client leg only (the server does not use them): a CONNECT proxy
    answered the client before it knew the server, nothing can make the legs agree. The agent
    refuses (timestamps), the ingress relays everything itself, exact."""
    before = flows(world)["stats"]
    c = connect_with(world, {NS_S: {"tcp_timestamps": 0}}, 1 << 20, 1 << 20)
    assert c.outcome() == ("refused", "timestamps")
    assert re.search(rf"client={re.escape(c.addr)} .*timestamps on the client leg only \(the "
                     r"server does not use it, and a CONNECT proxy", agent_log(world))
    wait_for(lambda: re.search(rf"offload refused client={C_ADDR} target={c.target} "
                               r"reason=timestamps", c.ingress_lines()), 5,
             what="the ingress relaying on")
    sha = c.transfer()
    c.finish()
    c.check(sha)
    up, down = c.relayed_to_the_end()
    assert up == len(c.header) + c.up and c.down_counted(down, 3 + c.down), (up, down)
    after = flows(world)["stats"]
    assert after["bypass_refused_timestamps"] == before["bypass_refused_timestamps"] + 1, after
    assert flow_of(world, c.addr) is None and closed_of(world, c.addr) is None


# ---- SACK / timestamps / ECN made the same on both legs (the SYN shaper) --------------------

@pytest.mark.parametrize("option,sysctl_key", [("timestamps", "tcp_timestamps"),
                                               ("sack", "tcp_sack")])
def test_ingress_shapes_the_servers_syn_to_the_client_leg(world, option, sysctl_key):
    """The client does not use timestamps (or SACK); the server would. The ingress marks its
    socket towards the server and the agent's shaper takes the option out of that SYN, so both
    legs go without it, and the flow is spliced, exact (without the shaper: refused)."""
    before = flows(world)["stats"]
    c, f, _ = spliced_run(world, up=2 << 20, down=2 << 20, sysctls={NS_C: {sysctl_key: 0}})
    assert not f["options"][option], f
    # (the client does not ask for ECN either: the SYN goes without, as it would anyway)
    assert f["options"]["shaped"] == {"syn_to_server": f"{option} ecn",
                                      "synack_to_client": "none"}, f
    other = "sack" if option == "timestamps" else "timestamps"
    assert f["options"][other], f  # only what the client lacks was taken out
    assert flows(world)["stats"]["bypass_dp_shaped_syns"] > before["bypass_dp_shaped_syns"]
    wait_removed(world, c.addr, "fin", timeout=5)


def conntrack_lines(port):
    """The proxy namespace's conntrack entries of the client port."""
    r = sh(f"ip netns exec {NS_P} cat /proc/net/nf_conntrack", check=False)
    return [l for l in r.stdout.splitlines() if f"sport={port} " in l]


def test_transparent_client_learns_the_servers_options(world):
    """A transparent front answers the client's SYN before it dials the server. This server
    does not use timestamps, and the client asks for ECN, which the proxy does not ask of the
    server: the first flow is refused (and relayed, exact) and teaches the agent's per-server
    cache; the next client's SYN-ACK is shaped from that cache, both legs agree, the flow is
    spliced, exact, and its conntrack entry (the REDIRECT's NAT mapping) is gone."""
    rule = (f"PREROUTING -i {TAG}p1 -p tcp -d {S_ADDR} --dport {BYPASS_PORT} "
            f"-j REDIRECT --to-ports {TRANSPARENT_PORT}")
    sh(f"ip netns exec {NS_P} iptables -w -t nat -A {rule}")
    try:
        odd = {NS_S: {"tcp_timestamps": 0}, NS_C: {"tcp_ecn": 1}}
        first = connect_with(world, odd, 1 << 20, 1 << 20, transparent=True)
        assert first.outcome() == ("refused", "timestamps")
        assert re.search(rf"client={re.escape(first.addr)} .*timestamps on the client leg only "
                         r"\(the server does not use it; the per-server cache knows now",
                         agent_log(world))
        sha = first.transfer()
        first.finish()
        first.check(sha)
        assert conntrack_lines(first.addr.split(":")[1]), "no conntrack entry for a REDIRECT?"

        c, f, _ = spliced_run(world, up=2 << 20, down=2 << 20, sysctls=odd, transparent=True)
        assert f["options"]["shaped"] == {"synack_to_client": "timestamps ecn",
                                          "syn_to_server": "none"}, f
        assert not f["options"]["timestamps"] and not f["options"]["ecn"], f
        assert f["options"]["sack"], f
        assert f["redirected_to"] == f"{P1_ADDR}:{TRANSPARENT_PORT}", f
        # the client talks to the server's address: the splice's client side is that address
        assert f["proxy"]["client_side"] == f"{S_ADDR}:{BYPASS_PORT}", f
        assert conntrack_lines(c.addr.split(":")[1]) == []
        wait_removed(world, c.addr, "fin", timeout=5)
    finally:
        sh(f"ip netns exec {NS_P} iptables -w -t nat -D {rule}", check=False)


def test_ingress_clamps_the_server_legs_mss_to_the_clients(world):
    """A client that announces small segments (MSS 1000): for a bypass-eligible flow the
    ingress announces the same to the server, so that once spliced the server's segments fit
    the client leg; the transfer through the splice is exact."""
    c = Client(world, 1 << 20, 2 << 20, mss=1000)
    assert c.outcome() == ("spliced", None), c.ingress_lines()
    f = flow_of(world, c.addr)
    mss = f["options"]["mss"]
    # tcpi_advmss: what each leg was told, less the 12-byte timestamp option
    assert mss["server"] == 1000 - 12 and mss["client"] == 1460 - 12, mss
    sha = c.transfer()
    c.finish()
    c.check(sha)
    wait_removed(world, c.addr, "fin", timeout=5)
