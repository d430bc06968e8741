#!/usr/bin/env python3
"""Gateway benchmarks, end to end from inside a real sandbox (issue targets in parentheses):

- added latency of a small HTTP request through the gateway: 10,000 keep-alive GETs from
  inside `safehouse run` through the gateway vs the same client on the host talking to the
  server directly, same invocation (added p50 <= 0.3 ms);
- a 1 GiB download through the gateway vs direct loopback (>= 80 % of direct).

The upstream is a small raw-socket HTTP/1.1 server on 127.0.0.1, reached from inside
through the gateway's resolver override (bench.test -> 127.0.0.1).

Usage: scripts/bench_gateway.py BIN [--requests N] [--bytes N]
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading

BIN = sys.argv[1]
ARGS = sys.argv[2:]
N = int(ARGS[ARGS.index("--requests") + 1]) if "--requests" in ARGS else 10_000
BIG = int(ARGS[ARGS.index("--bytes") + 1]) if "--bytes" in ARGS else 1 << 30

CLIENT = r'''
import json, socket, sys, time
mode, host, port, n, big = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "direct":
    addr, small, large = (host, port), f"GET /s HTTP/1.1\r\nHost: {host}\r\n\r\n", f"GET /big/{big} HTTP/1.1\r\nHost: {host}\r\n\r\n"
else:
    addr = ("127.0.0.1", 3128)
    small = f"GET http://{host}:{port}/s HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
    large = f"GET http://{host}:{port}/big/{big} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"

def response(s, buf):
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    return head, rest, length

s = socket.create_connection(addr)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
small = small.encode()
lat = []
buf = b""
for i in range(n + 200):
    t = time.perf_counter_ns()
    s.sendall(small)
    head, buf, length = response(s, buf)
    while len(buf) < length:
        buf += s.recv(65536)
    buf = buf[length:]
    if i >= 200:
        lat.append(time.perf_counter_ns() - t)
lat.sort()
s.sendall(large.encode())
t = time.perf_counter()
head, buf, length = response(s, buf)
got = len(buf)
mv = bytearray(1 << 20)
while got < length:
    k = s.recv_into(mv)
    if not k:
        break
    got += k
secs = time.perf_counter() - t
print(json.dumps({"p50_us": lat[len(lat) // 2] / 1000, "p99_us": lat[int(len(lat) * 0.99)] / 1000,
                  "mb_s": got / secs / 1e6, "bytes": got}))
'''


def serve_conn(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    chunk = memoryview(b"x" * (1 << 20))
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1]
            if path.startswith(b"/big/"):
                n = int(path.split(b"/")[2])
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                while n > 0:
                    k = min(n, len(chunk))
                    c.sendall(chunk[:k])
                    n -= k
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass
    finally:
        c.close()


def server():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)

    def loop():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve_conn, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()[1]


def main():
    port = server()
    d = tempfile.mkdtemp(prefix="safehouse-bench-gw-")
    os.chmod(d, 0o755)
    try:
        with open(os.path.join(d, "client.py"), "w") as f:
            f.write(CLIENT)
        with open(os.path.join(d, "p.toml"), "w") as f:
            f.write(f'version = 1\n[network]\nallow = ["bench.test:{port}"]\n')
        direct = subprocess.run(["python3", os.path.join(d, "client.py"), "direct", "127.0.0.1", str(port), str(N),
                                 str(BIG)], capture_output=True, text=True, check=True)
        env = dict(os.environ, SAFEHOUSE_GATEWAY_RESOLVE="bench.test=127.0.0.1")
        inside = subprocess.run([BIN, "run", "--policy", os.path.join(d, "p.toml"), "--mount", f"{d}:/b", "--",
                                 "/usr/bin/python3", "/b/client.py", "gateway", "bench.test", str(port), str(N),
                                 str(BIG)], capture_output=True, text=True, env=env)
        if inside.returncode != 0:
            print(f"gateway run failed ({inside.returncode}): {inside.stderr.strip()}")
            return 1
        a, b = json.loads(direct.stdout), json.loads(inside.stdout.strip().splitlines()[-1])
        print(f"{'gateway, ' + str(N) + ' keep-alive GETs':<40}{'p50 us':>10}{'p99 us':>10}")
        print(f"  {'direct (host client -> server)':<38}{a['p50_us']:>10.1f}{a['p99_us']:>10.1f}")
        print(f"  {'through the gateway (from a sandbox)':<38}{b['p50_us']:>10.1f}{b['p99_us']:>10.1f}")
        print(f"  added latency p50: {(b['p50_us'] - a['p50_us']) / 1000:.3f} ms  (target <= 0.3 ms)")
        print(f"{BIG / (1 << 30):.2f} GiB download: direct {a['mb_s']:.0f} MB/s, through the gateway "
              f"{b['mb_s']:.0f} MB/s: {b['mb_s'] / a['mb_s'] * 100:.0f} % of direct  (target >= 80 %)")
        return 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
