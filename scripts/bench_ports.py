#!/usr/bin/env python3
"""Port-proxy benchmark, against a real `safehouse serve` (needs root: the proxy enters the
sandbox's network namespace):

- latency: a small GET (2-byte body) over one keep-alive connection, p50/p99 over N
  requests, through `/v1/sandboxes/{id}/ports/{port}/small` to a server inside a sandbox,
  against the same server run directly on the host (the baseline) and the daemon's
  `/healthz` (the HTTP floor of the daemon itself);
- throughput: a 256 MiB download through the proxy against the same download direct;
- the daemon's peak RSS before and after (streaming, not buffering).

The service is tests/e2e/port_services.py (python3's http.server), the same in both runs.

Usage: scripts/bench_ports.py BIN [--requests N] [--mib M]
"""
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "tests" / "e2e" / "port_services.py"
BIN = sys.argv[1]
ARGS = sys.argv[2:]
N = int(ARGS[ARGS.index("--requests") + 1]) if "--requests" in ARGS else 1000
MIB = int(ARGS[ARGS.index("--mib") + 1]) if "--mib" in ARGS else 256
KEY = "sh_bench" + "p" * 27


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(conn, method, path, body=None, headers=None):
    h = {"Authorization": f"Bearer {KEY}"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 400:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return data


def wait_up(port, path, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            call(c, "GET", path)
            c.close()
            return
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers {path} on {port}")


def latencies(port, path, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(50):  # warm-up
        call(conn, "GET", path)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call(conn, "GET", path)
        out.append((time.perf_counter() - t0) * 1e6)
    conn.close()
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


def latencies_fresh(port, path, n):
    """Like `latencies`, with a new connection per request (what the proxy does upstream)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        call(conn, "GET", path)
        conn.close()
        out.append((time.perf_counter() - t0) * 1e6)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


def download(port, path, size):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers={"Authorization": f"Bearer {KEY}"})
    t0 = time.perf_counter()
    r = conn.getresponse()
    got = 0
    while chunk := r.read(1 << 20):
        got += len(chunk)
    dt = time.perf_counter() - t0
    conn.close()
    assert r.status == 200 and got == size, (r.status, got)
    return size / dt / 1e6


def rss_peak_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main():
    port = free_port()
    data = tempfile.mkdtemp(prefix="safehouse-bench-ports-")
    env = {"PATH": os.environ["PATH"], "SAFEHOUSE_ADMIN_KEY": KEY, "HOME": os.environ.get("HOME", "/root")}
    daemon = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host_service = None
    try:
        wait_up(port, "/healthz")
        api = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        sb = json.loads(call(api, "POST", "/v1/sandboxes", json.dumps({"timeout_s": 600}).encode(),
                             {"Content-Type": "application/json"}))
        sid = sb["id"]
        call(api, "PUT", f"/v1/sandboxes/{sid}/files?path=/workspace/port_services.py", SERVICES.read_bytes())
        inner = free_port()
        argv = ["python3", "/workspace/port_services.py", "http", str(inner)]
        call(api, "POST", f"/v1/sandboxes/{sid}/processes", json.dumps({"cmd": argv}).encode(),
             {"Content-Type": "application/json"})
        prefix = f"/v1/sandboxes/{sid}/ports/{inner}"
        wait_up(port, f"{prefix}/small")

        direct = free_port()
        host_service = subprocess.Popen([sys.executable, str(SERVICES), "http", str(direct)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_up(direct, "/small")

        rss0 = rss_peak_kib(daemon.pid)
        floor = latencies(port, "/healthz", N)
        base = latencies(direct, "/small", N)
        fresh = latencies_fresh(direct, "/small", N)
        proxied = latencies(port, f"{prefix}/small", N)
        size = MIB << 20
        tp_direct = download(direct, f"/bytes/{size}", size)
        tp_proxy = download(port, f"{prefix}/bytes/{size}", size)
        rss1 = rss_peak_kib(daemon.pid)

        print(f"port proxy: {N} small GETs on one keep-alive connection; {MIB} MiB download")
        print(f"{'':<34}{'p50 us':>10}{'p99 us':>10}")
        print(f"{'direct to the service (host)':<34}{base[0]:>10.0f}{base[1]:>10.0f}")
        print(f"{'direct, new connection each':<34}{fresh[0]:>10.0f}{fresh[1]:>10.0f}")
        print(f"{'through the proxy':<34}{proxied[0]:>10.0f}{proxied[1]:>10.0f}")
        print(f"{'daemon /healthz (HTTP floor)':<34}{floor[0]:>10.0f}{floor[1]:>10.0f}")
        print(f"proxy overhead p50: +{proxied[0] - base[0]:.0f} us ({proxied[0] / base[0]:.2f}x direct keep-alive), "
              f"+{proxied[0] - fresh[0]:.0f} us over direct with a new connection each")
        print(f"download: direct {tp_direct:.0f} MB/s, proxied {tp_proxy:.0f} MB/s "
              f"({tp_proxy / tp_direct:.2f}x direct)")
        print(f"daemon peak RSS: {rss0 / 1024:.1f} MiB before, {rss1 / 1024:.1f} MiB after")
        api.close()  # idle past the daemon's keep-alive timeout by now
        call(api, "DELETE", f"/v1/sandboxes/{sid}")
    finally:
        if host_service:
            host_service.terminate()
            host_service.wait(timeout=10)
        daemon.terminate()
        daemon.wait(timeout=20)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
