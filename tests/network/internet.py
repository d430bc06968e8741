"""A small "internet" on loopback for the gateway tests: HTTP and TLS servers that count
the connections they accept and the requests they serve, and a DNS server whose answers
the test decides (fixed, private, or flipping between lookups) and which records every
question it is asked.

The gateway reaches these servers through its resolver: overrides
(SAFEHOUSE_GATEWAY_RESOLVE, trusted like the public internet) map test names to
127.0.0.1, and SAFEHOUSE_GATEWAY_DNS points its stub resolver at the DNS server, whose
answers are checked like any real DNS answer.

`Lan` adds a second machine: a network namespace joined to the host by a veth pair, with
public-looking addresses (TEST-NET-3 and the IPv6 documentation prefix) on both ends. Its
far end is "the internet" for checks that need a real, non-host, non-private address; its
host end is an address *of this host* that no special range covers (NET-01).
"""
import ctypes
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
    freebind = False

    def server_bind(self):
        if self.freebind:  # listen on an address the host does not have yet
            self.socket.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        # HTTPServer.server_bind would look the address up (getfqdn): not on this network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self):
        sock, addr = super().get_request()
        self.owner.note_connection()
        if self.owner.tls is not None:
            sock = self.owner.tls.wrap_socket(sock, server_side=True)
        return sock, addr


class _Server6(_Server):
    address_family = socket.AF_INET6


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name, fn):
    """fn() on a thread that joined the network namespace `ip netns` calls `name`: a
    socket it creates lives in that namespace for good."""
    result = {}

    def run():
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {name}")
            result["value"] = fn()
        except BaseException as e:  # handed to the caller
            result["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class Web:
    """An HTTP(S) server on `bind`:random port (IPv4 or IPv6), in a thread; in the
    network namespace `netns` if given; `freebind` listens before the address exists."""

    def __init__(self, name, bind="127.0.0.1", tls=None, netns=None, port=0, freebind=False):
        self.name = name
        self.tls = tls
        self.connections = 0
        self.requests = []
        self.lock = threading.Lock()
        cls = _Server6 if ":" in bind else _Server

        def make():
            srv = cls((bind, port), _Handler, bind_and_activate=False)
            srv.freebind = freebind
            try:
                srv.server_bind()
                srv.server_activate()
            except OSError:
                srv.server_close()
                raise
            return srv

        self.server = in_netns(netns, make) if netns else make()
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
    """A UDP DNS server answering A and AAAA queries from `answers`: name -> list of
    address strings (IPv4 ones answer A, IPv6 ones AAAA), or a function(count) -> list
    (called with how many times the name was asked for A). Unknown names NXDOMAIN. Every
    question is kept in `questions` as (name, qtype)."""

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
            addrs = [a for a in (entry(count) if callable(entry) else entry) if ":" not in a]
            rrs = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(a) for a in addrs)
        elif qtype == 28 and not callable(entry):
            addrs = [a for a in entry if ":" in a]
            rrs = b"".join(struct.pack(">HHHIH", 0xC00C, 28, 1, 0, 16) + socket.inet_pton(socket.AF_INET6, a)
                           for a in addrs)
        else:
            rrs = b""
        return struct.pack(">HHHHHH", qid, 0x8180, 1, len(addrs), 0, 0) + question + rrs

    def close(self):
        self.stopped = True
        self.sock.close()


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Lan:
    """A second machine on a veth link (root only). The host's end carries `host4` and
    `host6`: addresses of this host that no special range covers. The far end, in the
    network namespace `ns`, carries `far4` and `far6`: reachable, public-looking, and not
    the host's. `spare4` is a further address of the block, on nothing until a test adds
    it to the host (`add_to_host`). Names and blocks depend on the pid, so parallel test
    runs on one machine do not meet."""

    def __init__(self):
        pid = os.getpid()
        used = _ip("-o", "addr", "show").stdout
        for k in [(pid + i) % 60 + 1 for i in range(60)]:
            if f"203.0.113.{4 * k + 1}/" not in used:
                break
        else:
            raise RuntimeError("no free 203.0.113.0/30 block for the test LAN")
        self.ns, self.host_if, self.far_if = f"shlan{pid}", f"shh{pid % 100000}", f"shf{pid % 100000}"
        self.host4, self.far4 = f"203.0.113.{4 * k + 1}", f"203.0.113.{4 * k + 2}"
        self.host6, self.far6 = f"2001:db8:5afe:{k:x}::1", f"2001:db8:5afe:{k:x}::2"
        self.spare4 = f"198.51.100.{100 + k}"
        self.added = []
        try:
            _ip("netns", "add", self.ns)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.far_if)
            _ip("link", "set", self.far_if, "netns", self.ns)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.ns, "link", "set", self.far_if, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
            _ip("addr", "add", f"{self.host4}/30", "dev", self.host_if)
            _ip("-n", self.ns, "addr", "add", f"{self.far4}/30", "dev", self.far_if)
            _ip("addr", "add", f"{self.host6}/64", "dev", self.host_if, "nodad")
            _ip("-n", self.ns, "addr", "add", f"{self.far6}/64", "dev", self.far_if, "nodad")
            # Until the host gains it, the spare address fails at once (not a slow timeout
            # through a default route); the local table, consulted first, wins once added.
            _ip("route", "add", "unreachable", f"{self.spare4}/32")
        except BaseException:
            self.close()
            raise

    def add_to_host(self, addr):
        """Gives the host one more address (on its end of the link), now."""
        _ip("addr", "add", f"{addr}/{128 if ':' in addr else 32}", "dev", self.host_if, "nodad")
        self.added.append(addr)

    def remove_from_host(self, addr):
        _ip("addr", "del", f"{addr}/{128 if ':' in addr else 32}", "dev", self.host_if)
        self.added.remove(addr)

    def close(self):
        # Deleting the namespace deletes the far end, and with it the pair.
        _ip("netns", "del", self.ns, check=False)
        _ip("link", "del", self.host_if, check=False)
        _ip("route", "del", "unreachable", f"{self.spare4}/32", check=False)
