"""The data path with real processes and curl as the client: CONNECT through the ingress
direct, through one relay and through two (ingress -> relay -> relay -> target), over the
HTTP/1.1 and the HTTP/2 proxy ports; policy decisions; bad input answered clearly while
other clients keep being served."""
import hashlib
import http.client
import json
import os
import re
import signal
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

from hermes_harness import free_port, wait_for

BIG = 100 * 1024 * 1024
HERE = os.path.dirname(__file__)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """A plain HTTP server with a 100 MiB file, and a TLS server with its own self-signed
    certificate (the client checks it through the tunnel: end-to-end TLS)."""
    root = tmp_path_factory.mktemp("www")
    with open(root / "big.bin", "wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
    (root / "hello.txt").write_text("hello through hermes\n")
    digest = sha256_file(root / "big.bin")
    http_port, tls_port = free_port(), free_port()
    origin_log = open(root / "origin.log", "w")
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "http_origin.py"),
                               str(http_port), str(root)],
                              stdout=subprocess.DEVNULL, stderr=origin_log)]
    cert, key = root / "target.crt", root / "target.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True, timeout=30)
    procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "tls_target.py"),
                                   str(tls_port), str(cert), str(key), str(root)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for port in (http_port, tls_port):
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10,
                 what=f"target on {port}")
    yield {"http": http_port, "tls": tls_port, "root": root, "digest": digest, "cert": cert,
           "origin_log": root / "origin.log"}
    for p in procs:
        p.terminate()
        p.wait(5)
    origin_log.close()


@pytest.fixture
def overlay(suite, targets):
    """controller, policy engine, ingress (node edge), relays on nodes core and far;
    links edge -> core -> far. The proxies trust the TLS target's certificate for https://
    URLs that they fetch themselves."""
    s = suite
    s.start_controller()
    s.start_service("policy")
    ca = ("--origin-ca-file", str(targets["cert"]))
    s.start_service("ingress", extra=("--node", "edge", "--connect-timeout-ms", "2000", *ca))
    s.start_service("relay", "relay-core", extra=("--node", "core", *ca))
    s.start_service("relay", "relay-far", extra=("--node", "far", *ca))
    for relay in ("relay-core", "relay-far"):  # listening before the routes name them
        wait_for(lambda: "relay listening on" in s.daemons[relay].log_text(), 10,
                 what=f"{relay} listening")
    s.ctl("node", "add", "edge")
    s.ctl("node", "add", "core", "--address", f"127.0.0.1:{s.port('relay-core', 'tunnel')}")
    s.ctl("node", "add", "far", "--address", f"127.0.0.1:{s.port('relay-far', 'tunnel')}")
    s.ctl("link", "add", "edge", "core")
    s.ctl("link", "add", "core", "far")
    s.http = f"http://127.0.0.1:{s.port('ingress-1', 'http')}"
    s.h2 = f"https://127.0.0.1:{s.port('ingress-1', 'h2')}"
    s.ca = os.path.join(s.keys, "tls", "ca.crt")
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", s.port("ingress-1", "http"))) == 0,
             10, what="ingress listening")
    return s


def set_policy(s, *docs):
    for d in docs:
        s.ctl("policy", "add", "-", input=json.dumps(d))
    s.wait_converged(expect=len([d for d in s.daemons.values() if d.alive()]) - 1, timeout=5)


MODES = {
    "direct": {"id": "all", "priority": 1000, "action": "allow"},
    "one-relay": {"id": "all", "priority": 1000, "action": "route", "route": "core"},
    "two-relays": {"id": "all", "priority": 1000, "action": "route", "route": "far"},
}


def curl(*args, timeout=120):
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout - 5), *args],
                          capture_output=True, timeout=timeout)


def proxy_args(s, front):
    if front == "h1":
        return ["-x", s.http]
    return ["--proxy-http2", "-x", s.h2, "--proxy-cacert", s.ca]


@pytest.mark.parametrize("front", ["h1", "h2"])
@pytest.mark.parametrize("mode", list(MODES))
def test_100_mib_and_https_arrive_exactly(overlay, targets, tmp_path, mode, front):
    s = overlay
    set_policy(s, MODES[mode])
    out = tmp_path / "big.bin"
    r = curl(*proxy_args(s, front), "-p", f"http://127.0.0.1:{targets['http']}/big.bin", "-o",
             str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == BIG
    assert sha256_file(out) == targets["digest"]
    # HTTPS through CONNECT: the client's TLS session reaches the target untouched
    r = curl(*proxy_args(s, front), "--cacert", str(targets["cert"]),
             f"https://localhost:{targets['tls']}/hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello over end-to-end TLS\n"
    # the path really crossed the relays this mode names
    relays = {"direct": [], "one-relay": ["relay-core"], "two-relays": ["relay-core", "relay-far"]}
    done = f"tunnel done target=127.0.0.1:{targets['http']}"
    for name in relays[mode]:  # an access line may follow the flow's last bytes by a loop turn
        wait_for(lambda: done in s.daemons[name].log_text(), 5, what=f"{name}'s tunnel done line")
    for name in ("relay-core", "relay-far"):
        assert (done in s.daemons[name].log_text()) == (name in relays[mode]), (name, mode)


@pytest.mark.parametrize("front", ["h1", "h2"])
@pytest.mark.parametrize("mode", ["direct", "one-relay"])
def test_policy_reads_the_tls_server_name(overlay, targets, mode, front):
    """A policy with an sni condition: the ingress answers the CONNECT, reads the client's
    ClientHello and asks again with its server name. A name the policy denies gets a TLS
    access_denied alert in its tunnel (and the deny is logged with the name and the rule), a
    target that cannot be reached an internal_error alert; another name, and a tunnel that
    carries no TLS at all, go through at once."""
    s = overlay
    s.allow_error(r"denied client=")
    set_policy(s, MODES[mode], {"id": "no-secret-names", "priority": 10, "action": "deny",
                                "match": {"sni": ["*.secret.example"]}})
    tls = targets["tls"]
    # the CONNECT names localhost; the TLS inside asks for www.secret.example
    r = curl(*proxy_args(s, front), "-k", "--connect-to", f"www.secret.example:443:localhost:{tls}",
             "https://www.secret.example/hello", timeout=20)
    assert r.returncode == 35 and b"alert access denied" in r.stderr, (r.returncode, r.stderr)
    log = s.daemons["ingress-1"].log_text()
    assert re.search(rf"denied client=127\.0\.0\.1 target=localhost:{tls} "
                     r"sni=www\.secret\.example rule=no-secret-names", log), log[-2000:]
    # a name the policy allows, to a port where nothing listens: the 502 a client in TLS
    # can read is an alert
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    r = curl(*proxy_args(s, front), "-k", "--connect-to",
             f"www.open.example:443:127.0.0.1:{closed_port}", "https://www.open.example/",
             timeout=20)
    assert r.returncode == 35 and b"alert internal error" in r.stderr, (r.returncode, r.stderr)
    # the same target asked by its own name
    r = curl(*proxy_args(s, front), "--cacert", str(targets["cert"]),
             f"https://localhost:{tls}/hello")
    assert r.returncode == 0 and r.stdout == b"hello over end-to-end TLS\n", r.stderr
    # a name the rule's glob does not cover (the certificate does not name it: -k)
    r = curl(*proxy_args(s, front), "-k", "--connect-to", f"secret.example:443:localhost:{tls}",
             "https://secret.example/hello")
    assert r.returncode == 0 and r.stdout == b"hello over end-to-end TLS\n", r.stderr
    # plain HTTP in the tunnel: its first bytes are no ClientHello, so it is decided at once
    t0 = time.monotonic()
    r = curl(*proxy_args(s, front), "-p", f"http://127.0.0.1:{targets['http']}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr
    assert time.monotonic() - t0 < 2.0
    exit_relay = {"direct": None, "one-relay": "relay-core"}[mode]
    if exit_relay:  # the allowed ones crossed the overlay
        done = f"tunnel done target=localhost:{tls}"
        wait_for(lambda: done in s.daemons[exit_relay].log_text(), 5,
                 what=f"{exit_relay}'s tunnel done line")


def test_an_https_url_the_proxy_fetches_is_decided_by_its_name_as_sni(overlay, targets):
    """GET https://NAME/ handed to the proxy: the TLS with the origin is the proxy's, and it
    asks for NAME, so an sni condition sees NAME (both proxy ports); http:// is no TLS."""
    s = overlay
    s.allow_error(r"denied client=")
    set_policy(s, MODES["direct"], {"id": "no-tls-to-localhost", "priority": 10,
                                    "action": "deny", "match": {"sni": ["localhost"]}})
    url = f"https://localhost:{targets['tls']}/hello"
    [(status, why)] = https_via_proxy(s.port("ingress-1", "http"), [url])
    assert status == 403 and b"no-tls-to-localhost" in why, (status, why)
    [(status, why)] = h2_proxy_get(s, [url])
    assert status == 403 and b"no-tls-to-localhost" in why, (status, why)
    assert h2_proxy_get(s, [f"http://localhost:{targets['http']}/hello.txt"]) == \
        [(200, b"hello through hermes\n")]


@pytest.mark.parametrize("front", ["h1", "h2"])
def test_a_dst_policy_holds_for_a_name_by_its_address(overlay, targets, front):
    """A policy on destination addresses holds for a destination given by name: the
    ingress resolves the name when the engine says the address matters, and asks again with
    it (CONNECT, plain requests and https:// URLs alike). A name that resolves elsewhere is
    not caught; one that cannot be resolved is decided as a name and answered 502."""
    s = overlay
    s.allow_error(r"denied client=")
    set_policy(s, MODES["direct"], {"id": "no-loopback", "priority": 10, "action": "deny",
                                    "match": {"dst": ["127.0.0.0/8"]}})
    for url in (f"http://localhost:{targets['tls']}/", f"https://localhost:{targets['tls']}/"):
        r = curl(*proxy_args(s, front), "-p", "-k", "-o", "/dev/null", "-w", "%{http_connect}",
                 url)
        # curl 8.14 reports the status of a refused HTTP/2 tunnel as 000 (its own limit)
        assert r.returncode != 0 and r.stdout == (b"403" if front == "h1" else b"000"), \
            (url, r.stdout, r.stderr)
    log = s.daemons["ingress-1"].log_text()
    assert f"denied client=127.0.0.1 target=localhost:{targets['tls']} rule=no-loopback" in log
    r = curl(*proxy_args(s, front), "-D", "-", f"http://localhost:{targets['http']}/hello.txt")
    assert re.match(rb"HTTP/[12](\.1)? 403", r.stdout) and b"no-loopback" in r.stdout, r.stdout
    log = s.daemons["ingress-1"].log_text()
    assert f"denied client=127.0.0.1 target=localhost:{targets['http']} rule=no-loopback" in log
    # a name that cannot be resolved: decided as a name, then the dial says why (a .invalid
    # name fails without a query to a name server: RFC 6761)
    before = dns_counters(s, "ingress-1", "ingress")
    r = curl(*proxy_args(s, front), "-D", "-", "http://no-such-host.invalid/")
    assert re.match(rb"HTTP/[12](\.1)? 502", r.stdout), r.stdout
    assert b".invalid names never resolve" in r.stdout, r.stdout
    assert dns_counters(s, "ingress-1", "ingress")["lookups"] == before["lookups"]
    # the same policy for another network lets localhost through
    s.ctl("policy", "del", "no-loopback")
    set_policy(s, {"id": "no-ten", "priority": 10, "action": "deny",
                   "match": {"dst": ["10.0.0.0/8"]}})
    r = curl(*proxy_args(s, front), "-p", f"http://localhost:{targets['http']}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr
    # a plain request is sent to the very address the policy checked: the name is resolved
    # once (for the policy), not again for the dial
    before = dns_counters(s, "ingress-1", "ingress")
    r = curl(*proxy_args(s, front), f"http://localhost:{targets['http']}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr
    after = dns_counters(s, "ingress-1", "ingress")
    asked = sum(after[k] - before[k] for k in ("lookups", "cached", "joined"))
    assert asked == 1, (before, after)


@pytest.fixture
def v6_origin(targets):
    """The plain HTTP origin again, listening on ::1 only."""
    port = free_port()
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "http_origin.py"), str(port),
                          str(targets["root"]), "::1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_for(lambda: socket.socket(socket.AF_INET6).connect_ex(("::1", port)) == 0, 10,
             what="the origin on [::1]")
    yield port
    p.terminate()
    p.wait(5)


@pytest.mark.parametrize("front", ["h1", "h2"])
@pytest.mark.parametrize("mode", ["direct", "one-relay"])
def test_ipv6_targets(overlay, targets, v6_origin, mode, front):
    """A target at an IPv6 address ([::1]:PORT), in a CONNECT tunnel and as a plain request,
    direct and through a relay; a dst policy on an IPv6 prefix holds for it."""
    s = overlay
    s.allow_error(r"denied client=")
    set_policy(s, MODES[mode])
    url = f"http://[::1]:{v6_origin}/hello.txt"
    for tunnel in (["-p"], []):
        r = curl(*proxy_args(s, front), *tunnel, url)
        assert r.returncode == 0 and r.stdout == b"hello through hermes\n", (tunnel, r.stderr)
    set_policy(s, {"id": "no-v6-loopback", "priority": 10, "action": "deny",
                   "match": {"dst": ["::1/128"]}})
    r = curl(*proxy_args(s, front), "-D", "-", url)
    assert re.match(rb"HTTP/[12](\.1)? 403", r.stdout) and b"no-v6-loopback" in r.stdout, r.stdout
    r = curl(*proxy_args(s, front), "-p", "-o", "/dev/null", "-w", "%{http_connect}", url)
    assert r.returncode != 0 and r.stdout == (b"403" if front == "h1" else b"000"), r.stdout
    log = s.daemons["ingress-1"].log_text()
    assert f"target=[::1]:{v6_origin} rule=no-v6-loopback" in log, log[-1500:]


def counters(s, instance, prefix, names):
    """A daemon's counters hermes_PREFIX_NAME, from its metrics port."""
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{s.port(instance, 'metrics')}/metrics", timeout=5).read().decode()
    out = {}
    for what in names:
        m = re.search(rf"^hermes_{prefix}_{what}{{[^}}]*}} (\d+)$", text, re.M)
        assert m, (what, text)
        out[what] = int(m.group(1))
    return out


def dns_counters(s, instance, kind):
    """The resolver's counters of a daemon."""
    return counters(s, instance, f"{kind}_dns",
                    ("lookups", "cached", "joined", "names", "threads", "demoted"))


def pool_counters(s, instance, kind):
    """The counters of a daemon's pools of connections to next hops."""
    return counters(s, instance, f"{kind}_pool", ("connections", "failed"))


def test_a_name_is_looked_up_once_for_many_flows(overlay, targets):
    """Twenty flows at once to a name, through the ingress alone and through a relay (which
    resolves the name it terminates): one lookup each at most, the other flows answered
    from the lookup in progress or the cache; every flow gets its body."""
    s = overlay
    url = f"http://localhost:{targets['http']}/hello.txt"
    for mode, instance, kind in (("direct", "ingress-1", "ingress"),
                                 ("one-relay", "relay-core", "relay")):
        set_policy(s, MODES[mode])
        before = dns_counters(s, instance, kind)
        procs = [subprocess.Popen(["curl", "-sS", "--max-time", "20", "-x", s.http, "-p", url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(20)]
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0 and out == b"hello through hermes\n", (mode, err)
        after = dns_counters(s, instance, kind)
        # localhost may still be kept from an earlier test (then no lookup at all)
        assert after["lookups"] - before["lookups"] <= 1, (mode, before, after)
        shared = (after["cached"] - before["cached"]) + (after["joined"] - before["joined"])
        assert shared >= 19, (mode, before, after)
        assert after["names"] >= 1 and after["threads"] <= 4, (mode, after)


def test_a_client_silent_after_its_connect_is_decided_without_a_name(overlay, targets):
    """While the decision waits for a ClientHello, a client that sends nothing (a protocol
    where the server speaks first, like SMTP) is decided without a name once sni_wait_ms has
    passed (3 s by default): the target is reached then, and its banner comes through."""
    s = overlay
    set_policy(s, MODES["direct"], {"id": "no-secret-names", "priority": 10, "action": "deny",
                                    "match": {"sni": ["*.secret.example"]}})
    with socket.socket() as server, \
            socket.create_connection(("127.0.0.1", s.port("ingress-1", "http")), timeout=10) as c:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(10)
        t0 = time.monotonic()
        c.sendall(f"CONNECT 127.0.0.1:{server.getsockname()[1]} HTTP/1.1\r\n\r\n".encode())
        assert c.recv(4096) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        conn, _ = server.accept()
        took = time.monotonic() - t0
        with conn:
            assert 2.5 < took < 5.0, took
            conn.sendall(b"220 server speaks first\r\n")
            assert c.recv(4096) == b"220 server speaks first\r\n"
            c.sendall(b"QUIT\r\n")
            assert conn.recv(4096) == b"QUIT\r\n"


def raw_request(port, data, read=True):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        if not read:
            return b""
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        return out


def open_tunnel(port, target_port):
    """A CONNECT tunnel through the HTTP/1.1 port, answered 200."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n\r\n".encode())
    assert c.recv(4096).startswith(b"HTTP/1.1 200")
    return c


def last_request(tunnel):
    """GET /hello.txt over an open tunnel to the HTTP origin, with Connection: close; returns
    all that comes back, and closes the tunnel."""
    tunnel.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := tunnel.recv(65536):
        data += chunk
    tunnel.close()
    return data


def test_policy_allows_denies_and_logs_the_rule(overlay, targets):
    s = overlay
    s.allow_error(r"denied client=")  # info lines, but keep the check honest
    set_policy(s, {"id": "no-low-ports", "priority": 10, "action": "deny",
                   "match": {"ports": ["1-1023"]}},
               {"id": "web", "priority": 20, "action": "allow",
                "match": {"dst": ["127.0.0.0/8"]}})
    ok = curl("-x", s.http, "-p", f"http://127.0.0.1:{targets['http']}/hello.txt")
    assert ok.returncode == 0 and ok.stdout == b"hello through hermes\n"
    port = s.port("ingress-1", "http")
    resp = raw_request(port, b"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 403 "), resp
    assert b"no-low-ports" in resp
    log = s.daemons["ingress-1"].log_text()
    assert "denied client=127.0.0.1 target=127.0.0.1:25 rule=no-low-ports" in log
    # nothing matches an outside address: default deny, no open proxy
    resp = raw_request(port, b"CONNECT example.com:8443 HTTP/1.1\r\nHost: example.com:8443\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 403 ") and b"no rule matched" in resp
    # every deny is counted: in hermesctl stats (from heartbeats) and on the metrics port
    def counters():
        rows = s.ctl_json("stats", "--kind", "ingress")
        return rows[0]["stats"] if rows and rows[0]["stats"].get("ingress_denied") == 2 else None
    stats = wait_for(counters, 5, what="the ingress's counters in hermesctl stats")
    assert stats["ingress_flows"] >= 3 and stats["ingress_flows_direct"] >= 1
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{s.port('ingress-1', 'metrics')}/metrics", timeout=5).read().decode()
    assert 'hermes_ingress_denied{kind="ingress",instance="ingress-1"} 2' in text, text


def test_policy_change_applies_to_new_flows_while_an_old_tunnel_keeps_flowing(overlay, targets):
    s = overlay
    set_policy(s, MODES["one-relay"])
    port = s.port("ingress-1", "http")
    c = open_tunnel(port, targets["http"])
    set_policy(s, {"id": "all", "priority": 1000, "action": "deny"})
    # new flows are refused now...
    resp = raw_request(port, f"CONNECT 127.0.0.1:{targets['http']} HTTP/1.1\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 403 ")
    # ...while the tunnel opened before still carries requests
    data = last_request(c)
    assert data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200"), data[:100]
    assert data.endswith(b"hello through hermes\n")


def test_bad_input_is_answered_clearly(overlay, targets):
    s = overlay
    set_policy(s, MODES["direct"])
    port = s.port("ingress-1", "http")
    assert raw_request(port, b"HELLO THERE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    big_head = b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 8000 + b"\r\n"
    assert raw_request(port, big_head * 1 + (b"X-More: " + b"b" * 8000 + b"\r\n") * 9
                       + b"\r\n").startswith(b"HTTP/1.1 431 ")
    closed = free_port()
    t0 = time.monotonic()
    resp = raw_request(port, f"CONNECT 127.0.0.1:{closed} HTTP/1.1\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 502 ") and b"Connection refused" in resp
    assert time.monotonic() - t0 < 2.5
    # a relay that does not answer: 502, and the ingress says which
    s.allow_error(r"cannot reach next hop")
    s.ctl("node", "add", "ghost", "--address", f"127.0.0.1:{free_port()}")
    s.ctl("link", "add", "edge", "ghost")
    set_policy(s, {"id": "all", "priority": 1000, "action": "route", "route": "ghost"})
    resp = raw_request(port, f"CONNECT 127.0.0.1:{targets['http']} HTTP/1.1\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 502 ") and b"relay 127.0.0.1:" in resp
    assert "cannot reach next hop relay 127.0.0.1:" in s.daemons["ingress-1"].log_text()
    # the ingress still serves everybody else
    set_policy(s, MODES["one-relay"])
    ok = curl("-x", s.http, "-p", f"http://127.0.0.1:{targets['http']}/hello.txt")
    assert ok.returncode == 0 and ok.stdout == b"hello through hermes\n"


def test_relay_refuses_garbage_and_peers_without_a_certificate(overlay, targets):
    s = overlay
    s.allow_error(r"refused a peer connection: TLS")
    set_policy(s, MODES["one-relay"])
    relay_port = s.port("relay-core", "tunnel")
    # garbage instead of a TLS handshake: the relay closes that connection
    with socket.create_connection(("127.0.0.1", relay_port), timeout=5) as c:
        c.sendall(b"\x16\x03\x01garbage-that-is-not-tls" * 10)
        closed = False
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:  # an alert may come first, then the close
                if not c.recv(4096):
                    closed = True
                    break
        except ConnectionResetError:
            closed = True
        assert closed, "the relay kept a connection that sent garbage"
    # a TLS client without a certificate of the Hermes CA is refused
    ctx = ssl.create_default_context(cafile=s.ca)
    ctx.set_alpn_protocols(["h2"])
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", relay_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with ctx.wrap_socket(raw, server_hostname="relay") as t:
                t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not t.recv(100):
                    raise ssl.SSLError("closed")
    # and the relay keeps carrying tunnels for the ingress
    ok = curl("-x", s.http, "-p", f"http://127.0.0.1:{targets['http']}/hello.txt")
    assert ok.returncode == 0 and ok.stdout == b"hello through hermes\n"


def test_a_thousand_half_open_clients_do_not_stop_the_proxy(overlay, targets):
    s = overlay
    set_policy(s, MODES["direct"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    port = s.port("ingress-1", "http")
    idle = []
    try:
        for i in range(1000):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 2:
                c.sendall(b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: ")  # and never the rest
            idle.append(c)
        t0 = time.monotonic()
        ok = curl("-x", s.http, "-p", f"http://127.0.0.1:{targets['http']}/hello.txt")
        assert ok.returncode == 0 and ok.stdout == b"hello through hermes\n", ok.stderr
        assert time.monotonic() - t0 < 5
    finally:
        for c in idle:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("mode", list(MODES))
def test_plain_http_absolute_form(overlay, targets, tmp_path, mode):
    """GET http://... through the HTTP/1.1 port (no CONNECT): 100 MiB byte-exact, request
    bodies with Content-Length and chunked, several requests on one kept-alive connection."""
    s = overlay
    set_policy(s, MODES[mode])
    base = f"http://127.0.0.1:{targets['http']}"
    out = tmp_path / "big.bin"
    r = curl("-x", s.http, f"{base}/big.bin", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sha256_file(out) == targets["digest"]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "payload"
    src.write_bytes(payload)
    want = f"{hashlib.sha256(payload).hexdigest()} {len(payload)}\n".encode()
    r = curl("-x", s.http, "--data-binary", f"@{src}", f"{base}/upload")
    assert r.returncode == 0 and r.stdout == want, (r.stdout, r.stderr)
    r = curl("-x", s.http, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{src}",
             f"{base}/upload")
    assert r.returncode == 0 and r.stdout == want, (r.stdout, r.stderr)
    # three requests, one connection, answers in order
    with socket.create_connection(("127.0.0.1", s.port("ingress-1", "http")), timeout=10) as c:
        for i in range(3):
            c.sendall(f"GET {base}/hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            data = b""
            while not data.endswith(b"hello through hermes\n"):
                chunk = c.recv(65536)
                assert chunk, f"connection closed after {i} answers"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 "), data[:80]
    r = curl("-x", s.http, "-o", "/dev/null", "-w", "%{http_code}", f"{base}/missing")
    assert r.stdout == b"404"
    # through the overlay the requests travel as requests: the exit relay asked the origin
    exit_relay = {"direct": None, "one-relay": "relay-core", "two-relays": "relay-far"}[mode]
    done = f"http request done target=127.0.0.1:{targets['http']} status=200"
    if exit_relay:
        wait_for(lambda: done in s.daemons[exit_relay].log_text(), 5,
                 what=f"{exit_relay}'s request done line")
    for name in ("relay-core", "relay-far"):
        log = s.daemons[name].log_text()
        assert (done in log) == (name == exit_relay), (name, mode)
        assert f"tunnel done target=127.0.0.1:{targets['http']}" not in log or name != exit_relay


@pytest.mark.parametrize("mode", list(MODES))
def test_plain_http_requests_on_the_http2_port(overlay, targets, tmp_path, mode):
    """`curl --proxy-http2 -x https://ingress` with an http:// URL and no -p: the GET goes
    on an HTTP/2 stream (no CONNECT), and the proxy fetches it (directly, or the exit relay
    does): 100 MiB byte-exact, request bodies with and without a length, several requests
    on one connection, the origin's 404 passed on, a deny answered 403 with the rule, and
    hermes-* headers from the client not taken as routing."""
    s = overlay
    set_policy(s, MODES[mode])
    h2 = ["--proxy-http2", "-x", s.h2, "--proxy-cacert", s.ca]
    base = f"http://127.0.0.1:{targets['http']}"
    out = tmp_path / "big.bin"
    r = curl(*h2, "-w", "%{http_version}", f"{base}/big.bin", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sha256_file(out) == targets["digest"]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "payload"
    src.write_bytes(payload)
    want = f"{hashlib.sha256(payload).hexdigest()} {len(payload)}\n".encode()
    r = curl(*h2, "--data-binary", f"@{src}", f"{base}/upload")
    assert r.returncode == 0 and r.stdout == want, (r.stdout, r.stderr)
    r = curl(*h2, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{src}",
             f"{base}/upload")
    assert r.returncode == 0 and r.stdout == want, (r.stdout, r.stderr)
    # three URLs, one curl: one proxy connection, three streams
    r = curl(*h2, "-v", f"{base}/hello.txt", f"{base}/hello.txt", f"{base}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n" * 3, (r.stdout, r.stderr)
    assert r.stderr.count(b"Connected to 127.0.0.1") == 1, r.stderr
    # a client's own routing headers are dropped, not followed
    r = curl(*h2, "-H", "hermes-dest: nowhere", f"{base}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n", (r.stdout, r.stderr)
    r = curl(*h2, "-o", "/dev/null", "-w", "%{http_code}", f"{base}/missing")
    assert r.stdout == b"404"
    exit_relay = {"direct": None, "one-relay": "relay-core", "two-relays": "relay-far"}[mode]
    done = f"http request done target=127.0.0.1:{targets['http']} status=200"
    if exit_relay:
        wait_for(lambda: done in s.daemons[exit_relay].log_text(), 5,
                 what=f"{exit_relay}'s request done line")
    for name in ("relay-core", "relay-far"):
        assert (done in s.daemons[name].log_text()) == (name == exit_relay), (name, mode)
    # the policy sees the method and the path: a deny is a 403 naming the rule
    set_policy(s, {"id": "no-uploads", "priority": 10, "action": "deny",
                   "match": {"method": ["POST"]}})
    r = curl(*h2, "-D", "-", "--data-binary", "x", f"{base}/upload")
    assert r.stdout.startswith(b"HTTP/2 403"), r.stdout
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert re.search(rb"^hermes-error: .*no-uploads", head, re.M), head  # for the next proxy
    assert b"no-uploads" in body and body.endswith(b"\n"), body  # and for a person
    log = s.daemons["ingress-1"].log_text()
    assert f"denied client=127.0.0.1 target=127.0.0.1:{targets['http']} rule=no-uploads" in log
    r = curl(*h2, f"{base}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr
    s.ctl("policy", "del", "no-uploads")
    s.wait_converged(expect=len([d for d in s.daemons.values() if d.alive()]) - 1, timeout=5)


@pytest.mark.parametrize("mode", list(MODES))
def test_http11_inside_tls_on_the_proxy_port(overlay, targets, tmp_path, mode):
    """`curl -x https://ingress:3129` without --proxy-http2 speaks HTTP/1.1 inside TLS to the
    proxy port (curl offers no ALPN; Python below offers http/1.1): CONNECT with the TLS to the target untouched, 100 MiB exact
    through a tunnel, plain http:// requests kept alive on one connection, a request body,
    a deny 403 with the rule, a malformed request 400; HTTP/2 clients keep getting h2."""
    s = overlay
    s.allow_error(r"denied client=")
    set_policy(s, MODES[mode])
    tls1 = ["-x", s.h2, "--proxy-cacert", s.ca]
    r = curl(*tls1, "-v", "--cacert", str(targets["cert"]), f"https://localhost:{targets['tls']}/hello")
    assert r.returncode == 0 and r.stdout == b"hello over end-to-end TLS\n", r.stderr
    assert b"CONNECT tunnel: HTTP/1.1" in r.stderr or b"HTTP/1.1 200" in r.stderr, r.stderr
    out = tmp_path / "big.bin"
    r = curl(*tls1, "-p", f"http://127.0.0.1:{targets['http']}/big.bin", "-o", str(out))
    assert r.returncode == 0 and sha256_file(out) == targets["digest"], r.stderr
    base = f"http://127.0.0.1:{targets['http']}"
    r = curl(*tls1, "-v", f"{base}/hello.txt", f"{base}/hello.txt", f"{base}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n" * 3, r.stderr
    assert r.stderr.count(b"Connected to 127.0.0.1") == 1, r.stderr
    payload = os.urandom(1024 * 1024 + 3)
    src = tmp_path / "payload"
    src.write_bytes(payload)
    r = curl(*tls1, "--data-binary", f"@{src}", f"{base}/upload")
    assert r.stdout == f"{hashlib.sha256(payload).hexdigest()} {len(payload)}\n".encode(), r.stderr
    set_policy(s, {"id": "no-uploads", "priority": 10, "action": "deny",
                   "match": {"method": ["POST"]}})
    r = curl(*tls1, "-D", "-", "--data-binary", "x", f"{base}/upload")
    assert r.stdout.startswith(b"HTTP/1.1 403") and b"no-uploads" in r.stdout, r.stdout
    s.ctl("policy", "del", "no-uploads")
    s.wait_converged(expect=len([d for d in s.daemons.values() if d.alive()]) - 1, timeout=5)
    # a malformed request inside TLS: 400, and the port goes on serving
    ctx = ssl.create_default_context(cafile=s.ca)
    ctx.set_alpn_protocols(["http/1.1"])
    port = s.port("ingress-1", "h2")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
        assert t.selected_alpn_protocol() == "http/1.1"
        t.sendall(b"NOT A REQUEST\r\n\r\n")
        assert t.recv(4096).startswith(b"HTTP/1.1 400"), "no 400"
    # a client that completes its handshake and goes away
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
        pass
    # HTTP/2 on the same port, as before
    r = curl("--proxy-http2", *tls1, "-w", "%{http_version}", "-o", "/dev/null", f"{base}/hello.txt")
    assert r.returncode == 0, r.stderr
    assert h2_proxy_get(s, [f"{base}/hello.txt"]) == [(200, b"hello through hermes\n")]


def https_via_proxy(port, urls, timeout=10):
    """GET each https:// URL in absolute form on one plain connection to the proxy (what a
    client configured with http_proxy for https does when it hands TLS to the proxy):
    [(status, body)]."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    out = []
    try:
        for url in urls:
            c.request("GET", url)
            r = c.getresponse()
            out.append((r.status, r.read()))
    finally:
        c.close()
    return out


def relay_metric(s, relay, name):
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{s.port(relay, 'metrics')}/metrics", timeout=5).read().decode()
    m = re.search(rf'^hermes_{name}{{[^}}]*instance="{relay}"}} (\d+)$', text, re.M)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("mode", list(MODES))
def test_https_urls_are_fetched_in_tls_by_the_proxy(overlay, targets, tmp_path, mode):
    """GET https://... in absolute form: the proxy that leaves toward the origin (the ingress
    on a direct route, else the exit relay) speaks TLS to the origin, checking its
    certificate against origin_ca_file and the URL's host; the exit relay keeps its TLS
    connection to the origin for the next client. A certificate from an unknown CA, or one
    for another name, is refused with 502 and the reason."""
    s = overlay
    set_policy(s, MODES[mode])
    port = s.port("ingress-1", "http")
    url = f"https://localhost:{targets['tls']}/hello"
    body = b"hello over end-to-end TLS\n"
    assert https_via_proxy(port, [url] * 3) == [(200, body)] * 3  # one kept-alive client
    exit_relay = {"direct": None, "one-relay": "relay-core", "two-relays": "relay-far"}[mode]
    done = f"http request done target=localhost:{targets['tls']} status=200"
    if exit_relay:
        wait_for(lambda: done in s.daemons[exit_relay].log_text(), 5,
                 what=f"{exit_relay}'s request done line")
    for name in ("relay-core", "relay-far"):
        assert (done in s.daemons[name].log_text()) == (name == exit_relay), (name, mode)
    if exit_relay:
        before = relay_metric(s, exit_relay, "relay_origin_reused")
        for _ in range(3):  # three more clients: the exit relay's TLS connection serves them
            assert https_via_proxy(port, [url]) == [(200, body)]
        wait_for(lambda: relay_metric(s, exit_relay, "relay_origin_reused") >= before + 3, 5,
                 what=f"{exit_relay} reusing its TLS connection to the origin")
    # 100 MiB from the TLS origin, byte-exact, on the same kept connections
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("GET", f"https://localhost:{targets['tls']}/big.bin")
        r = c.getresponse()
        h = hashlib.sha256()
        while chunk := r.read(1 << 20):
            h.update(chunk)
        assert r.status == 200 and h.hexdigest() == targets["digest"]
    finally:
        c.close()
    # an origin that does not speak TLS at all
    [(status, why)] = https_via_proxy(port, [f"https://localhost:{targets['http']}/hello.txt"])
    assert status == 502 and b"TLS with the origin" in why, why
    # the certificate names localhost, not 127.0.0.1
    [(status, why)] = https_via_proxy(port, [f"https://127.0.0.1:{targets['tls']}/hello"])
    assert status == 502 and b"TLS with the origin" in why and b"certificate" in why, why
    # a certificate from a CA the proxies do not trust
    cert, key = tmp_path / "other.crt", tmp_path / "other.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True, timeout=30)
    other = free_port()
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "tls_target.py"), str(other),
                          str(cert), str(key)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", other)) == 0, 10,
                 what="the untrusted TLS target")
        [(status, why)] = https_via_proxy(port, [f"https://localhost:{other}/hello"])
        assert status == 502 and b"TLS with the origin" in why and b"certificate" in why, why
    finally:
        p.terminate()
        p.wait(5)
    # and the trusted origin is still served
    assert https_via_proxy(port, [url]) == [(200, body)]


def h2_proxy_get(s, urls, timeout=60):
    """GETs each absolute URL as its own stream on one TLS connection to the ingress's
    HTTP/2 port, with python3-h2 as the client: no CONNECT, the stream's :scheme,
    :authority and :path name the origin. [(status, body)] in the order of urls."""
    import h2.config
    import h2.connection
    import h2.events
    port = int(s.h2.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=s.ca)
    ctx.set_alpn_protocols(["h2"])
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    order, got = [], {}
    for url in urls:
        u = urllib.parse.urlsplit(url)
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", u.scheme),
                                (":authority", u.netloc), (":path", u.path or "/")],
                          end_stream=True)
        order.append(sid)
        got[sid] = {"status": None, "body": bytearray(), "done": False}
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
        assert t.selected_alpn_protocol() == "h2"
        t.sendall(conn.data_to_send())
        while not all(g["done"] for g in got.values()):
            assert time.monotonic() < deadline, f"no whole answer within {timeout} s: {got}"
            data = t.recv(1 << 20)
            assert data, f"the ingress closed the connection: {got}"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    got[ev.stream_id]["status"] = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    got[ev.stream_id]["body"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    got[ev.stream_id]["done"] = True
            t.sendall(conn.data_to_send())
    return [(got[sid]["status"], bytes(got[sid]["body"])) for sid in order]


@pytest.mark.parametrize("mode", list(MODES))
def test_https_urls_on_the_http2_port(overlay, targets, mode):
    """An HTTP/2 client (python3-h2) that asks the HTTP/2 proxy port for https:// URLs
    with no CONNECT: the proxy that leaves toward the origin (the ingress, or the exit
    relay) speaks TLS to it and checks its certificate; several streams on one connection,
    100 MiB byte-exact, a certificate for another name answered 502 with the reason, an
    http:// URL on the same connection."""
    s = overlay
    set_policy(s, MODES[mode])
    tls = f"https://localhost:{targets['tls']}"
    body = b"hello over end-to-end TLS\n"
    assert h2_proxy_get(s, [f"{tls}/hello"] * 3 +
                        [f"http://127.0.0.1:{targets['http']}/hello.txt"]) == \
        [(200, body)] * 3 + [(200, b"hello through hermes\n")]
    exit_relay = {"direct": None, "one-relay": "relay-core", "two-relays": "relay-far"}[mode]
    done = f"http request done target=localhost:{targets['tls']} status=200"
    fetcher = exit_relay or "ingress-1"
    wait_for(lambda: done in s.daemons[fetcher].log_text(), 5,
             what=f"{fetcher}'s request done line")
    for name in ("relay-core", "relay-far"):
        assert (done in s.daemons[name].log_text()) == (name == exit_relay), (name, mode)
    [(status, big)] = h2_proxy_get(s, [f"{tls}/big.bin"], timeout=120)
    assert status == 200 and hashlib.sha256(big).hexdigest() == targets["digest"], \
        (status, len(big))
    # the certificate names localhost, not 127.0.0.1
    [(status, why)] = h2_proxy_get(s, [f"https://127.0.0.1:{targets['tls']}/hello"])
    assert status == 502 and b"TLS with the origin" in why and b"certificate" in why, why
    assert h2_proxy_get(s, [f"{tls}/hello"]) == [(200, body)]


@pytest.mark.parametrize("mode", ["direct", "one-relay"])
def test_an_origin_that_stalls_its_tls_handshake_is_answered_504(overlay, targets, mode):
    """An https origin that accepts the connection and never answers the ClientHello: the
    proxy fetching the URL (ingress or exit relay) answers 504 once its connect timeout has
    passed, says why, and goes on serving."""
    s = overlay
    set_policy(s, MODES[mode])
    port = s.port("ingress-1", "http")
    with socket.socket() as stall:  # the kernel accepts for it; nobody reads
        stall.bind(("127.0.0.1", 0))
        stall.listen(8)
        t0 = time.monotonic()
        [(status, why)] = https_via_proxy(
            port, [f"https://localhost:{stall.getsockname()[1]}/"], timeout=15)
        took = time.monotonic() - t0
    limit = 2.0 if mode == "direct" else 5.0  # the ingress's --connect-timeout-ms, a relay's
    assert status == 504, (status, why)
    assert b"did not finish the TLS handshake within" in why, why
    assert limit - 0.5 < took < limit + 3, took
    assert https_via_proxy(port, [f"https://localhost:{targets['tls']}/hello"]) == \
        [(200, b"hello over end-to-end TLS\n")]


def test_an_origin_that_never_answers_is_answered_504_after_the_idle_timeout(overlay, targets):
    """A plain http:// origin that takes the request and never answers: the proxy fetching
    it gives up once the origin has been silent for its --idle-timeout-ms, answers 504 and
    says why (an ingress on a direct route, and an exit relay, each with a short timeout);
    the others keep being served."""
    s = overlay
    s.start_service("ingress", "ingress-quick", extra=("--node", "edge", "--idle-timeout-ms",
                                                       "1500"))
    s.start_service("relay", "relay-quick", extra=("--node", "quick", "--idle-timeout-ms",
                                                   "1500"))
    wait_for(lambda: "relay listening on" in s.daemons["relay-quick"].log_text(), 10,
             what="relay-quick listening")
    s.ctl("node", "add", "quick", "--address", f"127.0.0.1:{s.port('relay-quick', 'tunnel')}")
    s.ctl("link", "add", "edge", "quick")
    with socket.socket() as stall:  # the kernel accepts and takes the request; nobody answers
        stall.bind(("127.0.0.1", 0))
        stall.listen(8)
        url = f"http://127.0.0.1:{stall.getsockname()[1]}/slow"
        for name, policy in (("ingress-quick", MODES["direct"]),
                             ("ingress-1", {"id": "all", "priority": 1000, "action": "route",
                                            "route": "quick"})):
            set_policy(s, policy)
            t0 = time.monotonic()
            r = curl("-x", f"http://127.0.0.1:{s.port(name, 'http')}", "-sS", "-o", "/dev/null",
                     "-w", "%{http_code}", url, timeout=20)
            took = time.monotonic() - t0
            assert r.stdout == b"504", (name, r.stdout, r.stderr)
            assert 1.0 < took < 6, (name, took)
        assert "the origin sent nothing for 1500 ms" in s.daemons["relay-quick"].log_text()
    r = curl("-x", s.http, f"http://127.0.0.1:{targets['http']}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr


def test_a_second_relay_on_a_port_in_use_does_not_start(overlay, targets):
    """Our listeners share their port among a daemon's workers (SO_REUSEPORT), which would
    also let a second daemon join and take half of the first one's connections: a daemon
    asked to listen where another listens fails at start-up and says why; the first one
    goes on serving."""
    s = overlay
    port = s.port("relay-core", "tunnel")
    d = s.start_service("relay", "relay-dup", extra=("--node", "dup", "--listen",
                                                     f"127.0.0.1:{port}"))
    try:
        rc = d.proc.wait(10)
        assert rc != 0
        assert f"cannot listen on 127.0.0.1:{port}: another process listens there" in \
            d.log_text(), d.log_text()
    finally:
        d.stop()
        del s.daemons["relay-dup"]
    set_policy(s, MODES["one-relay"])
    for _ in range(5):  # every request through relay-core, none lost to a second listener
        r = curl("-x", s.http, f"http://127.0.0.1:{targets['http']}/hello.txt")
        assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr


def check_origin_connections_kept(s, targets, keeper):
    """Three clients one after the other, one origin connection; an origin that closes a
    kept connection instead of answering (the keep-alive race) costs nothing: the request
    goes once more on a new connection (keeper logs it); a request with a body never goes out
    on a kept connection (it could not be sent again)."""
    base = f"http://127.0.0.1:{targets['http']}"
    log = targets["origin_log"]
    ports = re.compile(r"^127\.0\.0\.1:(\d+) \"GET /hello\.txt ", re.M)
    start = len(log.read_text())
    for _ in range(3):
        r = curl("-x", s.http, f"{base}/hello.txt")
        assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr
    seen = wait_for(lambda: (lambda p: p if len(p) == 3 else None)(
        ports.findall(log.read_text()[start:])), 5, what="the origin's log of 3 requests")
    assert len(set(seen)) == 1, f"{keeper} opened {len(set(seen))} origin connections"
    r = curl("-x", s.http, f"{base}/drop-next")
    assert r.returncode == 0 and r.stdout == b"dropping the next request\n", r.stderr
    r = curl("-x", s.http, f"{base}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello through hermes\n", r.stderr
    assert re.search(r"dropped /hello\.txt", log.read_text()[start:])
    assert f"http request target=127.0.0.1:{targets['http']}: the kept origin connection " \
           "closed before an answer" in s.daemons[keeper].log_text()
    r = curl("-x", s.http, "--data-binary", "abc", f"{base}/upload")
    assert r.returncode == 0 and r.stdout.endswith(b" 3\n"), (r.stdout, r.stderr)


def test_ingress_keeps_origin_connections_across_clients(overlay, targets):
    """On a direct route the ingress fetches http:// and https:// URLs itself: once an answer
    is whole its origin connection goes to the worker's pool, and the next request to that
    origin, from any client, goes out on it (no new TCP or TLS handshake)."""
    s = overlay
    set_policy(s, MODES["direct"])
    check_origin_connections_kept(s, targets, "ingress-1")

    def reused():
        rows = s.ctl_json("stats", "--kind", "ingress")
        return rows[0]["stats"].get("ingress_origin_reused", 0) if rows else 0
    url = f"https://localhost:{targets['tls']}/hello"
    ok = [(200, b"hello over end-to-end TLS\n")]
    assert https_via_proxy(s.port("ingress-1", "http"), [url]) == ok
    before = wait_for(lambda: reused() or None, 10, what="the ingress's stats")
    for _ in range(3):  # three more clients, one TLS connection
        assert https_via_proxy(s.port("ingress-1", "http"), [url]) == ok
    wait_for(lambda: reused() >= before + 3, 10,
             what="the ingress reusing its TLS connection to the origin")


@pytest.mark.parametrize("mode", ["one-relay", "two-relays"])
def test_exit_relay_keeps_origin_connections(overlay, targets, mode):
    """http:// requests that leave the overlay at a relay: the exit relay keeps its
    connection to the origin after a whole answer, for the next request from any client."""
    s = overlay
    set_policy(s, MODES[mode])
    check_origin_connections_kept(s, targets,
                                  {"one-relay": "relay-core", "two-relays": "relay-far"}[mode])


def test_proxy_users_and_per_user_address_space(overlay, tmp_path):
    """With a users file the ingress asks for Proxy-Authorization; the same virtual
    destination leads each user to a different target (the Hermes paper's per-user address
    space), through the HTTP/1.1 port (CONNECT and plain HTTP) and the HTTP/2 port."""
    s = overlay
    s.allow_error(r"bad request client=127.0.0.1 status=407")
    users = tmp_path / "users.json"
    users.write_text(json.dumps({n: hashlib.sha256(p.encode()).hexdigest()
                                 for n, p in (("alice", "wonderland"), ("bob", "builder"))}))
    s.start_service("ingress", "ingress-auth", extra=("--node", "edge", "--users-file", str(users)))
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", s.port("ingress-auth", "http")))
             == 0, 10, what="ingress-auth listening")
    ports = {}
    procs = []
    for name in ("alice", "bob"):
        root = tmp_path / name
        root.mkdir()
        (root / "hello.txt").write_text(f"{name}'s server\n")
        ports[name] = free_port()
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "http_origin.py"),
                                       str(ports[name]), str(root)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for name in ports:
            wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", ports[name])) == 0, 10,
                     what=f"{name}'s server")
        set_policy(s, *[{"id": f"svc-{n}", "priority": 10, "action": "allow",
                         "match": {"host": ["svc.virtual"], "user": [n]},
                         "target": f"127.0.0.1:{ports[n]}"} for n in ports])
        http = f"http://127.0.0.1:{s.port('ingress-auth', 'http')}"
        h2 = f"https://127.0.0.1:{s.port('ingress-auth', 'h2')}"
        for name, password in (("alice", "wonderland"), ("bob", "builder")):
            want = f"{name}'s server\n".encode()
            r = curl("-x", http, "-U", f"{name}:{password}", "http://svc.virtual/hello.txt")
            assert r.returncode == 0 and r.stdout == want, (name, r.stdout, r.stderr)
            r = curl("-x", http, "-U", f"{name}:{password}", "-p", "http://svc.virtual/hello.txt")
            assert r.returncode == 0 and r.stdout == want, (name, r.stdout, r.stderr)
            r = curl("--proxy-http2", "-x", h2, "--proxy-cacert", s.ca, "-U",
                     f"{name}:{password}", "-p", "http://svc.virtual/hello.txt")
            assert r.returncode == 0 and r.stdout == want, (name, r.stdout, r.stderr)
        # no credentials, or wrong ones: 407 with a challenge
        for creds in ([], ["-U", "alice:wrong"], ["-U", "mallory:x"]):
            r = curl("-x", http, *creds, "-o", "/dev/null", "-D", "-",
                     "http://svc.virtual/hello.txt")
            assert r.stdout.startswith(b"HTTP/1.1 407 "), r.stdout
            assert b"Proxy-Authenticate: Basic" in r.stdout
        # someone with no rule of their own is refused by policy
        users.write_text(users.read_text())  # unchanged: carol does not exist either way
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_a_slow_reader_slows_the_writer_with_bounded_memory(overlay, targets):
    """The target sends 100 MiB as fast as it can; the client stops reading after 1 MiB.
    Flow control must hold the bytes back at the target (TCP and HTTP/2 windows), not in
    the proxies: their memory stays flat, and the transfer completes exactly afterwards."""
    s = overlay
    set_policy(s, MODES["two-relays"])
    pids = {n: s.daemons[n].proc.pid for n in ("ingress-1", "relay-core", "relay-far")}
    base = {n: rss_kib(p) for n, p in pids.items()}
    c = socket.create_connection(("127.0.0.1", s.port("ingress-1", "http")), timeout=30)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.sendall(f"CONNECT 127.0.0.1:{targets['http']} HTTP/1.1\r\n\r\n".encode())
    assert c.recv(4096).startswith(b"HTTP/1.1 200")
    c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    h = hashlib.sha256()
    got = b""
    while b"\r\n\r\n" not in got:
        got += c.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    h.update(body)
    n = len(body)
    while n < (1 << 20):
        chunk = c.recv(65536)
        h.update(chunk)
        n += len(chunk)
    time.sleep(3)  # the reader stalls; the writer keeps trying
    grown = {name: rss_kib(p) - base[name] for name, p in pids.items()}
    print("RSS growth while the reader stalled (KiB):", grown)
    # AddressSanitizer keeps freed memory in quarantine: RSS means nothing in that build
    asan = "libasan" in open(f"/proc/{pids['ingress-1']}/maps").read()
    for name, kib in grown.items():
        assert asan or kib < 16 * 1024, f"{name} grew by {kib} KiB while the client did not read"
    while chunk := c.recv(1 << 20):
        h.update(chunk)
        n += len(chunk)
    c.close()
    assert n == BIG and h.hexdigest() == targets["digest"]


@pytest.mark.parametrize("mode", list(MODES))
def test_a_pipelining_client_sends_before_the_connect_is_answered(overlay, targets, mode):
    """A client that does not wait for "200 Connection established": its request goes in
    the same segment as the CONNECT, or right after it. Through the overlay those bytes
    travel with the CONNECT stream instead of a round trip later; the answer arrives whole
    and in order either way, and the ingress counts them."""
    s = overlay
    set_policy(s, MODES[mode])
    connect = f"CONNECT 127.0.0.1:{targets['http']} HTTP/1.1\r\n\r\n".encode()
    get = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for writes in ([connect + get], [connect, get]):
        c = socket.create_connection(("127.0.0.1", s.port("ingress-1", "http")), timeout=20)
        for w in writes:
            c.sendall(w)
        got = b""
        while chunk := c.recv(65536):
            got += chunk
        c.close()
        established, rest = got.split(b"\r\n\r\n", 1)
        assert established.startswith(b"HTTP/1.1 200"), got
        assert rest.startswith(b"HTTP/1.") and b" 200 " in rest.split(b"\r\n")[0], got
        assert rest.endswith(b"hello through hermes\n"), got
    log = wait_for(lambda: (t := s.daemons["ingress-1"].log_text()).count(
        f"target=127.0.0.1:{targets['http']} via=") >= 2 and t, 5, what="flow done lines")
    ups = [int(l.split(" up=")[1].split()[0]) for l in log.splitlines()
           if "flow done" in l and f"target=127.0.0.1:{targets['http']} " in l][-2:]
    assert ups == [len(get), len(get)], ups


def test_optimistic_connect_answers_before_the_relays_and_resets_on_their_refusal(overlay,
                                                                                  targets):
    """An ingress with optimistic_connect answers an overlay CONNECT at once (the client's
    TLS handshake starts one round trip earlier); HTTPS and a 100 MiB download stay exact.
    When the exit relay cannot reach the target, the client, already answered, sees its
    connection reset, and the ingress logs the refusal as a 502."""
    s = overlay
    s.start_service("ingress", "ingress-2", extra=(
        "--node", "edge", "--connect-timeout-ms", "2000", "--optimistic-connect", "true",
        "--h2-listen", "", "--transparent-listen", ""))
    s.wait_converged(expect=len([d for d in s.daemons.values() if d.alive()]) - 1, timeout=5)
    set_policy(s, MODES["two-relays"])
    port = s.port("ingress-2", "http")
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, what="ingress-2")
    r = curl("-x", f"http://127.0.0.1:{port}", "--cacert", str(targets["cert"]),
             f"https://localhost:{targets['tls']}/hello")
    assert r.returncode == 0 and r.stdout == b"hello over end-to-end TLS\n", r.stderr
    r = curl("-x", f"http://127.0.0.1:{port}", "-p", f"http://127.0.0.1:{targets['http']}/big.bin")
    assert r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == targets["digest"]
    closed = free_port()
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(f"CONNECT 127.0.0.1:{closed} HTTP/1.1\r\n\r\nhello".encode())
    got, reset = b"", False
    try:
        while chunk := c.recv(65536):
            got += chunk
    except ConnectionResetError:
        reset = True
    c.close()
    assert got.startswith(b"HTTP/1.1 200"), got
    assert reset, "the refused tunnel ended without a reset"
    log = wait_for(lambda: "status=502" in (t := s.daemons["ingress-2"].log_text()) and t, 5,
                   what="the refusal in the log")
    assert f"flow failed client=127.0.0.1 target=127.0.0.1:{closed} via=far status=502" in log


def test_a_topology_change_reroutes_new_flows_while_an_old_tunnel_keeps_flowing(overlay, targets):
    """Routes follow the topology: with links edge-core-far, flows to far cross both relays;
    a cheaper direct link edge-far makes the controller push new routes, and new flows skip
    relay-core, while a tunnel opened before the change keeps its path and keeps flowing."""
    s = overlay
    set_policy(s, MODES["two-relays"])
    port = s.port("ingress-1", "http")
    old = open_tunnel(port, targets["http"])
    version = s.status()["config_version"]
    s.ctl("link", "add", "edge", "far", "--cost", "1")
    s.wait_converged(expect=len([d for d in s.daemons.values() if d.alive()]) - 1, timeout=5,
                     version=version + 1)
    assert s.ctl_json("route", "show", "far", "--from", "edge")[0]["path"] == ["edge", "far"]
    r = curl("-x", s.http, "--cacert", str(targets["cert"]),
             f"https://localhost:{targets['tls']}/hello")
    assert r.returncode == 0 and r.stdout == b"hello over end-to-end TLS\n", r.stderr
    tls_done = f"tunnel done target=localhost:{targets['tls']}"
    wait_for(lambda: tls_done in s.daemons["relay-far"].log_text(), 5, what="relay-far's log")
    assert tls_done not in s.daemons["relay-core"].log_text()
    # the old tunnel, still through relay-core, carries a request after the change
    data = last_request(old)
    assert data.endswith(b"hello through hermes\n"), data[:200]
    http_done = f"tunnel done target=127.0.0.1:{targets['http']}"
    wait_for(lambda: http_done in s.daemons["relay-core"].log_text(), 5, what="relay-core's log")


def read_http_response(c):
    """One HTTP/1.1 response with a Content-Length, read off a kept-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = c.recv(65536)
        assert chunk, "closed in the middle of a body"
        body += chunk
    return head, body


def closed_by_peer(c, timeout=5):
    c.settimeout(timeout)
    try:
        return c.recv(1) == b""
    except ConnectionResetError:
        return True


def refused(port):
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def stopped(d, timeout):
    try:
        return d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("mode", ["direct", "one-relay"])
def test_a_stopping_ingress_lets_open_flows_finish(overlay, targets, tmp_path, mode):
    """SIGTERM is a graceful stop: the ports close at once, kept-alive and silent client
    connections are closed, while a tunnel (HTTP/1.1 port) and a CONNECT stream (HTTP/2
    port, a download in progress) carry on; the ingress exits 0 once they are done."""
    s = overlay
    set_policy(s, MODES[mode])
    ing = s.daemons["ingress-1"]
    port, h2_port = s.port("ingress-1", "http"), s.port("ingress-1", "h2")
    tunnel = open_tunnel(port, targets["http"])
    kept = socket.create_connection(("127.0.0.1", port), timeout=10)
    url = f"http://127.0.0.1:{targets['http']}/hello.txt"
    kept.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head, body = read_http_response(kept)
    assert head.startswith(b"HTTP/1.1 200") and body == b"hello through hermes\n"
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    out = tmp_path / "big.bin"
    download = subprocess.Popen(
        ["curl", "-sS", "--max-time", "60", "--limit-rate", "25M", *proxy_args(s, "h2"), "-p",
         f"http://127.0.0.1:{targets['http']}/big.bin", "-o", str(out)],
        stderr=subprocess.PIPE)
    wait_for(lambda: out.exists() and out.stat().st_size > (1 << 20), 10,
             what="the HTTP/2 download under way")
    ing.expected_exit = True
    ing.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining on signal 15" in ing.log_text(), 5, what="the ingress draining")
    assert refused(port) and refused(h2_port)
    # the controller knows at once (not at the next heartbeat), and hermesctl status shows it
    wait_for(lambda: [x["state"] for x in s.services("ingress")] == ["draining"], 2,
             what="hermesctl status showing the ingress draining")
    assert re.search(r"ingress\s+ingress-1\s+draining", s.ctl("status")[1])
    assert closed_by_peer(kept)
    # a client that has sent nothing is closed; one still waiting to be accepted (the proxy
    # ports accept once the first bytes are there) went with the port: its bytes are refused
    try:
        silent.sendall(b"CONNECT ")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_by_peer(silent)
    # the tunnel still carries a request, and the download goes on to the last byte
    data = last_request(tunnel)
    assert data.endswith(b"hello through hermes\n"), data[:200]
    assert download.wait(60) == 0, download.stderr.read()
    assert sha256_file(out) == targets["digest"]
    assert ing.alive() or ing.proc.returncode == 0
    assert stopped(ing, 5) == 0
    log = ing.log_text()
    assert "drained: nothing open, stopping" in log, log[-2000:]
    for c in (kept, silent):
        c.close()


def test_a_second_signal_or_the_drain_time_ends_a_graceful_stop(overlay, targets):
    s = overlay
    set_policy(s, MODES["direct"])
    for how in ("second signal", "drain time"):
        name = "ingress-1" if how == "second signal" else "ingress-2"
        if how == "drain time":
            s.start_service("ingress", name, extra=("--node", "edge", "--drain-s", "1"))
            wait_for(lambda: not refused(s.port(name, "http")), 10, what=f"{name} listening")
        d = s.daemons[name]
        tunnel = open_tunnel(s.port(name, "http"), targets["http"])
        d.expected_exit = True
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining on signal 15" in d.log_text(), 5, what=f"{name} draining")
        if how == "second signal":
            assert stopped(d, 0.5) is None  # the open tunnel holds it
            d.proc.send_signal(signal.SIGTERM)
        assert stopped(d, 5) == 0
        assert closed_by_peer(tunnel)
        tunnel.close()
        elapsed = time.monotonic() - t0
        if how == "drain time":
            assert 0.9 < elapsed < 4, elapsed
            assert "drain time over: closing what is still open" in d.log_text()
        else:
            assert "second signal 15: closing what is still open" in d.log_text()


def slow_download(s, targets, out):
    """curl fetching the 100 MiB file through the HTTP/1.1 port in a tunnel (-p) at 25 MB/s,
    once the first MiB has arrived."""
    download = subprocess.Popen(
        ["curl", "-sS", "--max-time", "60", "--limit-rate", "25M", "-x", s.http, "-p",
         f"http://127.0.0.1:{targets['http']}/big.bin", "-o", str(out)], stderr=subprocess.PIPE)
    wait_for(lambda: out.exists() and out.stat().st_size > (1 << 20), 10,
             what="the download under way")
    return download


def test_a_stopping_relay_finishes_its_streams_and_takes_no_new_ones(overlay, targets, tmp_path):
    """SIGTERM to a relay: it sends GOAWAY (a notice, then the last stream id), closes its
    port, and the streams it carries finish; the ingress opens no new stream on that
    connection, closes it once its streams are done, and new flows meet a refused relay
    (502) instead of a connection that goes away under them."""
    s = overlay
    s.allow_error(r"cannot reach next hop")
    set_policy(s, MODES["one-relay"])
    relay = s.daemons["relay-core"]
    out = tmp_path / "big.bin"
    download = slow_download(s, targets, out)
    relay.expected_exit = True
    relay.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining on signal 15" in relay.log_text(), 5, what="the relay draining")
    assert refused(s.port("relay-core", "tunnel"))
    time.sleep(0.7)  # past the notice's round trip: the final GOAWAY has gone
    r = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", s.http,
             f"http://127.0.0.1:{targets['http']}/hello.txt", timeout=20)
    assert r.stdout == b"502", (r.returncode, r.stdout, r.stderr)
    assert download.wait(60) == 0, download.stderr.read()
    assert sha256_file(out) == targets["digest"]
    assert stopped(relay, 5) == 0
    assert "drained: nothing open, stopping" in relay.log_text()


def edge_route(s, to):
    return s.ctl_json("route", "show", to, "--from", "edge")


def test_routes_go_around_a_node_whose_relays_are_stopping_or_down(overlay, targets, tmp_path):
    """A rolling restart: with two paths to far (edge-core-far, cost 2; edge-alt-far, cost
    10), SIGTERM to core's only relay makes the controller push routes around core at once
    (a new config version by "controller"); new flows cross alt while the download already
    crossing core finishes. A new relay for core brings the short path back; when that one
    dies without a word (SIGKILL), routes go around core again once it has been silent for
    the controller's down time (3 s)."""
    s = overlay
    s.allow_error(r"instance down kind=relay instance=relay-core")
    s.start_service("relay", "relay-alt", extra=("--node", "alt"))
    wait_for(lambda: "relay listening on" in s.daemons["relay-alt"].log_text(), 10,
             what="relay-alt listening")
    s.ctl("node", "add", "alt", "--address", f"127.0.0.1:{s.port('relay-alt', 'tunnel')}")
    s.ctl("link", "add", "edge", "alt", "--cost", "5")
    s.ctl("link", "add", "alt", "far", "--cost", "5")
    set_policy(s, MODES["two-relays"])
    assert edge_route(s, "far")[0]["path"] == ["edge", "core", "far"]
    nodes = {n["name"]: n for n in s.ctl_json("node", "list")}
    assert (nodes["core"]["relays"], nodes["core"]["relays_up"]) == (1, 1)
    assert "avoided" not in nodes["core"] and nodes["edge"]["relays"] == 0

    relays = ["relay-core", "relay-alt", "relay-far"]
    port = s.port("ingress-1", "http")

    def done():
        """Tunnels to the HTTP origin each relay has logged as done."""
        line = f"tunnel done target=127.0.0.1:{targets['http']}"
        return {r: s.daemons[r].log_text().count(line) for r in relays}

    def requests_cross(n, expect):
        """n requests, each in a new tunnel; expect: relay -> how many of them it carried."""
        before = done()
        for _ in range(n):
            data = last_request(open_tunnel(port, targets["http"]))
            assert data.endswith(b"hello through hermes\n"), data[:200]
        wait_for(lambda: done()["relay-far"] - before["relay-far"] == n, 5,
                 what=f"{n} tunnels done at far")
        crossed = {r: done()[r] - before[r] for r in relays}
        assert crossed == expect, crossed

    requests_cross(2, {"relay-core": 2, "relay-alt": 0, "relay-far": 2})
    out = tmp_path / "big.bin"
    download = slow_download(s, targets, out)
    core = s.daemons["relay-core"]
    version = s.status()["config_version"]
    core.expected_exit = True
    core.proc.send_signal(signal.SIGTERM)
    # at once (a few ms here), even a second after the controller started
    wait_for(lambda: edge_route(s, "far")[0]["path"] == ["edge", "alt", "far"], 1,
             what="routes around core")
    history = s.ctl_json("config", "history")[0]
    assert history["version"] == version + 1 and history["author"] == "controller", history
    assert history["reason"] == ("routes avoid node core: no relay of it is up "
                                 "(relay-core draining)"), history
    assert edge_route(s, "core") == []  # nothing leads to a node without a relay
    s.wait_converged(expect=4, timeout=5, version=version + 1)  # policy, ingress, alt, far
    nodes = {n["name"]: n for n in s.ctl_json("node", "list")}
    assert nodes["core"]["relays_up"] == 0 and nodes["core"]["avoided"] == "relay-core draining"
    assert re.search(r"core\s.*0 of 1 up\s+avoided: relay-core draining", s.ctl("node", "list")[1])
    # new flows cross alt while core drains
    requests_cross(3, {"relay-core": 0, "relay-alt": 3, "relay-far": 3})
    # the download that crossed core arrives whole, and core leaves once it is done
    assert download.wait(60) == 0, download.stderr.read()
    assert sha256_file(out) == targets["digest"]
    assert stopped(core, 5) == 0

    # a new relay for core (same address) brings the short path back
    s.start_service("relay", "relay-core-2",
                    extra=("--node", "core", "--listen",
                           f"127.0.0.1:{s.port('relay-core', 'tunnel')}"))
    wait_for(lambda: edge_route(s, "far")[0]["path"] == ["edge", "core", "far"], 5,
             what="routes through core again")
    assert s.ctl_json("config", "history")[0]["reason"] == (
        "routes use node core again: a relay of it is up")
    nodes = {n["name"]: n for n in s.ctl_json("node", "list")}
    assert (nodes["core"]["relays"], nodes["core"]["relays_up"]) == (2, 1)
    assert "avoided" not in nodes["core"]
    s.wait_converged(expect=5, timeout=5)
    relays[0] = "relay-core-2"
    requests_cross(2, {"relay-core-2": 2, "relay-alt": 0, "relay-far": 2})

    # a relay that dies without draining: around core again after the down time; until
    # then the ingress's warm pool tries to reconnect to it, and logs each try
    core_addr = f"127.0.0.1:{s.port('relay-core', 'tunnel')}"
    s.allow_error(rf"cannot reach next hop relay {core_addr}: ")
    s.daemons["relay-core-2"].kill9()
    t0 = time.monotonic()
    wait_for(lambda: edge_route(s, "far")[0]["path"] == ["edge", "alt", "far"], 8,
             what="routes around core after relay-core-2 died")
    assert 2.5 < time.monotonic() - t0 < 8
    reason = s.ctl_json("config", "history")[0]["reason"]
    assert reason.startswith("routes avoid node core: no relay of it is up (") and \
        "relay-core-2 down" in reason, reason
    wait_for(lambda: s.services("ingress")[0]["applied_version"] == s.status()["config_version"],
             5, what="the ingress running the new routes")
    requests_cross(2, {"relay-core-2": 0, "relay-alt": 2, "relay-far": 2})
    # and it stops trying core, which no route starts with now (its back-off is 3.2 s by then)
    tries = s.daemons["ingress-1"].log_text().count(f"cannot reach next hop relay {core_addr}")
    time.sleep(3.5)
    assert s.daemons["ingress-1"].log_text().count(
        f"cannot reach next hop relay {core_addr}") == tries

    # a restarted controller counts every instance down until it registers again: it judges
    # nodes only after its down time, so routes do not flap (core stays avoided, the others
    # are used), and no version is made
    version = s.status()["config_version"]
    s.daemons["controller"].stop()
    s.start_controller()
    s.wait_converged(expect=4, timeout=10, version=version)  # policy, ingress, alt, far
    time.sleep(3.5)
    assert s.status()["config_version"] == version
    assert edge_route(s, "far")[0]["path"] == ["edge", "alt", "far"]
    nodes = {n["name"]: n for n in s.ctl_json("node", "list")}
    assert nodes["core"]["avoided"].startswith("relay-core"), nodes["core"]


RELAY_HOSTS = "127.0.0.1 localhost\n127.0.0.2 relay\n127.0.0.3 relay\n"


def relay_name_order(s):
    """(first, other): the two addresses of the name relay in RELAY_HOSTS, in the order that
    getaddrinfo gives them (RFC 6724), as the ingress will see them."""
    path = os.path.join(s.dir, "order.hosts")
    with open(path, "w") as f:
        f.write(RELAY_HOSTS)
    order = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" /etc/hosts && exec getent ahostsv4 relay', path],
                           capture_output=True, text=True, timeout=30)
    assert order.returncode == 0, order.stderr
    first = order.stdout.split()[0]
    return first, "127.0.0.3" if first == "127.0.0.2" else "127.0.0.2"


def start_pair_relay(s, name, ip, port):
    """A relay of node pair on ip:port, listening."""
    s.start_service("relay", name, extra=("--node", "pair", "--listen", f"{ip}:{port}"))
    wait_for(lambda: "relay listening on" in s.daemons[name].log_text(), 10,
             what=f"{name} listening")


def pair_behind_one_name(s, port, relays, hosts=RELAY_HOSTS, extra=()):
    """Controller, policy engine, an ingress that sees hosts (its file: ingress-1.hosts in
    the suite's folder), and real relays of node pair (relays: name -> IP, each on IP:port);
    node pair's address is relay:port, and every flow is routed to it. Returns the
    ingress's HTTP/1.1 port."""
    s.start_controller()
    s.start_service("policy")
    s.start_service("ingress", extra=("--node", "edge", "--connect-timeout-ms", "2000", *extra),
                    hosts=hosts)
    for name, ip in relays.items():
        start_pair_relay(s, name, ip, port)
    s.ctl("node", "add", "edge")
    s.ctl("node", "add", "pair", "--address", f"relay:{port}")
    s.ctl("link", "add", "edge", "pair")
    set_policy(s, {"id": "all", "priority": 1000, "action": "route", "route": "pair"})
    http = s.port("ingress-1", "http")
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", http)) == 0, 10,
             what="ingress listening")
    return http


def two_relays_connected(s, port, relays):
    """pair_behind_one_name, once the ingress's pool has a connection to each relay."""
    http = pair_behind_one_name(s, port, relays)
    wait_for(lambda: pool_counters(s, "ingress-1", "ingress")["connections"] == len(relays),
             10, what="a connection to each relay")
    return http


def test_a_node_name_with_several_relays_behind_it_shares_the_load_and_survives_one_going(
        suite, targets):
    """A node whose address is one name with several addresses, one relay behind each (a
    scaled relay service behind its DNS name; here an /etc/hosts that the ingress alone
    sees). The ingress keeps a connection to each relay and gives each new flow to the one
    that carries the fewest streams, turn by turn among equals: one flow after another
    alternates. When one relay dies (SIGKILL), new flows reach the other at once: no 502,
    and the routes stay (the node has a relay up). Then a rolling restart under the same
    name: the dead relay comes back, the other one drains (SIGTERM), and new flows go to the
    one that is up, at once, although the pool was waiting out a back-off for it."""
    s = suite
    port = free_port()
    addr = {"relay-a": "127.0.0.2", "relay-b": "127.0.0.3"}
    http = two_relays_connected(s, port, addr)
    line = f"tunnel done target=127.0.0.1:{targets['http']}"

    def requests(n, relays):
        """n requests, each in a new tunnel (answered 200, so not 502); how many of them each
        of relays carried."""
        def done():
            return {r: s.daemons[r].log_text().count(line) for r in relays}
        before = done()
        for _ in range(n):
            data = last_request(open_tunnel(http, targets["http"]))
            assert data.endswith(b"hello through hermes\n"), data[:200]
        wait_for(lambda: sum(done().values()) - sum(before.values()) == n, 5,
                 what=f"{n} tunnels done at the relays")
        return {r: done()[r] - before[r] for r in relays}

    assert requests(6, list(addr)) == {"relay-a": 3, "relay-b": 3}

    # relay-a dies without a word: the next flows reach relay-b at once (a flow whose CONNECT
    # met the dead connection is sent again); the pool keeps trying relay-a's address in the
    # background, which is information, not an unreachable hop
    s.allow_error(r"instance down kind=relay instance=relay-a")
    version = s.status()["config_version"]
    s.daemons["relay-a"].kill9()
    assert requests(5, ["relay-b"]) == {"relay-b": 5}
    wait_for(lambda: {n["name"]: n for n in s.ctl_json("node", "list")}["pair"]["relays_up"]
             == 1, 8, what="the controller counting the dead relay down")
    pair = {n["name"]: n for n in s.ctl_json("node", "list")}["pair"]
    assert pair["relays"] == 2 and "avoided" not in pair, pair
    assert s.status()["config_version"] == version  # the routes stayed
    log = s.daemons["ingress-1"].log_text()
    assert f"address 127.0.0.2:{port} failed" in log, log[-3000:]
    assert "cannot reach next hop" not in log, log[-3000:]
    assert pool_counters(s, "ingress-1", "ingress")["connections"] == 1

    # a rolling restart under the one name: relay-a comes back, relay-b drains. The pool's
    # connection to relay-b goes away, the last that served, so relay-a's address is tried
    # at once instead of at the end of its back-off
    start_pair_relay(s, "relay-a-2", addr["relay-a"], port)
    s.daemons["relay-b"].expected_exit = True
    s.daemons["relay-b"].proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining on signal 15" in s.daemons["relay-b"].log_text(), 5,
             what="relay-b draining")
    started = time.monotonic()
    assert requests(4, ["relay-a-2", "relay-b"]) == {"relay-a-2": 4, "relay-b": 0}
    assert time.monotonic() - started < 3, "the pool waited out its back-off"
    assert stopped(s.daemons["relay-b"], 10) == 0
    assert "cannot reach next hop" not in s.daemons["ingress-1"].log_text()


def test_a_new_flow_goes_to_the_relay_with_the_fewest_open_streams(suite, targets):
    """Flows held open: four tunnels alternate over the two relays of one name (t1, t3 on
    one, t2, t4 on the other). Once t1 and t3 are done, that relay carries nothing while the
    other still carries two, so the next two tunnels both go to it (taking turns would have
    split them)."""
    s = suite
    addr = {"relay-a": "127.0.0.2", "relay-b": "127.0.0.3"}
    http = two_relays_connected(s, free_port(), addr)
    line = f"tunnel done target=127.0.0.1:{targets['http']}"

    def done():
        return {r: s.daemons[r].log_text().count(line) for r in addr}

    def finish(*tunnels):
        before = sum(done().values())
        for t in tunnels:
            assert last_request(t).endswith(b"hello through hermes\n")
        wait_for(lambda: sum(done().values()) - before == len(tunnels), 5,
                 what=f"{len(tunnels)} tunnels done at the relays")

    t1, t2, t3, t4 = (open_tunnel(http, targets["http"]) for _ in range(4))
    finish(t1, t3)
    first = done()
    x = next(r for r in addr if first[r] == 2)  # the relay that carried t1 and t3
    y = next(r for r in addr if r != x)
    assert first[y] == 0, first
    t5, t6 = (open_tunnel(http, targets["http"]) for _ in range(2))
    finish(t5, t6)
    assert done() == {x: 4, y: 0}
    finish(t2, t4)
    assert done() == {x: 4, y: 2}


def test_relays_that_join_or_leave_a_name_are_seen_when_its_answer_expires(suite, targets):
    """The pool looks a hop's name up again as its answer expires (--dns-cache-s 1 here): a
    relay whose address joins the name is connected to and takes its share of new flows; one
    whose address leaves it takes no new flows and its idle connection is closed."""
    s = suite
    port = free_port()
    addr = {"relay-a": "127.0.0.2", "relay-b": "127.0.0.3"}
    http = pair_behind_one_name(s, port, addr, hosts="127.0.0.2 relay\n",
                                extra=("--dns-cache-s", "1"))
    hosts = os.path.join(s.dir, "ingress-1.hosts")
    line = f"tunnel done target=127.0.0.1:{targets['http']}"

    def requests(n):
        before = {r: s.daemons[r].log_text().count(line) for r in addr}
        for _ in range(n):
            data = last_request(open_tunnel(http, targets["http"]))
            assert data.endswith(b"hello through hermes\n"), data[:200]
        wait_for(lambda: sum(s.daemons[r].log_text().count(line) for r in addr)
                 - sum(before.values()) == n, 5, what=f"{n} tunnels done at the relays")
        return {r: s.daemons[r].log_text().count(line) - before[r] for r in addr}

    def connections():
        return pool_counters(s, "ingress-1", "ingress")["connections"]

    wait_for(lambda: connections() == 1, 10, what="the pool connected to relay-a")
    assert requests(3) == {"relay-a": 3, "relay-b": 0}

    with open(hosts, "w") as f:  # the same file: the bind mount shows the new text
        f.write("127.0.0.2 relay\n127.0.0.3 relay\n")
    wait_for(lambda: connections() == 2, 5, what="the pool connected to relay-b")
    assert requests(4) == {"relay-a": 2, "relay-b": 2}

    with open(hosts, "w") as f:
        f.write("127.0.0.3 relay\n")
    wait_for(lambda: connections() == 1, 5, what="the pool letting relay-a go")
    assert f"address 127.0.0.2:{port} left the name" in s.daemons["ingress-1"].log_text()
    assert requests(3) == {"relay-a": 0, "relay-b": 3}
    log = s.daemons["ingress-1"].log_text()
    assert "cannot reach next hop" not in log and " failed (" not in log, log[-3000:]


def test_a_name_none_of_whose_relays_answers_is_unreachable_with_each_reason(suite, targets):
    """Neither address of the node's name has a relay: a flow is answered 502, and the
    warning names each address and what it said."""
    s = suite
    port = free_port()
    http = pair_behind_one_name(s, port, {})
    s.allow_error(r"cannot reach next hop relay relay:")
    resp = raw_request(http, f"CONNECT 127.0.0.1:{targets['http']} HTTP/1.1\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 502 "), resp
    log = s.daemons["ingress-1"].log_text()
    assert re.search(rf"cannot reach next hop relay relay:{port}: connect to 127\.0\.0\.[23]:"
                     rf"{port}: Connection refused; connect to 127\.0\.0\.[23]:{port}: "
                     r"Connection refused", log), log[-3000:]


def test_a_relay_name_that_cannot_be_resolved_is_answered_502_with_the_reason(suite, targets):
    """A node whose relay address is a name that never resolves (.invalid): a flow routed
    through it is answered 502 and the warning says why; the warm pool asks again with a
    back-off, not in a loop; the ingress keeps serving other flows."""
    s = suite
    s.start_controller()
    s.start_service("policy")
    s.start_service("ingress", extra=("--node", "edge"))
    s.ctl("node", "add", "edge")
    s.ctl("node", "add", "gone", "--address", "no-relay.invalid:4433")
    s.ctl("link", "add", "edge", "gone")
    set_policy(s, {"id": "web", "priority": 10, "action": "allow",
                   "match": {"ports": [str(targets["http"])]}},
               {"id": "all", "priority": 1000, "action": "route", "route": "gone"})
    s.allow_error(r"cannot reach next hop relay no-relay\.invalid:4433: ")
    http = s.port("ingress-1", "http")
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", http)) == 0, 10,
             what="ingress listening")
    resp = raw_request(http, f"CONNECT 127.0.0.1:{targets['tls']} HTTP/1.1\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 502 "), resp
    log = s.daemons["ingress-1"].log_text()
    assert re.search(r"cannot reach next hop relay no-relay\.invalid:4433: cannot resolve "
                     r"'no-relay\.invalid'", log), log[-3000:]
    # the warm hop is asked for again with a back-off: a handful of tries in 2 s
    tries = log.count("cannot reach next hop relay no-relay.invalid")
    time.sleep(2)
    assert s.daemons["ingress-1"].log_text().count(
        "cannot reach next hop relay no-relay.invalid") - tries <= 4
    # and a flow the policy sends direct still works
    data = last_request(open_tunnel(http, targets["http"]))
    assert data.endswith(b"hello through hermes\n"), data[:200]


def test_a_relay_on_an_ipv6_address(suite, targets):
    """A node whose relay address is an IPv6 literal ([::1]:PORT): the pool connects to it
    and flows cross it."""
    s = suite
    port = free_port()
    s.start_controller()
    s.start_service("policy")
    s.start_service("ingress", extra=("--node", "edge"))
    start_pair_relay(s, "relay-6", "[::1]", port)
    s.ctl("node", "add", "edge")
    s.ctl("node", "add", "pair", "--address", f"[::1]:{port}")
    s.ctl("link", "add", "edge", "pair")
    set_policy(s, {"id": "all", "priority": 1000, "action": "route", "route": "pair"})
    http = s.port("ingress-1", "http")
    wait_for(lambda: pool_counters(s, "ingress-1", "ingress")["connections"] == 1, 10,
             what="the pool connected to [::1]")
    data = last_request(open_tunnel(http, targets["http"]))
    assert data.endswith(b"hello through hermes\n"), data[:200]
    wait_for(lambda: f"tunnel done target=127.0.0.1:{targets['http']}"
             in s.daemons["relay-6"].log_text(), 5, what="the tunnel done at the relay")


def test_a_relay_address_that_fails_the_handshake_is_left_to_its_back_off(suite, targets):
    """The node's name leads to two addresses: at one, something that accepts TCP and closes
    at once (no TLS); at the other, a relay. Every flow goes to the relay, none is answered
    502, and the failing address is logged as information (the hop is not unreachable) and
    tried again with a back-off, not in a loop."""
    s = suite
    port = free_port()
    first, other = relay_name_order(s)
    closer = socket.socket()
    closer.bind((first, port))
    closer.listen(16)
    stop = threading.Event()
    accepted = []

    def close_all():
        closer.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = closer.accept()
                accepted.append(time.monotonic())
                c.close()
            except OSError:
                pass

    t = threading.Thread(target=close_all, daemon=True)
    t.start()
    try:
        http = pair_behind_one_name(s, port, {"relay-b": other})
        for _ in range(4):
            data = last_request(open_tunnel(http, targets["http"]))
            assert data.endswith(b"hello through hermes\n"), data[:200]
        wait_for(lambda: s.daemons["relay-b"].log_text().count(
            f"tunnel done target=127.0.0.1:{targets['http']}") == 4, 5, what="4 tunnels done")
        log = s.daemons["ingress-1"].log_text()
        assert f"next hop relay relay:{port}: address {first}:{port} failed" in log, log
        assert "cannot reach next hop" not in log
        # back-off: 0.2, 0.4, 0.8 ... s between tries, so in 2 s at most about 5 tries
        time.sleep(2)
        assert 1 <= len(accepted) <= 6, accepted
        wait_for(lambda: pool_counters(s, "ingress-1", "ingress")["failed"] == len(accepted), 2,
                 what="a failed attempt counted for each connection the closer took")
    finally:
        stop.set()
        t.join(5)
        closer.close()


class DyingRelay:
    """A relay (python3-h2 with the relay identity's certificate) on ip:port that takes one
    connection, closes its port, and drops the connection, without an answer or a TLS
    close_notify, when the first request arrives: a relay that dies as a stream reaches it."""

    def __init__(self, s, ip, port):
        import h2.config
        import h2.connection
        import h2.events
        tls_dir = os.path.join(s.keys, "tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(os.path.join(tls_dir, "relay.crt"),
                            os.path.join(tls_dir, "relay.key"))
        ctx.load_verify_locations(os.path.join(tls_dir, "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        self.lsock = socket.socket()
        self.lsock.bind((ip, port))
        self.lsock.listen(4)
        self.requests = 0

        def run():
            self.lsock.settimeout(20)
            try:
                raw, _ = self.lsock.accept()
            finally:
                self.lsock.close()  # later connections are refused
            raw.settimeout(20)
            # the routing headers of a Hermes CONNECT are not for python3-h2 to judge
            config = h2.config.H2Configuration(client_side=False,
                                               validate_inbound_headers=False)
            with ctx.wrap_socket(raw, server_side=True) as t:
                conn = h2.connection.H2Connection(config)
                conn.initiate_connection()
                t.sendall(conn.data_to_send())
                while data := t.recv(65536):
                    events = conn.receive_data(data)
                    if any(isinstance(e, h2.events.RequestReceived) for e in events):
                        self.requests += 1
                        return
                    t.sendall(conn.data_to_send())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self):
        self.thread.join(20)
        self.lsock.close()
        return not self.thread.is_alive() and self.requests == 1


def test_a_connect_whose_relay_dies_before_answering_is_sent_again(suite, targets):
    """One of the name's addresses has a relay that dies as the first stream reaches it
    (DyingRelay), the other a real relay. Two flows, one after the other: the pool gives one
    of them to each relay. The CONNECT that met the dying relay (none of the client's bytes
    sent yet) is sent again on a connection that works: both clients get their 200 and
    their bytes, no 502."""
    s = suite
    port = free_port()
    first, other = relay_name_order(s)
    dying = DyingRelay(s, first, port)
    try:
        http = pair_behind_one_name(s, port, {"relay-b": other})
        wait_for(lambda: pool_counters(s, "ingress-1", "ingress")["connections"] == 2, 10,
                 what="a connection to each relay")
        for _ in range(2):
            data = last_request(open_tunnel(http, targets["http"]))
            assert data.endswith(b"hello through hermes\n"), data[:200]
        assert dying.done()
        log = s.daemons["ingress-1"].log_text()
        assert "closed before it answered: sending the CONNECT again" in log, log[-3000:]
        assert "flow failed" not in log, log[-3000:]
        wait_for(lambda: s.daemons["relay-b"].log_text().count(
            f"tunnel done target=127.0.0.1:{targets['http']}") == 2, 5, what="relay-b's tunnels")
    finally:
        dying.done()


def test_a_relay_sends_a_connect_again_when_the_next_relay_dies_before_answering(suite,
                                                                                 targets):
    """The same one hop further: ingress -> core -> far, where far's address is a name
    with a DyingRelay behind one address and the real far relay behind the other, seen by
    core. Of two flows, core gives one to each; it sends the CONNECT that met the dying
    relay again, to the real one: both clients get their bytes."""
    s = suite
    port = free_port()
    first, other = relay_name_order(s)
    dying = DyingRelay(s, first, port)
    try:
        s.start_controller()
        s.start_service("policy")
        s.start_service("ingress", extra=("--node", "edge"))
        s.start_service("relay", "relay-core", extra=("--node", "core"), hosts=RELAY_HOSTS)
        s.start_service("relay", "relay-far", extra=("--node", "far", "--listen",
                                                     f"{other}:{port}"))
        for r in ("relay-core", "relay-far"):
            wait_for(lambda: "relay listening on" in s.daemons[r].log_text(), 10,
                     what=f"{r} listening")
        s.ctl("node", "add", "edge")
        s.ctl("node", "add", "core", "--address",
              f"127.0.0.1:{s.port('relay-core', 'tunnel')}")
        s.ctl("node", "add", "far", "--address", f"relay:{port}")
        s.ctl("link", "add", "edge", "core")
        s.ctl("link", "add", "core", "far")
        set_policy(s, MODES["two-relays"])
        http = s.port("ingress-1", "http")
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", http)) == 0, 10,
                 what="ingress listening")
        data = last_request(open_tunnel(http, targets["http"]))
        assert data.endswith(b"hello through hermes\n"), data[:200]
        # core connected to both of far's addresses for the first flow's sake
        wait_for(lambda: pool_counters(s, "relay-core", "relay")["connections"] == 2
                 or dying.requests, 10, what="core connected to both of far's addresses")
        data = last_request(open_tunnel(http, targets["http"]))
        assert data.endswith(b"hello through hermes\n"), data[:200]
        assert dying.done()
        wait_for(lambda: s.daemons["relay-far"].log_text().count(
            f"tunnel done target=127.0.0.1:{targets['http']}") == 2, 5, what="far's tunnels")
        log = s.daemons["relay-core"].log_text()
        assert "closed before it answered: sending the CONNECT again" in log, log[-3000:]
        assert "tunnel refused" not in log, log[-3000:]
    finally:
        dying.done()
