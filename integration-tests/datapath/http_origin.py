"""The plain HTTP origin of the data-path tests: serves files from a folder (GET, HEAD),
and answers a POST or PUT with the sha256 and length of the body it received, with
Content-Length or chunked framing (decoded here, so the test sees what arrived).
GET /drop-next answers, then closes its connection without answering the next request on
it (an origin closing a kept-alive connection just as a proxy reuses it). Its log names
the client's address and port, so that a test sees which connection carried a request."""
import hashlib
import http.server
import os
import socket
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self):
        h, n = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    h.update(chunk)
                    n += len(chunk)
                    left -= len(chunk)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
                left -= len(chunk)
        return h.hexdigest(), n

    def do_POST(self):
        digest, n = self._body()
        body = f"{digest} {n}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST

    def do_GET(self):
        if getattr(self, "drop_next", False):
            sys.stderr.write("%s:%d dropped %s\n" % (*self.client_address[:2], self.path))
            self.close_connection = True
            return
        if self.path == "/drop-next":
            self.drop_next = True
            body = b"dropping the next request\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s:%d %s\n" % (*self.client_address[:2], fmt % args))


port, root = int(sys.argv[1]), sys.argv[2]
bind = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET


os.chdir(root)
Server((bind, port), Handler).serve_forever()
