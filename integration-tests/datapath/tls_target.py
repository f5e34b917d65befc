"""A tiny HTTPS origin for the tests: answers GET / (any path it does not serve) with a fixed
body over TLS with its own certificate, so a client can prove its TLS session crossed the
proxies untouched; given a folder, GET /NAME serves the file NAME from it (for byte-exact
downloads through proxies that fetch https:// URLs themselves).

    tls_target.py PORT CERT KEY [ROOT]
"""
import http.server
import os
import shutil
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a proxy may send its next request on it
    root = None

    def do_GET(self):
        name = self.path.lstrip("/")
        path = os.path.join(self.root, name) if self.root and name and "/" not in name else None
        if path and os.path.isfile(path):
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.end_headers()
            with open(path, "rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)
            return
        body = b"hello over end-to-end TLS\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
Handler.root = sys.argv[4] if len(sys.argv) > 4 else None
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
