"""Pieces shared by the bypass integration tests (test_bypass.py, test_ingress_bypass.py):
shell and sysctl helpers for the namespaces they make, a way to open sockets inside one
namespace from the test process, the seeded payloads, the server that runs in the server
namespace, and the agent's own socket spoken directly."""
import contextlib
import ctypes
import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import threading

from hermes_harness import wait_for

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd}: {r.returncode} {r.stderr}")
    return r


@contextlib.contextmanager
def netns(name):
    """Runs the block in namespace name (this thread only): sockets made there stay there."""
    me = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        _libc.setns(me, CLONE_NEWNET)
        os.close(fd)
        os.close(me)


def sysctl(ns, **kv):
    for k, v in kv.items():
        sh(f"ip netns exec {ns} sysctl -q -w net.ipv4.{k}={v}")


def payload(seed, direction, n):
    return random.Random(f"{seed}/{direction}").randbytes(n)


class Server:
    """Listens on addr:port in namespace ns. Per connection: reads "HELLO seed up down mode\\n",
    answers "OK\\n", then receives `up` bytes while sending `down` bytes once the first upload
    bytes arrived (so nothing moves before the client starts), and closes as `mode` says: cfin
    (waits for the client's FIN), sfin (closes first), rst/idle (waits up to hold_s for the
    client, tolerates a reset)."""

    def __init__(self, ns, addr, port, hold_s):
        self.hold_s = hold_s
        with netns(ns):
            self.lsock = socket.socket()
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.lsock.bind((addr, port))
            self.lsock.listen(256)
        self.results = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        res = {"error": None}
        seed = None
        try:
            conn.settimeout(30)
            head = b""
            while not head.endswith(b"\n"):
                b = conn.recv(1)
                if not b:
                    raise EOFError("no header")
                head += b
            _, seed, up, down, mode = head.decode().split()
            up, down = int(up), int(down)
            with self.lock:
                self.results[seed] = res
            h = hashlib.sha256()
            got = 0
            sender = None
            if mode.endswith("+early"):  # streams with the OK, whatever the client does
                mode = mode[:-len("+early")]
                data = b"OK\n" + payload(seed, "down", down)
                sender = threading.Thread(target=conn.sendall, args=(data,), daemon=True)
                sender.start()
            else:
                conn.sendall(b"OK\n")
            while got < up:
                b = conn.recv(1 << 16)
                if not b:
                    raise EOFError(f"EOF after {got} of {up} bytes")
                # no delayed ACK: a trickle must leave the legs quiet between its bytes
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                if sender is None:
                    data = payload(seed, "down", down)
                    sender = threading.Thread(target=conn.sendall, args=(data,), daemon=True)
                    sender.start()
                h.update(b)
                got += len(b)
            if sender:
                sender.join(30)
            res["up_sha"] = h.hexdigest()
            if mode == "sfin":
                conn.shutdown(socket.SHUT_WR)
                res["eof"] = conn.recv(1) == b""
            elif mode == "cfin":
                res["eof"] = conn.recv(1) == b""
                conn.shutdown(socket.SHUT_WR)
            else:  # rst, idle: wait for whatever the client does
                conn.settimeout(self.hold_s)
                try:
                    res["tail"] = conn.recv(1)
                except ConnectionResetError:
                    res["reset"] = True
                except socket.timeout:
                    res["timeout"] = True
        except Exception as e:  # reported to the test through results
            res["error"] = repr(e)
        finally:
            res["final"] = True
            conn.close()

    def result(self, seed, final=True, timeout=20):
        """The server's view of connection seed: once its upload is checked, or finished."""
        def ready():
            r = self.results.get(seed)
            return r if r and (r.get("final") or (not final and "up_sha" in r)) else None
        return wait_for(ready, timeout, what=f"server result {seed}")

    def close(self):
        self.lsock.close()


def agent_query(path, op):
    """One query ("flows", "export_p4") on the agent's Unix socket; its answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(path)
    s.send(json.dumps({"v": 1, "op": op, "id": f"t-{op}"}).encode())
    data = s.recv(16 << 20)
    s.close()
    return json.loads(data.split(b"\0")[0])


def transfer(sock, data, down):
    """Sends data while receiving `down` bytes on sock; returns the sha256 of what came."""
    err = []

    def send():
        try:
            sock.sendall(data)
        except OSError as e:
            err.append(e)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    h, got = hashlib.sha256(), 0
    while got < down:
        b = sock.recv(1 << 16)
        assert b, f"EOF after {got} of {down} bytes"
        h.update(b)
        got += len(b)
    t.join(30)
    assert not t.is_alive() and not err, err or "the upload did not finish"
    return h.hexdigest()


def finish(sock, mode):
    """Ends a client connection as mode says: cfin (client FIN first, then waits for the
    server's), sfin (waits for the server's FIN, then its own), rst (a reset), else close."""
    if mode == "cfin":
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""
    elif mode == "sfin":
        assert sock.recv(1) == b""
        sock.shutdown(socket.SHUT_WR)
    elif mode == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
