#!/usr/bin/env python3
"""Daemon benchmarks (issue targets in parentheses), against a real `safehouse serve`:

- time to interactive: create a sandbox + first `echo` through the HTTP API, p50/p99 over
  N sandboxes (p50 <= 10 ms, p99 <= 30 ms), against a plain `sh -c echo` fork+exec;
- exec round trip on a live sandbox, p50 (<= 2 ms), against the same request to /healthz
  (the HTTP floor);
- creation throughput with parallel clients (>= 200 sandboxes/s);
- density: K idle sandboxes at once, memory per sandbox from cgroup usage + the daemon's
  and spawners' RSS growth (<= 2 MiB);
- streaming: stdout of a process, file upload and download (>= 500 MB/s each);
- the metrics sampler's CPU with K idle sandboxes (measured in the density step, from
  GET /metrics: safehouse_sampler_cpu_seconds_total over 10 s);
- kill-all of M sandboxes each running a CPU spin, p50 over R rounds until all are gone
  (p50 <= 100 ms), checked at the reply: no agent process and no task in any of their
  cgroups; then timed until their cgroup and socket directories (removed in the
  background) are gone.

Usage: scripts/bench_daemon.py BIN [--tti N] [--density K] [--kill-all M] [--rounds R]
                                   [--only killall|sampler]
"""
import glob
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import socket
from benchlib import free_port  # noqa: E402

BIN = sys.argv[1]
ARGS = sys.argv[2:]
TTI_N = int(ARGS[ARGS.index("--tti") + 1]) if "--tti" in ARGS else 200
DENSITY = int(ARGS[ARGS.index("--density") + 1]) if "--density" in ARGS else 1000
KILL_ALL = int(ARGS[ARGS.index("--kill-all") + 1]) if "--kill-all" in ARGS else 200
ROUNDS = int(ARGS[ARGS.index("--rounds") + 1]) if "--rounds" in ARGS else 5
ONLY = ARGS[ARGS.index("--only") + 1] if "--only" in ARGS else None
KEY = "sh_bench" + "x" * 27


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method, path, body=None, raw=False):
        headers = {"Authorization": f"Bearer {KEY}", "Host": f"127.0.0.1:{self.port}"}
        data = None
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = body
                headers["Content-Type"] = "application/octet-stream"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        payload = r.read()
        if r.status >= 400:
            raise RuntimeError(f"{method} {path}: {r.status} {payload[:300]!r}")
        if raw:
            return payload
        return json.loads(payload) if payload else None


def ws_drain(port, path):
    """Minimal WebSocket client: counts stdout bytes until the exit message."""
    import base64
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {KEY}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    f = s.makefile("rb", buffering=1 << 20)
    pending = [buf]
    def read(n):
        out = b""
        while pending and len(out) < n:
            take = pending[0][: n - len(out)]
            out += take
            pending[0] = pending[0][len(take):]
            if not pending[0]:
                pending.pop(0)
        if len(out) < n:
            out += f.read(n - len(out))
        return out
    total, t0 = 0, None
    while True:
        b0, b1 = read(2)
        ln = b1 & 0x7F
        if ln == 126:
            ln = int.from_bytes(read(2), "big")
        elif ln == 127:
            ln = int.from_bytes(read(8), "big")
        payload = read(ln)
        op = b0 & 0x0F
        if t0 is None:
            t0 = time.perf_counter()
        if op == 2:
            total += len(payload)
        elif op == 1:
            msg = json.loads(payload)
            if msg.get("type") == "stdout":
                total += len(base64.b64decode(msg["data"]))
            if msg.get("type") == "exit":
                break
        elif op == 8:
            break
    s.close()
    return total, t0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def create_many(port, n, body):
    made, lock = [], threading.Lock()
    def worker(k):
        c = Client(port)
        for _ in range(k):
            sb = c.call("POST", "/v1/sandboxes", body)
            with lock:
                made.append(sb)
    threads = [threading.Thread(target=worker, args=(n // 8 + (i < n % 8),)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    return made


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


def prom_value(cl, name):
    text = Client(cl.port).call("GET", "/metrics", raw=True).decode()  # fresh: idle connections are closed
    return next(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " "))


def bench_sampler(cl, n):
    """CPU the sampler uses per second with n live sandboxes."""
    a, t0 = prom_value(cl, "safehouse_sampler_cpu_seconds_total"), time.perf_counter()
    time.sleep(10)
    b, dt = prom_value(cl, "safehouse_sampler_cpu_seconds_total"), time.perf_counter() - t0
    last = prom_value(cl, "safehouse_sampler_last_duration_seconds")
    print(f"metrics sampler with {n} idle sandboxes: {(b - a) / dt * 100:.2f}% of one core "
          f"(last round {last * 1000:.1f} ms wall)")


def cgroup_dirs(sid):
    return glob.glob(f"/sys/fs/cgroup/*/safehouse/{sid}") + glob.glob(f"/sys/fs/cgroup/safehouse/{sid}")


def cgroup_tasks(sid):
    """Every task listed in any of the sandbox's cgroups (nested ones included)."""
    tasks = set()
    for d in cgroup_dirs(sid):
        for root, _, files in os.walk(d):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs")) as f:
                        tasks.update(int(x) for x in f.read().split())
                except OSError:
                    pass  # removed meanwhile
    return tasks


def sb_dir(data, sid):
    return os.path.join(data, "sandboxes", sid)


def bench_kill_all(port, cl, n, rounds, data):
    spin = {"cmd": ["/bin/sh", "-c", "while :; do :; done"]}
    server_ms, client_ms, cleanup_ms = [], [], []
    for _ in range(rounds):
        sbs = create_many(port, n, {"timeout_s": 600})
        for sb in sbs:
            cl.call("POST", f"/v1/sandboxes/{sb['id']}/processes", spin)
        time.sleep(0.5)
        t0 = time.perf_counter()
        r = cl.call("POST", "/v1/kill-all", {})
        client_ms.append((time.perf_counter() - t0) * 1000)
        server_ms.append(r["ms"])
        assert r["killed"] == n, r
        # At the reply nothing of any sandbox runs: no agent, no task in any of its cgroups.
        left = [sb["pid"] for sb in sbs if alive(sb["pid"])]
        tasks = [t for sb in sbs for t in cgroup_tasks(sb["id"]) if alive(t)]
        assert not left and not tasks, (left[:5], tasks[:5])
        # The directories (not running) go in the background: timed until all are gone.
        t1 = time.perf_counter()
        while any(cgroup_dirs(sb["id"]) or os.path.exists(sb_dir(data, sb["id"])) for sb in sbs):
            assert time.perf_counter() - t1 < 30, "leftovers not removed within 30 s"
            time.sleep(0.01)
        cleanup_ms.append((time.perf_counter() - t0) * 1000)
    print(f"kill-all of {n} spinning sandboxes, {rounds} rounds: p50 {statistics.median(client_ms):.0f} ms "
          f"(client), server-side {statistics.median(server_ms):.0f} ms, all {sorted(round(x) for x in client_ms)} "
          f"(target p50 100); no process left at the reply; every cgroup and socket directory removed "
          f"{statistics.median(cleanup_ms):.0f} ms p50 after the request (all {sorted(round(x) for x in cleanup_ms)})")


def main():
    data = tempfile.mkdtemp(prefix="safehouse-bench-")
    port = free_port()
    env = dict(os.environ, SAFEHOUSE_ADMIN_KEY=KEY)
    daemon = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              env=env, stderr=open(os.environ.get("BENCH_DAEMON_LOG", os.devnull), "w"), stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        cl = Client(port)
        print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; daemon pid {daemon.pid}")
        if ONLY == "killall":
            return bench_kill_all(port, cl, KILL_ALL, ROUNDS, data)
        if ONLY == "sampler":
            made = create_many(port, DENSITY, {"timeout_s": 1800})
            time.sleep(2)
            bench_sampler(cl, len(made))
            Client(port).call("POST", "/v1/kill-all", {})
            return

        # Time to interactive.
        tti, ids = [], []
        for _ in range(TTI_N):
            t0 = time.perf_counter()
            sb = cl.call("POST", "/v1/sandboxes", {"timeout_s": 600})
            r = cl.call("POST", f"/v1/sandboxes/{sb['id']}/exec", {"cmd": ["echo", "hi"]})
            tti.append((time.perf_counter() - t0) * 1000)
            assert r["stdout"] == "hi\n", r
            ids.append(sb["id"])
        base = []
        for _ in range(50):
            t0 = time.perf_counter()
            subprocess.run(["sh", "-c", "echo hi"], stdout=subprocess.DEVNULL)
            base.append((time.perf_counter() - t0) * 1000)
        print(f"time to interactive (create + first echo), {TTI_N} sandboxes: p50 {pct(tti, .5):.1f} ms, "
              f"p99 {pct(tti, .99):.1f} ms (targets 10 / 30); plain sh -c echo p50 {pct(base, .5):.2f} ms")

        # Exec round trip.
        sid = ids[0]
        rt, floor = [], []
        for _ in range(300):
            t0 = time.perf_counter()
            cl.call("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]})
            rt.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            cl.call("GET", "/healthz")
            floor.append((time.perf_counter() - t0) * 1000)
        print(f"exec round trip (true): p50 {pct(rt, .5):.2f} ms, p99 {pct(rt, .99):.2f} ms (target p50 2); "
              f"HTTP floor (/healthz) p50 {pct(floor, .5):.2f} ms")
        for i in ids:
            cl.call("DELETE", f"/v1/sandboxes/{i}")

        # Creation throughput: parallel clients.
        made, lock = [], threading.Lock()
        def worker(n):
            c = Client(port)
            for _ in range(n):
                sb = c.call("POST", "/v1/sandboxes", {"timeout_s": 600})
                with lock:
                    made.append(sb["id"])
        threads = [threading.Thread(target=worker, args=(50,)) for _ in range(8)]
        t0 = time.perf_counter()
        for t in threads: t.start()
        for t in threads: t.join()
        dt = time.perf_counter() - t0
        print(f"creation throughput: {len(made)} sandboxes in {dt:.2f} s = {len(made) / dt:.0f}/s (8 clients; target 200/s)")
        for i in made:
            cl.call("DELETE", f"/v1/sandboxes/{i}")

        # Streaming: stdout of a process, upload, download.
        sb = cl.call("POST", "/v1/sandboxes", {"timeout_s": 600, "policy": {"version": 1, "limits": {"disk": "2GiB", "memory": "3GiB"}}})
        sid = sb["id"]
        size = 512 << 20
        t0 = time.perf_counter()
        r = cl.call("POST", f"/v1/sandboxes/{sid}/exec",
                    {"cmd": ["sh", "-c", f"head -c {16 << 20} /dev/zero | tr '\\0' a"], "timeout_s": 60})
        dt = time.perf_counter() - t0
        assert len(r["stdout"]) == 16 << 20, len(r["stdout"])
        print(f"exec stdout (16 MiB captured, returned in the JSON result): {16 / dt:.0f} MiB/s")
        # A background process's stdout streamed over the attach WebSocket.
        pid = cl.call("POST", f"/v1/sandboxes/{sid}/processes",
                      {"cmd": ["sh", "-c", "sleep 0.3; head -c 1073741824 /dev/zero"]})["pid"]
        got, t0 = ws_drain(port, f"/v1/sandboxes/{sid}/processes/{pid}/attach?binary=1")
        dt = time.perf_counter() - t0
        print(f"process stdout streamed over the attach WebSocket: {got / dt / 1e6:.0f} MB/s ({got >> 20} MiB; target 500 MB/s)")
        blob = os.urandom(1 << 20) * (size >> 20)
        t0 = time.perf_counter()
        cl.call("PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/blob", blob)
        up = size / (time.perf_counter() - t0) / 1e6
        t0 = time.perf_counter()
        got = cl.call("GET", f"/v1/sandboxes/{sid}/files?path=/tmp/blob", raw=True)
        down = size / (time.perf_counter() - t0) / 1e6
        assert len(got) == size
        print(f"file upload {up:.0f} MB/s, download {down:.0f} MB/s ({size >> 20} MiB; target 500 MB/s each)")
        cl.call("DELETE", f"/v1/sandboxes/{sid}")

        # Density.
        def rss_kib(pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
            except (OSError, StopIteration):
                return 0
        def mem_available():
            with open("/proc/meminfo") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("MemAvailable")) * 1024
        before_daemon = rss_kib(daemon.pid)
        avail_before = mem_available()
        t0 = time.perf_counter()
        dense = []
        for _ in range(DENSITY):
            dense.append(cl.call("POST", "/v1/sandboxes", {"timeout_s": 1800})["id"])
        dt = time.perf_counter() - t0
        time.sleep(1)
        usage = 0
        for i in dense:
            try:
                with open(f"/sys/fs/cgroup/memory/safehouse/{i}/memory.usage_in_bytes") as f:
                    usage += int(f.read())
            except OSError:
                pass
        daemon_growth = (rss_kib(daemon.pid) - before_daemon) * 1024
        host_delta = avail_before - mem_available()
        r = cl.call("POST", f"/v1/sandboxes/{dense[-1]}/exec", {"cmd": ["echo", "alive"]})
        assert r["stdout"] == "alive\n"
        per = (usage + max(daemon_growth, 0)) / len(dense)
        print(f"density: {len(dense)} idle sandboxes created in {dt:.1f} s, the last one still answers; per sandbox: "
              f"host MemAvailable drop {host_delta / len(dense) / 1048576:.2f} MiB (everything: kernel objects, "
              f"agents, daemon; target 2 MiB), of which charged to the sandbox cgroups "
              f"{usage / len(dense) / 1048576:.2f} MiB and daemon RSS growth {daemon_growth / len(dense) / 1024:.0f} KiB")
        bench_sampler(cl, len(dense))
        cl = Client(port)
        for i in dense:
            cl.call("DELETE", f"/v1/sandboxes/{i}")

        bench_kill_all(port, cl, KILL_ALL, ROUNDS, data)
    finally:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
