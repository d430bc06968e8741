#!/usr/bin/env python3
"""The soak (issue 22 item 9; not in CI): keeps a fleet of sandboxes busy for a while —
execs, file uploads and downloads, gateway traffic to an HTTP server on loopback — with a
kill-all and a daemon `kill -9` + restart in the middle, then reports every error and what
grew: the daemon's descriptors and memory, mounts, cgroups and processes of the machine.

    scripts/soak.py BIN [--sandboxes 500] [--rate 10] [--minutes 10] [--workers 16]

`--rate` is execs per second across the fleet (each exec is followed by a file round trip
on the same sandbox, and every fifth by a request through the gateway). Errors are counted
by kind; the run's target is 0 errors outside the planned disruptions (the calls refused
while the daemon is down or right after kill-all are counted apart, by name) and no growth
once everything is killed at the end. Root needed (cgroups, mounts).
"""
import concurrent.futures
import http.client
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_persistence import Api  # noqa: E402
from benchlib import free_port  # noqa: E402


def arg(name, default):
    return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def count_mounts():
    return sum(1 for _ in open("/proc/self/mountinfo"))


def count_cgroups():
    n = 0
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        n += len(dirs)
    return n


def count_procs():
    return sum(1 for p in os.listdir("/proc") if p.isdigit())


def used_mib():
    m = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        m[k] = int(v.split()[0])
    return (m["MemTotal"] - m["MemAvailable"]) / 1024


def daemon_stats(pid):
    try:
        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")) / 1024
        return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "rss_mib": rss}
    except OSError:
        return {"fds": -1, "rss_mib": -1}


def machine():
    subprocess.run(["sync"], check=False)
    try:
        open("/proc/sys/vm/drop_caches", "w").write("3\n")
    except OSError:
        pass
    return {"mounts": count_mounts(), "cgroups": count_cgroups(), "procs": count_procs(), "used_mib": used_mib()}


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"soak-ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Daemon:
    def __init__(self, binary, data, port, key):
        self.binary, self.data, self.port, self.key = binary, data, port, key
        self.proc = None

    def start(self):
        env = {"PATH": os.environ["PATH"], "SAFEHOUSE_ADMIN_KEY": self.key, "SAFEHOUSE_STORAGE_SIZE": "2GiB"}
        log = open(os.path.join(self.data, "daemon.log"), "a")
        self.proc = subprocess.Popen([self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
                                      self.data], env=env, stdout=log, stderr=log,
                                     start_new_session=True)
        api = Api(self.port, self.key)
        for _ in range(300):
            try:
                api.call("GET", "/v1/whoami")
                return
            except (OSError, RuntimeError):
                time.sleep(0.1)
        raise RuntimeError("the daemon did not come up; see daemon.log")

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    n, rate, minutes, workers = arg("--sandboxes", 500), arg("--rate", 10.0), arg("--minutes", 10.0), arg("--workers", 16)
    data = tempfile.mkdtemp(prefix="safehouse-soak-")
    port, key = free_port(), "soak-" + os.urandom(12).hex()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    web_port = web.server_address[1]
    before = machine()
    d = Daemon(binary, data, port, key)
    d.start()
    api = Api(port, key)
    policy = {"version": 1, "network": {"allow": [f"127.0.0.1:{web_port}"]}}
    errors = collections.Counter()
    planned = collections.Counter()
    samples = []
    lock = threading.Lock()
    disrupted = threading.Event()  # set while a planned disruption is in effect
    ops = collections.Counter()

    def note(kind, e):
        with lock:
            (planned if disrupted.is_set() else errors)[f"{kind}: {str(e)[:120]}"] += 1

    def create_one(_):
        try:
            return api.call("POST", "/v1/sandboxes", {"timeout_s": int(minutes * 60) + 600, "policy": policy})["id"]
        except Exception as e:  # noqa: BLE001 - every failure is reported by kind
            note("create", e)
            return None

    def fleet(size):
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            return [s for s in ex.map(create_one, range(size)) if s]

    t0 = time.time()
    ids = fleet(n)
    print(f"fleet of {len(ids)} made in {time.time() - t0:.0f} s", file=sys.stderr)
    stats0 = daemon_stats(d.proc.pid)

    def work(i):
        if not ids:
            return
        sid = random.choice(ids)
        try:
            payload = os.urandom(4096)
            r = api.call("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["sh", "-c", f"echo {i}"]})
            if r.get("stdout", "").strip() != str(i):
                raise RuntimeError(f"exec answered {r!r}")
            ops["exec"] += 1
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            h = {"Authorization": f"Bearer {key}"}
            c.request("PUT", f"/v1/sandboxes/{sid}/files?path=/workspace/soak-{i}.bin", body=payload, headers=h)
            r1 = c.getresponse()
            r1.read()
            c.request("GET", f"/v1/sandboxes/{sid}/files?path=/workspace/soak-{i}.bin", headers=h)
            r2 = c.getresponse()
            got = r2.read()
            c.request("DELETE", f"/v1/sandboxes/{sid}/fs?path=/workspace/soak-{i}.bin", headers=h)
            r3 = c.getresponse()
            r3.read()
            c.close()
            if r1.status >= 300 or r2.status != 200 or got != payload or r3.status >= 300:
                raise RuntimeError(f"file round trip: {r1.status} {r2.status} {r3.status} {len(got)} bytes")
            ops["file"] += 1
            if i % 5 == 0:
                # Through the gateway (no_proxy names loopback, so say the proxy here).
                r = api.call("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": [
                    "curl", "-s", "--max-time", "10", "--noproxy", "", "-x", "http://127.0.0.1:3128",
                    f"http://127.0.0.1:{web_port}/"]})
                if "soak-ok" not in r.get("stdout", ""):
                    raise RuntimeError(f"gateway: {r.get('stdout', '')[:80]!r} {r.get('stderr', '')[:80]!r}")
                ops["gateway"] += 1
        except Exception as e:  # noqa: BLE001
            note("work", e)

    end = time.time() + minutes * 60
    third = (end - time.time()) / 3
    events = [(time.time() + third, "kill-all"), (time.time() + 2 * third, "kill -9")]
    i = 0
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        next_at = time.time()
        while time.time() < end:
            if events and time.time() >= events[0][0]:
                _, what = events.pop(0)
                disrupted.set()
                time.sleep(1)
                if what == "kill-all":
                    r = api.call("POST", "/v1/kill-all", {})
                    print(f"kill-all: {json.dumps(r)[:200]}", file=sys.stderr)
                else:
                    d.kill9()
                    print("daemon killed -9; restarting", file=sys.stderr)
                    d.start()
                live = api.call("GET", "/v1/sandboxes?state=running").get("sandboxes", [])
                ids[:] = [s["id"] for s in live]
                if len(ids) < n:
                    ids.extend(fleet(n - len(ids)))
                print(f"after {what}: fleet of {len(ids)} again ({len(live)} survived)", file=sys.stderr)
                time.sleep(2)
                disrupted.clear()
            samples.append((round(time.time() - t0), daemon_stats(d.proc.pid)))
            ex.submit(work, i)
            i += 1
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.time()))
    stats_end = daemon_stats(d.proc.pid)
    api.call("POST", "/v1/kill-all", {})
    time.sleep(3)
    stats_after_kill = daemon_stats(d.proc.pid)
    d.proc.terminate()
    d.proc.wait(timeout=60)
    pool = os.path.join(data, "storage", "pool")
    if os.path.ismount(pool):
        subprocess.run(["umount", "-l", pool], check=False)
    time.sleep(2)
    after = machine()
    web.shutdown()
    print(f"machine: {os.cpu_count()} cores, load {open('/proc/loadavg').read().split()[:3]}, binary {binary}")
    print(f"{len(ids)} sandboxes, {rate}/s for {minutes} min: {dict(ops)}")
    print(f"errors: {sum(errors.values())}")
    for k, v in errors.most_common(20):
        print(f"  {v:6}  {k}")
    print(f"refused during the planned disruptions (kill-all, kill -9): {sum(planned.values())}")
    for k, v in planned.most_common(10):
        print(f"  {v:6}  {k}")
    print(f"daemon: with the fleet at start {stats0}, at the end {stats_end}, after the final kill-all {stats_after_kill}")
    print("machine before -> after (daemon stopped):")
    for k in before:
        print(f"  {k:10} {before[k]:10.0f} -> {after[k]:10.0f}  ({after[k] - before[k]:+.0f})")
    subprocess.run(["rm", "-rf", "--one-file-system", data], check=False)


if __name__ == "__main__":
    main()
