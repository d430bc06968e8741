#!/usr/bin/env python3
"""Gateway benchmarks, end to end from inside a real sandbox (issue targets in parentheses):

- added latency of a small HTTP request through the gateway: 10,000 keep-alive GETs from
  inside `safehouse run` through the gateway vs the same client on the host talking to the
  server directly, same invocation (added p50 <= 0.3 ms);
- a 1 GiB download through the gateway vs direct loopback (>= 80 % of direct): through the
  HTTP forward proxy (`GET http://...`) and through a CONNECT tunnel (what HTTPS uses).

The upstream is a small raw-socket HTTP/1.1 server on 127.0.0.1, reached from inside
through the gateway's resolver override (bench.test -> 127.0.0.1). Each round measures
direct, then every binary given, so baselines and candidates share the machine's state;
the summary prints medians over the rounds.

Usage: scripts/bench_gateway.py BIN [--baseline BIN0] [--rounds R] [--requests N] [--bytes N]
"""
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
ARGS = sys.argv[2:]
N = int(ARGS[ARGS.index("--requests") + 1]) if "--requests" in ARGS else 10_000
BIG = int(ARGS[ARGS.index("--bytes") + 1]) if "--bytes" in ARGS else 1 << 30
ROUNDS = int(ARGS[ARGS.index("--rounds") + 1]) if "--rounds" in ARGS else 1
BASELINE = ARGS[ARGS.index("--baseline") + 1] if "--baseline" in ARGS else None

CLIENT = r'''
import json, socket, sys, time
mode, host, port, n, big = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "direct":
    addr, small, large = (host, port), f"GET /s HTTP/1.1\r\nHost: {host}\r\n\r\n", f"GET /big/{big} HTTP/1.1\r\nHost: {host}\r\n\r\n"
elif mode == "tunnel":
    addr = ("127.0.0.1", 3128)
    small, large = f"GET /s HTTP/1.1\r\nHost: {host}\r\n\r\n", f"GET /big/{big} HTTP/1.1\r\nHost: {host}\r\n\r\n"
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
if mode == "tunnel":
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    hb = b""
    while b"\r\n\r\n" not in hb:
        hb += s.recv(1)
    assert hb.startswith(b"HTTP/1.1 200"), hb
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


def client(d, binary, mode, port):
    """One client run: direct on the host, or inside `BIN run` through the gateway. Adds
    `cpu_s`: CPU time of everything the run started (client, sandbox, gateway), so the
    gateway's own cost is the difference to direct's, whatever else loads the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = _client(d, binary, mode, port)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + m.pop("gateway_cpu_s", 0.0)
    return m


def _client(d, binary, mode, port):
    args = [mode, "127.0.0.1" if mode == "direct" else "bench.test", str(port), str(N), str(BIG)]
    if mode == "direct":
        r = subprocess.run(["python3", os.path.join(d, "client.py")] + args, capture_output=True, text=True, check=True)
    else:
        env = dict(os.environ, SAFEHOUSE_GATEWAY_RESOLVE="bench.test=127.0.0.1")
        p = subprocess.Popen([binary, "run", "--policy", os.path.join(d, "p.toml"), "--mount", f"{d}:/b", "--",
                              "/usr/bin/python3", "/b/client.py"] + args, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        seen = {}
        sampler = threading.Thread(target=gateway_cpu, args=(p, seen), daemon=True)
        sampler.start()
        out, err = p.communicate()
        sampler.join()
        if p.returncode != 0:
            raise SystemExit(f"gateway run failed ({p.returncode}): {err.strip()}")
        m = json.loads(out.strip().splitlines()[-1])
        # `run` does not wait for its gateway process (it exits when its channel closes), so
        # that process's CPU is not in RUSAGE_CHILDREN: add what /proc showed last.
        m["gateway_cpu_s"] = sum(seen.values())
        return m
    return json.loads(r.stdout.strip().splitlines()[-1])


def gateway_cpu(p, seen):
    """While `p` (a `safehouse run`) lives: the CPU seconds of its children that run as
    `__gateway`, sampled every 20 ms (the last sample of each counts)."""
    tick = os.sysconf("SC_CLK_TCK")
    while p.poll() is None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) != p.pid:
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"__gateway" not in f.read():
                        continue
                seen[pid] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        time.sleep(0.02)


def main():
    port = server()
    d = tempfile.mkdtemp(prefix="safehouse-bench-gw-")
    os.chmod(d, 0o755)
    bins = [("candidate", BIN)] + ([("baseline", BASELINE)] if BASELINE else [])
    rows = {}
    try:
        with open(os.path.join(d, "client.py"), "w") as f:
            f.write(CLIENT)
        with open(os.path.join(d, "p.toml"), "w") as f:
            f.write(f'version = 1\n[network]\nallow = ["bench.test:{port}"]\n')
        for r in range(ROUNDS):
            direct = client(d, None, "direct", port)
            rows.setdefault("direct", []).append(direct)
            for name, binary in (bins if r % 2 == 0 else bins[::-1]):
                for mode in ("gateway", "tunnel"):
                    m = client(d, binary, mode, port)
                    m["ratio"] = m["mb_s"] / direct["mb_s"]
                    m["added_us"] = m["p50_us"] - direct["p50_us"]
                    rows.setdefault((name, mode), []).append(m)
            print(f"round {r + 1}/{ROUNDS}: direct {direct['mb_s']:.0f} MB/s p50 {direct['p50_us']:.1f} us; " + "; ".join(
                f"{n} {mode} {rows[(n, mode)][-1]['mb_s']:.0f} MB/s ({rows[(n, mode)][-1]['ratio'] * 100:.0f} %)"
                for n, _ in bins for mode in ("gateway", "tunnel")), flush=True)
        med = lambda key, xs: statistics.median(x[key] for x in xs)
        print(f"\nmedians over {ROUNDS} round(s), {N} keep-alive GETs and a {BIG / (1 << 30):.2f} GiB download each")
        print(f"{'':<34}{'p50 us':>9}{'p99 us':>9}{'added ms':>10}{'MB/s':>8}{'% direct':>10}{'CPU s':>8}")
        dr = rows["direct"]
        print(f"  {'direct (host client -> server)':<32}{med('p50_us', dr):>9.1f}{med('p99_us', dr):>9.1f}{'':>10}"
              f"{med('mb_s', dr):>8.0f}{'':>10}{med('cpu_s', dr):>8.2f}")
        for name, _ in bins:
            for mode, label in (("gateway", "forward proxy GET"), ("tunnel", "CONNECT tunnel")):
                xs = rows[(name, mode)]
                print(f"  {name + ', ' + label:<32}{med('p50_us', xs):>9.1f}{med('p99_us', xs):>9.1f}"
                      f"{med('added_us', xs) / 1000:>10.3f}{med('mb_s', xs):>8.0f}{med('ratio', xs) * 100:>9.0f}%"
                      f"{med('cpu_s', xs):>8.2f}")
        print("CPU s: user+system time of the client run and all it started (sandbox, gateway, and a gateway")
        print("process sampled from /proc, since run does not wait for it); the server is")
        print("not counted. A run's CPU minus direct's is what the sandbox and its gateway add.")
        print("targets: added latency p50 <= 0.3 ms; download >= 80 % of direct")
        return 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
