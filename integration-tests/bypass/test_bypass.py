"""The bypass agent for real: three network namespaces made by this test (client C, proxy P,
server S, joined by veth pairs), the controller and hermes-bypass running in P, a small
relay in P (hermes-bypass-testproxy, which offers its connections through bypass_client),
and transfers between a client in C and a server in S, checked byte for byte (sha256) in
both directions: after the offload the bytes go through the eBPF splice, not the proxy.

Needs root (namespaces, BPF, TCP_REPAIR); skipped otherwise. The agent runs with a short
idle timeout (3 s) and FIN linger (0.3 s) so that cleanup can be watched.
"""
import contextlib
import functools
import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import threading
import time

import pytest

import bypass_world
from bypass_world import agent_query, netns, payload, sh, sysctl
from hermes_harness import BIN_DIR, Suite, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, BPF, TCP_REPAIR)")

TAG = f"hb{os.getpid() % 100000}"
NS_C, NS_P, NS_S = f"{TAG}-c", f"{TAG}-p", f"{TAG}-s"
C_ADDR, P1_ADDR = "10.231.1.2", "10.231.1.1"  # client <-> proxy
P2_ADDR, S_ADDR = "10.231.2.1", "10.231.2.2"  # proxy <-> server
PROXY_PORT, SERVER_PORT = 8080, 9000
IDLE_S, LINGER_MS = 3, 300

# the server in S (bypass_world.Server), closing rst/idle connections IDLE_S + 8 s after the end
Server = functools.partial(bypass_world.Server, NS_S, S_ADDR, SERVER_PORT, IDLE_S + 8)


# ---- the test proxy in P ----------------------------------------------------------------------

class Proxy:
    def __init__(self, agent_socket, log_path):
        self.events = []
        self.cond = threading.Condition()
        self.log_path = log_path
        self.stderr = open(log_path, "w")
        argv = ["ip", "netns", "exec", NS_P, os.path.join(BIN_DIR, "hermes-bypass-testproxy"),
                "--listen", f"{P1_ADDR}:{PROXY_PORT}", "--server", f"{S_ADDR}:{SERVER_PORT}",
                "--agent", agent_socket, "--rule", "test-bypass"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda e: e["event"] == "ready", 10)

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

    def wait(self, pred, timeout, what="proxy event"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; proxy events: {self.events[-10:]}"
                self.cond.wait(left)

    def outcome(self, client, timeout=10):
        """accepted / refused event of the connection from client ("ip:port")."""
        return self.wait(lambda e: e.get("client") == client
                         and e["event"] in ("accepted", "refused", "not_offered"), timeout,
                         f"the offer of {client}")

    def totals(self):
        with self.cond:
            n = sum(1 for e in self.events if e["event"] == "totals")
        self.proc.send_signal(10)  # SIGUSR1
        deadline = time.monotonic() + 5
        with self.cond:
            while True:
                got = [e for e in self.events if e["event"] == "totals"]
                if len(got) > n:
                    return got[-1]
                assert time.monotonic() < deadline, "no totals from the proxy"
                self.cond.wait(0.1)

    def stop(self):
        """Stops the proxy; it must not have died before."""
        alive = self.proc.poll() is None
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.stderr.close()
        with open(self.log_path) as f:
            err = f.read()
        assert alive, f"the test proxy died ({self.proc.returncode}): {err[-3000:]}"
        assert "Sanitizer" not in err and "runtime error" not in err, err[-3000:]


# ---- fixtures ---------------------------------------------------------------------------------

def _make_topology():
    for ns in (NS_C, NS_P, NS_S):
        sh(f"ip netns del {ns}", check=False)
        sh(f"ip netns add {ns}")
        sh(f"ip -n {ns} link set lo up")
    sh(f"ip link add {TAG}c0 netns {NS_C} type veth peer name {TAG}p1 netns {NS_P}")
    sh(f"ip link add {TAG}s0 netns {NS_S} type veth peer name {TAG}p2 netns {NS_P}")
    for ns, dev, addr in ((NS_C, f"{TAG}c0", C_ADDR), (NS_P, f"{TAG}p1", P1_ADDR),
                          (NS_P, f"{TAG}p2", P2_ADDR), (NS_S, f"{TAG}s0", S_ADDR)):
        sh(f"ip -n {ns} addr add {addr}/24 dev {dev}")
        sh(f"ip -n {ns} link set {dev} up")
    for ns in (NS_C, NS_P, NS_S):
        sysctl(ns, tcp_timestamps=1, tcp_sack=1, tcp_window_scaling=1)


@pytest.fixture(scope="module")
def env():
    _make_topology()
    suite = Suite(netns=NS_P)
    sock = os.path.join(suite.dir, "run", "bypass.sock")
    server = proxy = None
    try:
        suite.start_controller()
        suite.start_service("bypass", extra=(
            "--socket", sock, "--idle-timeout-s", str(IDLE_S), "--fin-linger-ms", str(LINGER_MS),
            "--drain-timeout-ms", "1000", "--delay-queue", "7411", "--delay-step-hold-ms", "60",
            # every freeze lasts 20 ms, so that a trickling client makes data arrive during
            # one (test_data_during_the_freeze_*)
            "--freeze-pause-ms", "20"))
        wait_for(lambda: os.path.exists(sock), 10, what="the agent's socket")
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        suite.wait_converged(expect=1)
        server = Server()
        proxy = Proxy(sock, os.path.join(suite.dir, "testproxy.log"))
        yield {"suite": suite, "sock": sock, "server": server, "proxy": proxy}
        proxy.stop()
        proxy = None
        suite.check_health()
    finally:
        if proxy:
            with contextlib.suppress(AssertionError):
                proxy.stop()
        if server:
            server.close()
        for name, d in suite.daemons.items():
            tail = None if os.environ.get("HERMES_TEST_FULL_LOGS") else -8000
            print(f"----- log of {name} -----\n{d.log_text()[tail:] if tail else d.log_text()}")
        suite.cleanup()
        for ns in (NS_C, NS_P, NS_S):
            sh(f"ip netns del {ns}", check=False)


# ---- the client in C --------------------------------------------------------------------------

class Client:
    seq = 0

    def __init__(self, env, up, down, mode="cfin", early=False):
        Client.seq += 1
        self.env, self.up, self.down, self.mode = env, up, down, mode
        self.seed = f"s{Client.seq}-{random.randrange(1 << 30)}"
        self.data = payload(self.seed, "up", up)
        with netns(NS_C):
            self.sock = socket.socket()
        self.sock.settimeout(30)
        self.sock.connect((P1_ADDR, PROXY_PORT))
        self.addr = "%s:%d" % self.sock.getsockname()
        self.header = f"HELLO {self.seed} {up} {down} {mode}{'+early' if early else ''}\n".encode()
        self.sock.sendall(self.header)
        ok = b""
        while len(ok) < 3:
            b = self.sock.recv(3 - len(ok))
            assert b, "proxy closed before OK"
            ok += b
        assert ok == b"OK\n"

    def offload(self, timeout=10):
        return self.env["proxy"].outcome(self.addr, timeout)

    def transfer(self):
        """Sends `up` bytes while receiving `down`; returns the sha256 of what came."""
        return bypass_world.transfer(self.sock, self.data, self.down)

    def finish(self):
        bypass_world.finish(self.sock, self.mode)

    def check(self, down_sha, final=True):
        assert down_sha == hashlib.sha256(payload(self.seed, "down", self.down)).hexdigest(), \
            "server -> client bytes differ"
        res = self.env["server"].result(self.seed, final)
        assert res["error"] is None, res
        assert res["up_sha"] == hashlib.sha256(payload(self.seed, "up", self.up)).hexdigest(), \
            "client -> server bytes differ"
        return res


def flows(env):
    return agent_query(env["sock"], "flows")


def flow_of(env, client):
    for f in flows(env)["flows"]:
        if f["client"] == client:
            return f
    return None


def closed_of(env, client):
    for f in flows(env)["closed"]:
        if f["client"] == client:
            return f
    return None


def spliced_run(env, up=4 << 20, down=4 << 20, mode="cfin"):
    """One offloaded connection: offer accepted, transfer through the splice, close."""
    proxy = env["proxy"]
    c = Client(env, up, down, mode)
    ev = c.offload()
    assert ev["event"] == "accepted", ev
    # what the proxy relayed itself: the header and the OK, nothing more
    assert ev["up"] == len(c.header) and ev["down"] == 3, ev
    f = flow_of(env, c.addr)
    assert f and f["state"] == "spliced", f
    before = proxy.totals()
    sha = c.transfer()
    c.check(sha, final=False)  # the server has all the client's bytes too
    f2 = flow_of(env, c.addr)
    assert f2["spliced"]["up"]["bytes"] > up and f2["spliced"]["down"]["bytes"] > down, f2
    after = proxy.totals()
    assert (after["up"], after["down"]) == (before["up"], before["down"]), \
        "the proxy saw spliced bytes"
    c.finish()
    res = c.check(sha)
    return c, f, res


def wait_removed(env, client, reason, timeout=IDLE_S + 5):
    rec = wait_for(lambda: closed_of(env, client), timeout, interval=0.1,
                   what=f"flow of {client} removed")
    assert rec["reason"] == reason, rec
    assert flow_of(env, client) is None
    return rec


# ---- tests ------------------------------------------------------------------------------------

def port_taken(addr):
    """Whether a socket in P can bind addr ("ip:port")."""
    ip, port = addr.split(":")
    with netns(NS_P):
        s = socket.socket()
    try:
        s.bind((ip, int(port)))
        return False
    except OSError:
        return True
    finally:
        s.close()


def test_default_options_spliced_exact_client_fin_first(env):
    c, f, res = spliced_run(env, mode="cfin")
    assert f["options"]["timestamps"] and f["options"]["sack"], f
    assert res["eof"]
    # the server leg's port stays reserved while spliced (the client leg's is the listener's)
    assert f["reserved_ports"] == {"client": False, "server": True}, f
    rec = wait_removed(env, c.addr, "fin", timeout=5)
    assert rec["spliced"]["up"]["bytes"] > 4 << 20
    assert not port_taken(f["proxy"]["server_side"])


def test_reserved_port_while_spliced(env):
    c = Client(env, 1000, 1000)
    assert c.offload()["event"] == "accepted"
    f = flow_of(env, c.addr)
    assert port_taken(f["proxy"]["server_side"])
    sha = c.transfer()
    c.finish()
    c.check(sha)
    wait_removed(env, c.addr, "fin", timeout=5)
    assert not port_taken(f["proxy"]["server_side"])


def test_server_fin_first(env):
    c, _, res = spliced_run(env, up=1 << 20, down=1 << 20, mode="sfin")
    assert res["eof"]
    wait_removed(env, c.addr, "fin", timeout=5)


def test_timestamps_off_on_both_legs(env):
    sysctl(NS_P, tcp_timestamps=0)
    try:
        c, f, _ = spliced_run(env, up=2 << 20, down=2 << 20)
    finally:
        sysctl(NS_P, tcp_timestamps=1)
    assert not f["options"]["timestamps"], f
    wait_removed(env, c.addr, "fin", timeout=5)


def test_sack_off(env):
    sysctl(NS_P, tcp_sack=0)
    try:
        c, f, _ = spliced_run(env, up=2 << 20, down=2 << 20)
    finally:
        sysctl(NS_P, tcp_sack=1)
    assert not f["options"]["sack"] and f["options"]["timestamps"], f
    wait_removed(env, c.addr, "fin", timeout=5)


def test_window_scale_mismatch_between_legs(env):
    """The client does not scale its windows, the server does: the splice rescales."""
    sysctl(NS_C, tcp_window_scaling=0)
    try:
        c, f, _ = spliced_run(env, up=2 << 20, down=2 << 20)
    finally:
        sysctl(NS_C, tcp_window_scaling=1)
    ws = f["options"]["wscale"]
    assert ws["client"] == [0, 0] and ws["server"] != [0, 0], f
    wait_removed(env, c.addr, "fin", timeout=5)


def test_reset_removes_the_flow(env):
    c, _, res = spliced_run(env, up=1 << 20, down=1 << 20, mode="rst")
    assert res.get("reset"), res
    wait_removed(env, c.addr, "rst", timeout=5)


def test_idle_flow_is_removed(env):
    c = Client(env, 256 << 10, 256 << 10, mode="idle")
    assert c.offload()["event"] == "accepted"
    sha = c.transfer()
    t0 = time.monotonic()
    rec = wait_removed(env, c.addr, "idle", timeout=IDLE_S + 5)
    assert time.monotonic() - t0 >= IDLE_S - 1
    assert rec["spliced"]["down"]["bytes"] > 256 << 10
    c.check(sha, final=False)
    c.sock.close()


def test_ineligible_flow_stays_proxied_and_exact(env):
    """Timestamps on the server leg only: refused, the proxy relays everything itself."""
    sysctl(NS_C, tcp_timestamps=0)
    try:
        c = Client(env, 1 << 20, 1 << 20)
    finally:
        sysctl(NS_C, tcp_timestamps=1)
    ev = c.offload()
    assert ev["event"] == "refused" and ev["reason"] == "timestamps", ev
    sha = c.transfer()
    c.finish()
    c.check(sha)
    closed = env["proxy"].wait(lambda e: e["event"] == "closed" and e["client"] == c.addr, 10)
    assert closed["up"] >= 1 << 20 and closed["down"] >= 1 << 20, closed
    st = flows(env)["stats"]
    assert st["bypass_refused_timestamps"] >= 1


def test_offer_under_traffic_stays_exact(env):
    """The client streams at once: the agent relays while draining, and then either splices
    or gives the connection back; the bytes are exact either way."""
    outcomes = []
    for _ in range(4):
        c = Client(env, 8 << 20, 8 << 20, early=True)
        sha = c.transfer()
        ev = c.offload()
        outcomes.append((ev["event"], ev.get("reason"), ev.get("agent_up"), ev.get("agent_down")))
        c.finish()
        c.check(sha)
    print("outcomes under traffic:", outcomes)


def _trickle(env, seconds):
    """A client that sends 500 bytes every 2 ms for `seconds` right after the offer."""
    n = int(seconds / 0.002)
    c = Client(env, 500 * n, 64 << 10)

    def send():
        for i in range(n):
            c.sock.sendall(c.data[i * 500:(i + 1) * 500])
            time.sleep(0.002)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    ev = c.offload(timeout=15)
    h, got = hashlib.sha256(), 0
    while got < c.down:
        b = c.sock.recv(1 << 16)
        assert b
        h.update(b)
        got += len(b)
    t.join(30)
    c.finish()
    c.check(h.hexdigest())
    return ev


def test_data_during_the_freeze_undoes_it_then_gives_up(env):
    """Data keeps arriving while the legs are frozen: each freeze is undone, the agent relays
    the data itself, and after offload_retries undone freezes the proxy gets the connection
    back (busy) and carries on: the bytes are exact. On a loaded machine the trickling thread
    may stall longer than a freeze, which then succeeds (exact too): up to 3 attempts, of
    which one must give up."""
    outcomes = []
    for _ in range(3):
        before = flows(env)["stats"]
        ev = _trickle(env, 1.5)  # checks the bytes, whatever the outcome
        after = flows(env)["stats"]
        outcomes.append((ev["event"], ev.get("reason")))
        if ev["event"] == "refused" and ev["reason"] == "busy":
            break
    assert outcomes[-1] == ("refused", "busy"), outcomes
    assert ev["agent_up"] > 0, ev  # the agent relayed what came while draining
    assert after["bypass_freeze_retries"] - before["bypass_freeze_retries"] >= 1, after


def test_data_during_the_freeze_undoes_it_then_splices(env):
    """A short burst during the first freezes, then quiet: spliced after undone freezes."""
    before = flows(env)["stats"]
    ev = _trickle(env, 0.05)
    after = flows(env)["stats"]
    retries = after["bypass_freeze_retries"] - before["bypass_freeze_retries"]
    print("short burst:", ev["event"], ev.get("reason"), "undone freezes:", retries)
    assert retries >= 1
    assert ev["event"] == "accepted" or ev["reason"] == "busy", ev


def test_concurrent_offloads(env):
    n = 24
    clients = [Client(env, 512 << 10, 512 << 10) for _ in range(n)]
    evs = [c.offload(timeout=15) for c in clients]
    assert all(e["event"] == "accepted" for e in evs), [e for e in evs if e["event"] != "accepted"]
    listed = {f["client"] for f in flows(env)["flows"] if f["state"] == "spliced"}
    assert {c.addr for c in clients} <= listed
    p4 = agent_query(env["sock"], "export_p4")
    assert p4["result"] == "ok" and p4["p4"].count("table_add bypass_flows splice") >= 2 * n
    results = [None] * n

    def run(i):
        results[i] = clients[i].transfer()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c, sha in zip(clients, results):
        assert sha is not None
        c.finish()
        c.check(sha)
    for c in clients:
        wait_removed(env, c.addr, "fin", timeout=5)


def test_counters_reach_the_controller(env):
    """The agent's counters travel in its heartbeats: hermesctl stats shows what the agent's
    own socket says."""
    suite = env["suite"]
    c, _, _ = spliced_run(env, up=64 << 10, down=64 << 10)
    wait_removed(env, c.addr, "fin", timeout=5)
    mine = flows(env)["stats"]
    keys = ["bypass_offers", "bypass_accepted", "bypass_refused", "bypass_removed_fin",
            "bypass_active_flows", "bypass_offers_in_progress"]

    def same():
        rows = suite.ctl_json("stats", "--kind", "bypass")
        s = rows[0].get("stats") if rows else None
        return s if s and all(s.get(k) == mine[k] for k in keys) else None
    st = wait_for(same, 5, what="the agent's counters in hermesctl stats")
    assert st["bypass_accepted"] >= 1 and st["bypass_removed_fin"] >= 1
    assert st["bypass_active_flows"] == 0 and st["bypass_offers_in_progress"] == 0
    assert st["bypass_spliced_bytes"] > 128 << 10
    assert st["bypass_dp_dropped_segments"] == 0 and st["bypass_protocol_errors"] == 0
    assert st["bypass_refused"] == sum(v for k, v in st.items() if k.startswith("bypass_refused_"))


def tcp_rtt_ms(sock):
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104),
                              68)[0] / 1000


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN_DIR, "hermes-nfq-delay")),
                    reason="hermes-nfq-delay not built (libnetfilter_queue missing)")
def test_delay_ramp_towards_the_server_rtt(env):
    """The server is 60 ms away (a delay line in S on what arrives there): before the splice,
    the agent delays the client's segments in 20 ms steps (20, 40, 60), so the RTT the client
    sees grows while the agent still relays; then the splice takes over."""
    nfq = subprocess.Popen(["ip", "netns", "exec", NS_S, os.path.join(BIN_DIR, "hermes-nfq-delay"),
                            "--queue", "3", "--delay-ms", "60"],
                           stdout=subprocess.PIPE, text=True)
    rule = f"INPUT -p tcp -s {P2_ADDR} -j NFQUEUE --queue-num 3 --queue-bypass"
    try:
        assert nfq.stdout.readline().strip() == "ready"
        sh(f"ip netns exec {NS_S} iptables -w -A {rule}")
        before = flows(env)["stats"]
        c = Client(env, 1 << 20, 1 << 20)
        f = wait_for(lambda: (f := flow_of(env, c.addr)) and f["state"] == "ramping" and f, 5,
                     what="the flow ramping")
        assert f["delay_ms"]["target"] >= 60, f
        rtt_before = tcp_rtt_ms(c.sock)
        sha = c.transfer()  # relayed by the agent, the client's segments delayed
        rtt_ramped = tcp_rtt_ms(c.sock)
        ev = c.offload(timeout=15)
        assert ev["event"] == "accepted", ev
        after = flows(env)["stats"]
        assert after["bypass_delay_ramps"] == before["bypass_delay_ramps"] + 1, after
        assert after["bypass_delay_steps"] - before["bypass_delay_steps"] == 3, after
        assert after["bypass_delayed_packets"] > before["bypass_delayed_packets"], after
        print(f"client RTT: {rtt_before:.1f} ms before, {rtt_ramped:.1f} ms during the ramp")
        assert rtt_before < 10 and rtt_ramped >= 15
        # the flow's rule is gone from the delay chain
        rules = sh(f"ip netns exec {NS_P} iptables -w -t mangle -S HERMES-BYPASS").stdout
        assert "NFQUEUE" not in rules, rules
        c.finish()
        c.check(sha)
        wait_removed(env, c.addr, "fin", timeout=5)
    finally:
        sh(f"ip netns exec {NS_S} iptables -w -D {rule}", check=False)
        nfq.terminate()
        nfq.wait(5)


def tcp_unacked(sock):
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104),
                              24)[0]


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN_DIR, "hermes-nfq-delay")),
                    reason="hermes-nfq-delay not built (libnetfilter_queue missing)")
def test_segments_held_by_the_ramp_at_the_splice_go_into_it(env):
    """A client writing 8 KiB every 100 ms through a ramped flow with a 60 ms server leg is
    never quiet with the delay line empty (60 ms held, then 60 ms to the server), so the agent
    splices while some of its segments are held: they must go into the splice, not be dropped
    (which would cost the client a retransmission timeout, 200 ms or more) nor released to the
    host stack (an RST). Every write is acknowledged well within the timeout, and the bytes
    are exact."""
    nfq = subprocess.Popen(["ip", "netns", "exec", NS_S, os.path.join(BIN_DIR, "hermes-nfq-delay"),
                            "--queue", "4", "--delay-ms", "60"],
                           stdout=subprocess.PIPE, text=True)
    rule = f"INPUT -p tcp -s {P2_ADDR} -j NFQUEUE --queue-num 4 --queue-bypass"
    try:
        assert nfq.stdout.readline().strip() == "ready"
        sh(f"ip netns exec {NS_S} iptables -w -A {rule}")
        before = flows(env)["stats"]
        writes = 30
        c = Client(env, writes * 8192, 0)
        acked_ms = []
        for i in range(writes):
            t0 = time.monotonic()
            c.sock.sendall(c.data[i * 8192:(i + 1) * 8192])
            while tcp_unacked(c.sock) and time.monotonic() - t0 < 2:
                time.sleep(0.001)
            acked_ms.append((time.monotonic() - t0) * 1000)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
        ev = c.offload(timeout=5)
        after = flows(env)["stats"]
        injected = after["bypass_delayed_injected"] - before["bypass_delayed_injected"]
        print(f"write -> acked, ms: {[round(x) for x in acked_ms]}; injected {injected}")
        assert ev["event"] == "accepted", ev
        assert after["bypass_delay_ramps"] == before["bypass_delay_ramps"] + 1, after
        assert max(acked_ms) < 180, acked_ms  # below the 200 ms minimum retransmission timeout
        c.finish()
        c.check(hashlib.sha256(b"").hexdigest())  # nothing downstream; the upload exact
        wait_removed(env, c.addr, "fin", timeout=5)
    finally:
        sh(f"ip netns exec {NS_S} iptables -w -D {rule}", check=False)
        nfq.terminate()
        nfq.wait(5)


def test_hermesctl_lists_offloaded_flows_and_exports_p4_entries(env):
    """hermesctl bypass list / export-p4: the controller relays the question to the agent
    over its bus connection and returns its answer."""
    suite = env["suite"]
    c = Client(env, 64 << 10, 64 << 10, "cfin")
    ev = c.offload()
    assert ev["event"] == "accepted", ev
    rows = suite.ctl_json("bypass", "list")["answers"]
    assert len(rows) == 1 and "error" not in rows[0], rows
    flows = [f for f in rows[0]["result"]["flows"] if f["client"] == c.addr]
    assert flows and flows[0]["state"] == "spliced", rows
    _, table, _ = suite.ctl("bypass", "list")
    assert c.addr in table and "spliced" in table
    _, p4, _ = suite.ctl("bypass", "export-p4")
    lines = [l for l in p4.splitlines() if l.startswith("table_add bypass_flows splice ")]
    assert len(lines) >= 2, p4  # one entry per direction of the spliced flow
    assert suite.ctl_json("bypass", "stats")[0]["stats"]["bypass_accepted"] >= 1
    sha = c.transfer()
    c.finish()
    c.check(sha)
    wait_removed(env, c.addr, "fin", timeout=10)
