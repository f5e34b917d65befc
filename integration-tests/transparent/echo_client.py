"""An echo client for the transparent-proxy test, run in the client namespace:
   echo_client.py HOST PORT BYTES SEED
Sends BYTES pseudo-random bytes (from SEED) while reading the echo at the same time, then
half-closes and reads to EOF. Prints one JSON line: sent, received, and whether the echo
is byte-exact. Exit 0 only when it is."""
import hashlib
import json
import random
import socket
import sys
import threading


def main():
    host, port, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = random.Random(seed).randbytes(total)
    s = socket.create_connection((host, port), timeout=20)
    err = []

    def send():
        try:
            view = memoryview(data)
            for i in range(0, total, 1 << 16):
                s.sendall(view[i:i + (1 << 16)])
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(repr(e))

    t = threading.Thread(target=send)
    t.start()
    got = hashlib.sha256()
    received = 0
    try:
        while chunk := s.recv(1 << 16):
            got.update(chunk)
            received += len(chunk)
    except OSError as e:
        err.append(repr(e))
    t.join(30)
    s.close()
    ok = not err and received == total and got.hexdigest() == hashlib.sha256(data).hexdigest()
    print(json.dumps({"sent": total, "received": received, "exact": ok, "errors": err}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
