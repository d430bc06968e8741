"""Services that the port-proxy tests and scripts/bench_ports.py run *inside* a sandbox,
standard library only (the file is uploaded and run with the sandbox's python3):

    python3 port_services.py http PORT [ADDR]   HTTP/1.1 echo server (keep-alive)
    python3 port_services.py ws PORT [ADDR]     WebSocket echo server (text, binary, ping, close)

HTTP routes: `/echo` answers the request body; `/bytes/N` streams N bytes; `/small`
answers 2 bytes; anything else answers JSON describing the request (method, path with
query, headers, body length and SHA-256).
"""
import base64
import hashlib
import json
import socket
import socketserver
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1 << 20


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(n))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, body, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        body = self._body()
        path = self.path.split("?", 1)[0]
        if path == "/echo":
            self._send(body, "application/octet-stream")
        elif path == "/small":
            self._send(b"ok", "text/plain")
        elif path.startswith("/bytes/"):
            n = int(path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"x" * CHUNK
            while n > 0:
                k = min(n, CHUNK)
                self.wfile.write(block[:k])
                n -= k
        else:
            info = {"method": self.command, "path": self.path,
                    "headers": [[k.lower(), v] for k, v in self.headers.items()],
                    "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
            self._send(json.dumps(info).encode(), "application/json")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def send_frame(sock, opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    sock.sendall(head + payload)


class WsEcho(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        key = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")), b"")
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        try:
            while True:
                b0, b1 = read_exact(sock, 2)
                op, n = b0 & 0x0F, b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", read_exact(sock, 2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", read_exact(sock, 8))[0]
                mask = read_exact(sock, 4) if b1 & 0x80 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(read_exact(sock, n)))
                if op == 0x8:
                    send_frame(sock, 0x8, data[:2])
                    return
                send_frame(sock, 0xA if op == 0x9 else op, data)
        except (ConnectionError, OSError):
            return


class ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    kind, port = sys.argv[1], int(sys.argv[2])
    addr = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    if kind == "http":
        server_class = type("Server", (ThreadingHTTPServer,), {"daemon_threads": True, "address_family": family})
        server = server_class((addr, port), Echo)
    else:
        server = type("Server", (ThreadingTCP,), {"address_family": family})((addr, port), WsEcho)
    print(f"listening on {addr}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
