#!/usr/bin/env python3
"""TLS on the daemon (docs/tls.md): what HTTPS costs against plain HTTP, both measured in the
same invocation against two real `safehouse serve` daemons (one plain, one
`--tls-self-signed`), from the same Python client (http.client; ssl from the CA file):

- a new connection per request (TCP connect + TLS handshake + `GET /healthz`): the handshake;
- a keep-alive `GET /healthz` and an `exec true` round trip on one connection: steady state;
- a file upload and download (MIB MiB): bulk encryption.

Prints medians (p99 for latencies) and the TLS/plain ratio.

Usage: scripts/bench_tls.py BIN [--requests N] [--mib M]   (as root: it creates a sandbox)
"""
import http.client
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
ARGS = sys.argv[2:]
N = int(ARGS[ARGS.index("--requests") + 1]) if "--requests" in ARGS else 500
MIB = int(ARGS[ARGS.index("--mib") + 1]) if "--mib" in ARGS else 128
KEY = "sh_bench" + "t" * 27


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, tls):
        self.dir = tempfile.mkdtemp(prefix="sh-btls-")
        self.port = free_port()
        self.tls = tls
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SAFEHOUSE_ADMIN_KEY": KEY, "HOME": "/root",
               "SAFEHOUSE_STORAGE_SIZE": "2GiB"}
        args = [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir]
        if tls:
            args.append("--tls-self-signed")
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=self.log, start_new_session=True)
        ca = os.path.join(self.dir, "tls", "ca.crt")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.ctx = ssl.create_default_context(cafile=ca) if tls else None
                c = self.conn()
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return
            except (OSError, ssl.SSLError):
                time.sleep(0.1)
        raise RuntimeError(f"daemon (tls={tls}) did not start")

    def conn(self):
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=self.ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)
        pool = os.path.join(self.dir, "storage", "pool")
        if os.path.ismount(pool):
            subprocess.run(["umount", "-l", pool], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def call(c, method, path, body=None):
    c.request(method, path, body=body, headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status >= 400:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
    return data


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


def measure(d):
    r = {}

    def fresh():
        c = d.conn()
        call(c, "GET", "/healthz")
        c.close()

    fresh()
    r["new connection + GET /healthz"] = timed(fresh, N)
    keep = d.conn()
    r["keep-alive GET /healthz"] = timed(lambda: call(keep, "GET", "/healthz"), N)
    import json
    sid = json.loads(call(keep, "POST", "/v1/sandboxes", b'{"timeout_s": 600}'))["id"]
    body = b'{"cmd": ["true"]}'
    for _ in range(20):
        call(keep, "POST", f"/v1/sandboxes/{sid}/exec", body)
    r["exec true round trip (keep-alive)"] = timed(lambda: call(keep, "POST", f"/v1/sandboxes/{sid}/exec", body), N)
    data = os.urandom(1 << 20) * MIB
    t = time.perf_counter()
    call(keep, "PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/blob", data)
    r[f"upload {MIB} MiB (MB/s)"] = len(data) / 1e6 / (time.perf_counter() - t)
    t = time.perf_counter()
    got = call(keep, "GET", f"/v1/sandboxes/{sid}/files?path=/tmp/blob")
    r[f"download {MIB} MiB (MB/s)"] = len(got) / 1e6 / (time.perf_counter() - t)
    assert len(got) == len(data)
    call(keep, "DELETE", f"/v1/sandboxes/{sid}")
    keep.close()
    return r


def main():
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; date {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}")
    print(f"requests per latency measure: {N}; transfer {MIB} MiB; client: Python http.client + ssl ({ssl.OPENSSL_VERSION})")
    results = {}
    for tls in (False, True):
        d = Daemon(tls)
        try:
            results[tls] = measure(d)
        finally:
            d.stop()
    print(f"\n{'measure':<40}{'plain':>18}{'TLS':>18}{'TLS/plain':>11}")
    for k, plain in results[False].items():
        tls = results[True][k]
        if isinstance(plain, tuple):
            print(f"{k:<40}{plain[0]:>8.3f} / {plain[1]:>6.3f} ms{tls[0]:>8.3f} / {tls[1]:>6.3f} ms{tls[0] / plain[0]:>10.2f}x")
        else:
            print(f"{k:<40}{plain:>15.0f}   {tls:>15.0f}   {tls / plain:>10.2f}x")
    print("(latencies: median / p99)")


if __name__ == "__main__":
    main()
