"""A real registry on loopback for the tests: Debian's docker-registry (distribution
2.8) with its own storage, optionally behind basic auth (htpasswd) or token auth (a small
token server here signing JWTs with an openssl key), and a proxy that can cut transfers."""
import base64
import http.client
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from e2e.support import free_port, skip_or_fail


def require_registry():
    if not shutil.which("docker-registry"):
        skip_or_fail("docker-registry is not installed (scripts/test installs it)")


class Registry:
    def __init__(self, auth=None, users=None):
        require_registry()
        self.dir = Path(tempfile.mkdtemp(prefix="safehouse-registry-"))
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.users = users or {}
        self.token_server = None
        lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.dir}/data", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.addr}"]
        if auth == "basic":
            pw = self.dir / "htpasswd"
            for u, p in self.users.items():
                subprocess.run(["htpasswd", "-Bb" + ("c" if not pw.exists() else ""), str(pw), u, p],
                               check=True, capture_output=True)
            lines += ["auth:", "  htpasswd:", "    realm: basic-realm", f"    path: {pw}"]
        elif auth == "token":
            self.token_server = TokenServer(self.dir, self.users)
            lines += ["auth:", "  token:", f"    realm: http://{self.token_server.addr}/token",
                      "    service: safehouse-test", "    issuer: safehouse-test-issuer",
                      f"    rootcertbundle: {self.token_server.cert}"]
        (self.dir / "config.yml").write_text("\n".join(lines) + "\n")
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/")
                if c.getresponse().status in (200, 401):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start: " + (self.dir / "registry.log").read_text()[-2000:])

    def basic(self, user):
        return "Basic " + base64.b64encode(f"{user}:{self.users[user]}".encode()).decode()

    def push_auth(self, user, repo):
        """An Authorization header for pushing with this registry's auth scheme."""
        if self.token_server:
            return "Bearer " + self.token_server.issue(user, [{"type": "repository", "name": repo,
                                                                "actions": ["pull", "push"]}])
        return self.basic(user)

    def blob_data_path(self, digest):
        hexd = digest.split(":")[1]
        return self.dir / "data" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if self.token_server:
            self.token_server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens (RS256 JWTs with the signing certificate in `x5c`) to
    clients that present a known user's basic credentials; anonymous gets nothing."""

    def __init__(self, d, users):
        self.key = d / "token.key"
        self.cert = d / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=safehouse-test-token"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users = users
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                auth = self.headers.get("Authorization", "")
                server.requests.append((self.path, auth))
                user = None
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(u) == p:
                        user = u
                if user is None:
                    self.send_response(401)
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    typ, name, actions = scope.split(":")
                    access.append({"type": typ, "name": name, "actions": actions.split(",")})
                body = json.dumps({"token": server.issue(user, access), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def issue(self, user, access):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": "safehouse-test-issuer", "sub": user, "aud": "safehouse-test", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing,
                             check=True, capture_output=True).stdout
        return signing.decode() + "." + b64url(sig)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class CuttingProxy:
    """Forwards to the registry; the first GET of each blob in `cut` is cut off after
    `after` bytes (the connection closes), or stalls forever when `stall`. Records
    every request's method, path and Range header."""

    def __init__(self, upstream_port, cut=(), after=1 << 20, stall=False):
        self.upstream = upstream_port
        self.cut = set(cut)
        self.after = after
        self.stall = stall
        self.seen = []
        self.stop = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.seen.append((method, self.path, self.headers.get("Range")))
                c = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                c.request(method, self.path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                digest = self.path.rsplit("/", 1)[-1]
                cut_now = method == "GET" and "/blobs/" in self.path and digest in proxy.cut
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Connection", "close" if cut_now else "keep-alive")
                self.end_headers()
                if cut_now:
                    proxy.cut.discard(digest)
                    self.wfile.write(data[:proxy.after])
                    self.wfile.flush()
                    if proxy.stall:
                        proxy.stop.wait(120)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def do_GET(self):
                self.handle_one("GET")

            def do_HEAD(self):
                self.handle_one("HEAD")

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.addr = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
