"""The target of the transparent-proxy test, run in the server namespace:
   target.py ADDRESS HTTP_PORT ECHO_PORT ROOT_DIR   (ADDRESS IPv4 or IPv6)
- HTTP on HTTP_PORT: GET serves files from ROOT_DIR; PUT stores the body in ROOT_DIR/up/ and
  answers with its sha256 (hex). Every accepted connection ("conn IP") and every request
  (the usual access-log line, with the client's address first) goes to stderr.
- TCP echo on ECHO_PORT: sends back everything it reads; at EOF half-closes and closes
  (also logged as "echo conn IP" / "echo done IP BYTES")."""
import hashlib
import http.server
import os
import socket
import socketserver
import sys
import threading


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Handler(http.server.SimpleHTTPRequestHandler):
    def setup(self):
        log(f"conn {self.client_address[0]}")
        super().setup()

    def log_message(self, fmt, *args):
        log("%s - - %s" % (self.client_address[0], fmt % args))

    def do_PUT(self):
        length = int(self.headers.get("Content-Length", "0"))
        name = os.path.basename(self.path.strip("/")) or "upload"
        h = hashlib.sha256()
        left = length
        with open(os.path.join(self.directory, "up", name), "wb") as f:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        body = f"{h.hexdigest()} {length - left}\n".encode()
        self.send_response(200 if left == 0 else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        peer = self.client_address[0]
        log(f"echo conn {peer}")
        n = 0
        while True:
            data = self.request.recv(1 << 16)
            if not data:
                break
            self.request.sendall(data)
            n += len(data)
        self.request.shutdown(socket.SHUT_WR)
        log(f"echo done {peer} {n}")


class ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    addr, http_port, echo_port, root = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    os.makedirs(os.path.join(root, "up"), exist_ok=True)

    class H(Handler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

    family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    class Web(http.server.ThreadingHTTPServer):
        address_family = family

    class EchoServer(ThreadingTCP):
        address_family = family

    web = Web((addr, http_port), H)
    web.daemon_threads = True
    echo = EchoServer((addr, echo_port), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    log("ready")
    web.serve_forever()


if __name__ == "__main__":
    main()
