#!/usr/bin/env python3
"""Persistence benchmarks against a real `safehouse serve` (issue 15's targets in
parentheses), each with its baseline measured in the same run:

- pause of a sandbox with 100 MiB written (p50 <= 50 ms), against kill of the same;
- resume to the first exec answered (p50 <= 15 ms), against create + first exec;
- snapshot of a sandbox with 100 MiB changed (p50 <= 50 ms);
- fork x10 (<= 100 ms in all), against 10 creates.

Root and btrfs-progs needed (the storage pool). Usage: scripts/bench_persistence.py BIN [--rounds N]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port  # noqa: E402


class Api:
    def __init__(self, port, key):
        self.port, self.key = port, key

    def call(self, method, path, body=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = json.dumps(body).encode() if body is not None else None
        h = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        c.close()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:300]!r}")
        return json.loads(out) if out else None


def serve(binary, name, storage_size):
    """A `safehouse serve` on a fresh data dir with a storage pool of `storage_size`,
    answering: (process, Api, data dir). Stop it with `stop`."""
    data = tempfile.mkdtemp(prefix=f"safehouse-bench-{name}-")
    port, key = free_port(), "bench-" + os.urandom(8).hex()
    env = {"PATH": os.environ["PATH"], "SAFEHOUSE_ADMIN_KEY": key, "SAFEHOUSE_STORAGE_SIZE": storage_size}
    log = open(os.path.join(tempfile.gettempdir(), f"bench-{name}.log"), "w")
    d = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data], env=env,
                         stdout=subprocess.DEVNULL, stderr=log)
    api = Api(port, key)
    for _ in range(100):
        try:
            api.call("GET", "/v1/whoami")
            break
        except OSError:
            time.sleep(0.1)
    return d, api, data


def stop(d, data):
    """Stops the daemon, unmounts its pool (it outlives its daemon) and removes the data dir."""
    d.terminate()
    d.wait(timeout=60)
    pool = os.path.join(data, "storage", "pool")
    if os.path.ismount(pool):
        subprocess.run(["umount", "-l", pool], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", data], check=False)


def timed(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def p50(v):
    return statistics.median(v)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 11
    d, api, data = serve(binary, "persist", "3GiB")
    try:
        body = {"storage": "disk", "timeout_s": 600, "policy": {"version": 1, "limits": {"disk": "1GiB"}}}
        fill = {"cmd": ["sh", "-c", "dd if=/dev/urandom of=/workspace/data bs=1M count=100 2>/dev/null; sync"]}
        pause, kill, resume, create, snap, fork10, create10 = [], [], [], [], [], [], []
        for _ in range(rounds):
            sid = api.call("POST", "/v1/sandboxes", body)["id"]
            api.call("POST", f"/v1/sandboxes/{sid}/exec", fill)
            taken = []
            snap.append(timed(lambda: taken.append(api.call("POST", f"/v1/sandboxes/{sid}/snapshots")["id"])))
            api.call("DELETE", f"/v1/snapshots/{taken[0]}")  # 100 MiB each, in a 3 GiB pool
            pause.append(timed(lambda: api.call("POST", f"/v1/sandboxes/{sid}/pause")))
            resume.append(timed(lambda: (api.call("POST", f"/v1/sandboxes/{sid}/resume"),
                                         api.call("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]}))))
            forks = []
            fork10.append(timed(lambda: forks.extend(api.call("POST", f"/v1/sandboxes/{sid}/fork", {"count": 10})["sandboxes"])))
            for f in forks:
                api.call("DELETE", f"/v1/sandboxes/{f['id']}")
            kill.append(timed(lambda: api.call("DELETE", f"/v1/sandboxes/{sid}")))
            ids = []
            create10.append(timed(lambda: ids.extend(api.call("POST", "/v1/sandboxes", body)["id"] for _ in range(10))))
            for i in ids:
                api.call("DELETE", f"/v1/sandboxes/{i}")
            new = []
            create.append(timed(lambda: (new.append(api.call("POST", "/v1/sandboxes", body)["id"]),
                                         api.call("POST", f"/v1/sandboxes/{new[0]}/exec", {"cmd": ["true"]}))))
            api.call("DELETE", f"/v1/sandboxes/{new[0]}")
        for snaps in api.call("GET", "/v1/snapshots")["snapshots"]:
            api.call("DELETE", f"/v1/snapshots/{snaps['id']}")
        print(f"machine: {os.cpu_count()} cores, load {open('/proc/loadavg').read().split()[:3]}, binary {binary}")
        print(f"medians of {rounds} rounds, a sandbox with 100 MiB written (storage disk)")
        print(f"pause                      {p50(pause):8.1f} ms   (kill of the same: {p50(kill):.1f} ms)")
        print(f"resume + first exec        {p50(resume):8.1f} ms   (create + first exec: {p50(create):.1f} ms)")
        print(f"snapshot                   {p50(snap):8.1f} ms")
        print(f"fork x10                   {p50(fork10):8.1f} ms   (10 creates: {p50(create10):.1f} ms)")
    finally:
        stop(d, data)


if __name__ == "__main__":
    main()
