"""The ingress as a transparent TCP proxy, in network namespaces the test makes itself:

    client ns --veth-- router ns --veth-- server ns

The router forwards (ip_forward=1) and runs the Hermes suite (controller, policy engine,
ingress); an iptables nat PREROUTING rule there REDIRECTs TCP arriving from the client's veth
to the ingress's transparent port, which proxies each connection to its original destination
(SO_ORIGINAL_DST) after a policy decision; the same for IPv6 (ip6tables, one dual-stack
port). The client uses the server's address directly,
with no proxy settings. Checks: a download arrives byte-exact and the ingress logged the flow
(and the server saw the router, not the client, as its peer); a denied port gives the client
a reset and no data while the server sees nothing; concurrent transfers both ways (uploads,
downloads, echo streams) are byte-exact; every daemon is still up at the end; a connection
that reached the transparent port without REDIRECT is closed, not proxied to the ingress
itself (which once looped until it ran out of descriptors)."""
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import pytest

from hermes_harness import Suite, free_port, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = f"hermes-t-{os.getpid()}"
NS = {role: f"{PREFIX}-{role}" for role in ("client", "router", "server")}
# Addresses of our own test hosts, inside our own namespaces only.
CLIENT, ROUTER_C = "10.201.1.2", "10.201.1.1"  # client <-> router
SERVER, ROUTER_S = "10.201.2.2", "10.201.2.1"  # router <-> server
SERVER_NET = "10.201.2.0/24"
# The same hosts over IPv6 (unique local addresses), also only inside our namespaces.
CLIENT6, ROUTER_C6 = "fd00:201:1::2", "fd00:201:1::1"
SERVER6, ROUTER_S6 = "fd00:201:2::2", "fd00:201:2::1"
SERVER_NET6 = "fd00:201:2::/64"
HTTP_PORT, ECHO_PORT = 8080, 9000
FILE_SIZE = 4 * 1024 * 1024
CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def sh(*argv, check=True, timeout=15):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{' '.join(argv)} -> {r.returncode}: {r.stderr}"
    return r


def in_ns(role, *argv):
    return ["ip", "netns", "exec", NS[role], *argv]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def delete_namespaces():
    existing = sh("ip", "netns", "list", check=False).stdout
    for name in NS.values():
        if re.search(rf"^{re.escape(name)}(\s|$)", existing, re.M):
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The three namespaces, the REDIRECT rule, and the target server; all removed at the
    end, also when setting up fails half-way."""
    root = tmp_path_factory.mktemp("target")
    with open(root / "file.bin", "wb") as f:
        f.write(os.urandom(FILE_SIZE))
    server_log = tmp_path_factory.mktemp("target-log") / "server.log"
    tport = free_port()  # the ingress's transparent port, in the router ns
    procs = []
    try:
        for name in NS.values():
            sh("ip", "netns", "add", name)
        r, c, s = NS["router"], NS["client"], NS["server"]
        # veth pairs created directly inside the namespaces: nothing touches the host's
        sh("ip", "-n", r, "link", "add", "to-client", "type", "veth", "peer", "name", "to-router",
           "netns", c)
        sh("ip", "-n", r, "link", "add", "to-server", "type", "veth", "peer", "name", "to-router",
           "netns", s)
        for ns, dev, addr in ((r, "to-client", f"{ROUTER_C}/24"),
                              (r, "to-server", f"{ROUTER_S}/24"),
                              (c, "to-router", f"{CLIENT}/24"), (s, "to-router", f"{SERVER}/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for ns, dev, addr in ((r, "to-client", f"{ROUTER_C6}/64"),
                              (r, "to-server", f"{ROUTER_S6}/64"),
                              (c, "to-router", f"{CLIENT6}/64"), (s, "to-router", f"{SERVER6}/64")):
            sh("ip", "-n", ns, "-6", "addr", "add", addr, "dev", dev, "nodad")
        for ns in (r, c, s):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", c, "route", "add", "default", "via", ROUTER_C)
        sh("ip", "-n", s, "route", "add", "default", "via", ROUTER_S)
        sh("ip", "-n", c, "-6", "route", "add", "default", "via", ROUTER_C6)
        sh("ip", "-n", s, "-6", "route", "add", "default", "via", ROUTER_S6)
        sh(*in_ns("router", "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        sh(*in_ns("router", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"))
        for tables in ("iptables", "ip6tables"):  # one dual-stack port takes both
            sh(*in_ns("router", tables, "-t", "nat", "-A", "PREROUTING", "-i", "to-client",
                      "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(tport)))
        log = open(server_log, "ab")
        for addr in (SERVER, SERVER6):
            procs.append(subprocess.Popen(
                in_ns("server", sys.executable, os.path.join(HERE, "target.py"), addr,
                      str(HTTP_PORT), str(ECHO_PORT), str(root)),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        log.close()
        wait_for(lambda: server_log.read_text().count("ready") == 2, 10,
                 what="target servers (IPv4 and IPv6)")
        yield {"root": root, "digest": sha256_file(root / "file.bin"), "tport": tport,
               "server_log": server_log}
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        delete_namespaces()


@pytest.fixture
def suite(net):
    """The Hermes suite in the router namespace, the ingress's transparent port on every
    address of the router, IPv4 and IPv6 (where REDIRECT sends the client's connections)."""
    s = Suite(netns=NS["router"])
    try:
        s.start_controller()
        s.start_service("policy")
        s.start_service("ingress", extra=("--transparent-listen", f"[::]:{net['tport']}",
                                          "--connect-timeout-ms", "2000"))
        wait_for(lambda: "ingress listening" in s.daemons["ingress-1"].log_text(), 10,
                 what="ingress listening")
        yield s
        s.check_health()
    finally:
        for name, d in s.daemons.items():  # shown by pytest only when the test fails
            print(f"----- log of {name} -----\n{d.log_text()[-6000:]}")
        print(f"----- log of the target -----\n{net['server_log'].read_text()[-3000:]}")
        s.cleanup()


def set_policy(s, *docs):
    for d in docs:
        s.ctl("policy", "add", "-", input=json.dumps(d))
    s.wait_converged(expect=2, timeout=5)


ALLOW_SERVER = {"id": "servers", "priority": 100, "action": "allow",
                "match": {"dst": [SERVER_NET]}}


def client_curl(*args, timeout=30):
    """curl in the client namespace, straight to the server's address: no proxy settings."""
    return subprocess.run(in_ns("client", "curl", "-sS", "--noproxy", "*", "--max-time",
                                str(timeout - 5), *args),
                          capture_output=True, timeout=timeout, env=CLEAN_ENV)


def flows(s, port):
    """(up, down, end) of every 'flow done' line of the ingress for client -> SERVER:port."""
    pat = re.compile(rf"flow done client={re.escape(CLIENT)} target={re.escape(SERVER)}:{port} "
                     r"via=direct up=(\d+) down=(\d+) (\S+)")
    return [(int(m[1]), int(m[2]), m[3])
            for m in pat.finditer(s.daemons["ingress-1"].log_text())]


def test_download_goes_through_the_transparent_proxy_byte_exact(suite, net, tmp_path):
    s = suite
    set_policy(s, ALLOW_SERVER)
    out = tmp_path / "file.bin"
    r = client_curl("-o", str(out), f"http://{SERVER}:{HTTP_PORT}/file.bin")
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == FILE_SIZE
    assert sha256_file(out) == net["digest"]
    # the ingress carried it: its log names the client, the original destination, direct
    done = wait_for(lambda: flows(s, HTTP_PORT), 5, what="the ingress's flow done line")
    assert len(done) == 1, done
    up, down, end = done[0]
    assert down > FILE_SIZE and up > 0 and end == "clean", done
    # and the server's peer was the router (the proxy's own connection), never the client
    log = net["server_log"].read_text()
    assert f"{ROUTER_S} - - \"GET /file.bin HTTP/1.1\" 200" in log, log
    assert CLIENT not in log, log


def test_denied_port_resets_the_client_and_the_server_sees_nothing(suite, net):
    s = suite
    s.allow_error(r"denied client=")  # info lines, but keep the check honest
    set_policy(s, {"id": "no-web", "priority": 10, "action": "deny",
                   "match": {"ports": [str(HTTP_PORT)]}}, ALLOW_SERVER)
    before = net["server_log"].read_text()
    r = client_curl(f"http://{SERVER}:{HTTP_PORT}/file.bin", timeout=15)
    # reset (56, "Recv failure") or closed (52, "Empty reply"): no data either way
    assert r.returncode in (52, 56), (r.returncode, r.stderr)
    assert r.stdout == b""
    log = s.daemons["ingress-1"].log_text()
    assert re.search(rf"denied client={re.escape(CLIENT)} target={re.escape(SERVER)}:{HTTP_PORT} "
                     r"rule=no-web ", log), log
    assert not flows(s, HTTP_PORT)
    # a raw client: the handshake is answered (by the ingress, in the router), then a reset
    # without a byte; the reset may even beat connect()'s return now that the decision is
    # cached
    raw = subprocess.run(in_ns("client", sys.executable, "-c", f"""
import socket
try:
    c = socket.create_connection(({SERVER!r}, {HTTP_PORT}), timeout=10)
    c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    print("data" if c.recv(100) else "closed")
except (ConnectionResetError, BrokenPipeError):
    print("reset")
"""), capture_output=True, text=True, timeout=20)
    assert raw.stdout.strip() in ("reset", "closed"), (raw.stdout, raw.stderr)
    time.sleep(0.3)  # anything the server might still receive would be logged by now
    assert net["server_log"].read_text() == before, "the server saw a connection"
    # the other port is still allowed
    echo = subprocess.run(in_ns("client", sys.executable, os.path.join(HERE, "echo_client.py"),
                                SERVER, str(ECHO_PORT), "100000", "7"),
                          capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, (echo.stdout, echo.stderr)


def test_ipv6_flows_go_through_the_same_transparent_port(suite, net, tmp_path):
    """The client reaches the server by its IPv6 address: ip6tables REDIRECTs it to the same
    dual-stack port, the ingress finds the original destination (IP6T_SO_ORIGINAL_DST) and
    proxies it byte-exact; a policy on an IPv6 prefix decides it; and an echo stream over IPv6
    comes back whole."""
    s = suite
    s.allow_error(r"denied client=")
    set_policy(s, {"id": "servers6", "priority": 100, "action": "allow",
                   "match": {"dst": [SERVER_NET6]}})
    out = tmp_path / "file6.bin"
    r = client_curl("-g", "-o", str(out), f"http://[{SERVER6}]:{HTTP_PORT}/file.bin")
    assert r.returncode == 0, r.stderr
    assert sha256_file(out) == net["digest"]
    pat = re.compile(rf"flow done client={re.escape(CLIENT6)} "
                     rf"target=\[{re.escape(SERVER6)}\]:{HTTP_PORT} via=direct up=\d+ "
                     r"down=(\d+) clean")
    done = wait_for(lambda: pat.findall(s.daemons["ingress-1"].log_text()), 5,
                    what="the ingress's IPv6 flow done line")
    assert int(done[0]) > FILE_SIZE, done
    log = net["server_log"].read_text()
    assert f"{ROUTER_S6} - - \"GET /file.bin HTTP/1.1\" 200" in log, log[-2000:]
    assert CLIENT6 not in log, log[-2000:]
    echo = subprocess.run(in_ns("client", sys.executable, os.path.join(HERE, "echo_client.py"),
                                SERVER6, str(ECHO_PORT), "100000", "3"),
                          capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, (echo.stdout, echo.stderr)
    # a deny on the IPv6 prefix: no data, and the rule in the log
    set_policy(s, {"id": "no-v6-web", "priority": 10, "action": "deny",
                   "match": {"dst": [SERVER_NET6], "ports": [str(HTTP_PORT)]}})
    r = client_curl("-g", f"http://[{SERVER6}]:{HTTP_PORT}/file.bin", timeout=15)
    assert r.returncode in (52, 56) and r.stdout == b"", (r.returncode, r.stderr)
    assert re.search(rf"denied client={re.escape(CLIENT6)} target=\[{re.escape(SERVER6)}\]:"
                     rf"{HTTP_PORT} rule=no-v6-web ", s.daemons["ingress-1"].log_text())


def test_concurrent_transfers_both_ways_are_byte_exact(suite, net, tmp_path):
    s = suite
    set_policy(s, ALLOW_SERVER)
    uploads = []
    for i in range(3):
        p = tmp_path / f"up{i}.bin"
        p.write_bytes(os.urandom(2 * 1024 * 1024 + i * 4099))
        uploads.append((p, sha256_file(p)))
    procs = []
    for i in range(3):
        procs.append(("get", i, subprocess.Popen(
            in_ns("client", "curl", "-sS", "--noproxy", "*", "--max-time", "30", "-o",
                  str(tmp_path / f"down{i}.bin"), f"http://{SERVER}:{HTTP_PORT}/file.bin"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CLEAN_ENV)))
    for i, (p, _) in enumerate(uploads):
        procs.append(("put", i, subprocess.Popen(
            in_ns("client", "curl", "-sS", "--noproxy", "*", "--max-time", "30", "-H", "Expect:",
                  "-T", str(p), f"http://{SERVER}:{HTTP_PORT}/up{i}.bin"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CLEAN_ENV)))
    for i in range(2):
        procs.append(("echo", i, subprocess.Popen(
            in_ns("client", sys.executable, os.path.join(HERE, "echo_client.py"), SERVER,
                  str(ECHO_PORT), str(3 * 1024 * 1024 + i), str(i)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    results = {}
    try:
        for kind, i, p in procs:
            out, err = p.communicate(timeout=40)
            results[(kind, i)] = (p.returncode, out, err)
    finally:
        for _, _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    for (kind, i), (rc, out, err) in results.items():
        assert rc == 0, (kind, i, rc, out, err)
        if kind == "get":
            assert sha256_file(tmp_path / f"down{i}.bin") == net["digest"], (kind, i)
        elif kind == "put":
            p, digest = uploads[i]
            assert out.decode().split() == [digest, str(p.stat().st_size)], (kind, i, out)
            assert sha256_file(net["root"] / "up" / f"up{i}.bin") == digest
        else:
            assert json.loads(out)["exact"], out
    # all of it went through the ingress, each flow closed cleanly
    http = wait_for(lambda: (f := flows(s, HTTP_PORT)) and len(f) >= 6 and f, 5,
                    what="6 http flows logged")
    echo = wait_for(lambda: (f := flows(s, ECHO_PORT)) and len(f) >= 2 and f, 5,
                    what="2 echo flows logged")
    assert len(http) == 6 and len(echo) == 2, (http, echo)
    assert all(end == "clean" for _, _, end in http + echo), (http, echo)
    assert len([1 for _, down, _ in http if down > FILE_SIZE]) == 3, http  # the downloads
    assert sorted(up for up, _, _ in http if up > 2 * 1024 * 1024)[0] > \
        uploads[0][0].stat().st_size, http  # and the uploads
    assert len([1 for up, _, _ in http if up > 2 * 1024 * 1024]) == 3, http
    assert sorted((u, d) for u, d, _ in echo) == [(3 * 1024 * 1024, 3 * 1024 * 1024),
                                                   (3 * 1024 * 1024 + 1, 3 * 1024 * 1024 + 1)]
    # the server saw only the router as its peer
    log = net["server_log"].read_text()
    assert CLIENT not in log
    assert log.count(f"conn {ROUTER_S}") >= 8


def test_a_connection_that_was_not_redirected_is_not_proxied_to_the_ingress_itself(suite, net):
    s = suite
    set_policy(s, {"id": "all", "priority": 1000, "action": "allow"})
    # from the server's side: no REDIRECT rule matches, yet conntrack knows the connection,
    # so SO_ORIGINAL_DST answers with the transparent listener's own address
    probe = subprocess.run(in_ns("server", sys.executable, "-c", f"""
import socket
try:
    c = socket.create_connection(({ROUTER_C!r}, {net['tport']}), timeout=5)
    c.sendall(b"hello")
    print("data" if c.recv(100) else "closed")
except (ConnectionResetError, BrokenPipeError):
    print("reset")
except OSError as e:
    print("error", e)
"""), capture_output=True, text=True, timeout=20)
    assert probe.stdout.strip() in ("reset", "closed"), (probe.stdout, probe.stderr)
    time.sleep(1)
    # the ingress keeps serving redirected clients
    echo = subprocess.run(in_ns("client", sys.executable, os.path.join(HERE, "echo_client.py"),
                                SERVER, str(ECHO_PORT), "100000", "3"),
                          capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, (echo.stdout, echo.stderr)
    log = s.daemons["ingress-1"].log_text()
    to_itself = log.count(f"target={ROUTER_C}:{net['tport']} ")
    assert to_itself == 0, f"{to_itself} flows from the ingress to its own transparent port"


def hello_through(name):
    """From the client namespace: a real ClientHello for name (Python's ssl, through a memory
    BIO) sent to the server's echo port; what came back: "echoed" (the echo server got it, so
    the proxy let it through), "alert N" (a TLS alert record with description N, e.g. 49
    access_denied), "reset" or "closed"."""
    r = subprocess.run(in_ns("client", sys.executable, "-c", f"""
import socket, ssl
out = ssl.MemoryBIO()
tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out, server_hostname={name!r})
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
try:
    c = socket.create_connection(({SERVER!r}, {ECHO_PORT}), timeout=10)
    c.sendall(hello)
    got = b""
    while len(got) < len(hello):
        chunk = c.recv(65536)
        if not chunk:
            break
        got += chunk
    if got == hello:
        print("echoed")
    elif len(got) >= 7 and got[:6] == bytes([21, 3, 3, 0, 2, 2]):
        print("alert", got[6])
    else:
        print("closed")
except (ConnectionResetError, BrokenPipeError):
    print("reset")
"""), capture_output=True, text=True, timeout=20)
    return r.stdout.strip() or r.stderr


def test_the_policy_reads_the_server_name_of_a_transparent_tls_flow(suite, net):
    """A transparent flow has only an address; with a policy that names TLS server names, the
    ingress reads the client's ClientHello before it decides: a denied name is answered with
    a TLS access_denied alert before the server sees a connection, another name reaches the server with its ClientHello
    intact, and a flow whose client speaks no TLS is decided without a name."""
    s = suite
    s.allow_error(r"denied client=")
    set_policy(s, {"id": "no-secret-names", "priority": 10, "action": "deny",
                   "match": {"sni": ["*.secret.example"]}}, ALLOW_SERVER)
    before = net["server_log"].read_text().count("echo conn")
    assert hello_through("www.secret.example") == "alert 49"  # access_denied, in the clear
    log = s.daemons["ingress-1"].log_text()
    assert re.search(rf"denied client={re.escape(CLIENT)} target={re.escape(SERVER)}:{ECHO_PORT} "
                     r"sni=www\.secret\.example rule=no-secret-names", log), log
    time.sleep(0.3)
    assert net["server_log"].read_text().count("echo conn") == before, "the server saw it"
    assert hello_through("www.open.example") == "echoed"
    echo = subprocess.run(in_ns("client", sys.executable, os.path.join(HERE, "echo_client.py"),
                                SERVER, str(ECHO_PORT), "100000", "3"),
                          capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, (echo.stdout, echo.stderr)
