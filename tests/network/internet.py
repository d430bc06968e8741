"""A small "internet" on loopback for the gateway tests: HTTP and TLS servers that count
the connections they accept and the requests they serve, and a DNS server whose answers
the test decides (fixed, private, or flipping between lookups) and which records every
question it is asked.

The gateway reaches these servers through its resolver: overrides
(SAFEHOUSE_GATEWAY_RESOLVE, trusted like the public internet) map test names to
127.0.0.1, and SAFEHOUSE_GATEWAY_DNS points its stub resolver at the DNS server, whose
answers are checked like any real DNS answer.
"""
import http.server
import json
import os
import socket
import socketserver
import ssl
import struct
import subprocess
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        srv = self.server.owner
        srv.record(self)
        if self.path == "/hello":
            return self._send(200, f"hello from {srv.name}".encode())
        if self.path == "/headers":
            return self._send(200, json.dumps(dict(self.headers)).encode(), "application/json")
        if self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while n > 0:
                    k = min(n, len(chunk))
                    self.wfile.write(chunk[:k])
                    n -= k
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        return self._send(404, b"no such page")

    def do_POST(self):
        srv = self.server.owner
        srv.record(self)
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        return self._send(200, body, "application/octet-stream")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        sock, addr = super().get_request()
        self.owner.note_connection()
        if self.owner.tls is not None:
            sock = self.owner.tls.wrap_socket(sock, server_side=True)
        return sock, addr


class Web:
    """An HTTP(S) server on `bind`:random port, in a thread."""

    def __init__(self, name, bind="127.0.0.1", tls=None):
        self.name = name
        self.tls = tls
        self.connections = 0
        self.requests = []
        self.lock = threading.Lock()
        self.server = _Server((bind, 0), _Handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def note_connection(self):
        with self.lock:
            self.connections += 1

    def record(self, handler):
        with self.lock:
            self.requests.append((handler.command, handler.path, handler.headers.get("Host")))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def make_cert(directory, name):
    """A self-signed certificate for `name`; returns (cert path, key path)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True)
    os.chmod(cert, 0o644)
    return cert, key


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


class Dns:
    """A UDP DNS server answering A queries from `answers`: name -> list of IPv4 strings,
    or a function(count) -> list (called with how many times the name was asked). AAAA
    queries get an empty NOERROR answer; unknown names NXDOMAIN. Every question is kept
    in `questions` as (name, qtype)."""

    def __init__(self, answers):
        self.answers = answers
        self.questions = []
        self.asked = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            try:
                reply = self._answer(data)
            except (ValueError, IndexError, struct.error):
                continue
            self.sock.sendto(reply, peer)

    def _answer(self, q):
        qid, flags, qd = struct.unpack(">HHH", q[:6])
        pos, labels = 12, []
        while q[pos]:
            n = q[pos]
            labels.append(q[pos + 1:pos + 1 + n].decode().lower())
            pos += 1 + n
        qname = ".".join(labels)
        qtype, _qclass = struct.unpack(">HH", q[pos + 1:pos + 5])
        question = q[12:pos + 5]
        self.questions.append((qname, qtype))
        entry = self.answers.get(qname)
        if entry is None:
            return struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
        addrs = []
        if qtype == 1:
            count = self.asked.get(qname, 0)
            self.asked[qname] = count + 1
            addrs = entry(count) if callable(entry) else entry
        rrs = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(a) for a in addrs)
        return struct.pack(">HHHHHH", qid, 0x8180, 1, len(addrs), 0, 0) + question + rrs

    def close(self):
        self.stopped = True
        self.sock.close()
