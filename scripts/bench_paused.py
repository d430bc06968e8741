#!/usr/bin/env python3
"""What paused sandboxes cost (issue 15: "10,000 paused sandboxes on one machine cost no
memory beyond their records"), against a real `safehouse serve`.

Makes N sandboxes with their files on disk (each writes a small file), pauses each, and
measures, before and after: the daemon's resident memory, the machine's used memory
(MemTotal - MemAvailable, which includes the kernel's), processes and cgroups of the
sandboxes, the daemon's open files, and the size of the records (the store). Then resumes
a sample to show they still work. Baseline in the same run: the same measures with no
sandbox at all, and one running sandbox's cost for scale.

Root and btrfs-progs needed (the storage pool).
Usage: scripts/bench_paused.py BIN [--count N] [--workers W]
"""
import concurrent.futures
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_persistence import serve, stop  # noqa: E402


def meminfo():
    m = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        m[k] = int(v.split()[0]) * 1024
    return m


def used():
    m = meminfo()
    return m["MemTotal"] - m["MemAvailable"]


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def sandbox_cgroups():
    n = 0
    for root, dirs, _ in os.walk("/sys/fs/cgroup/memory"):
        n += sum(1 for d in dirs if d.startswith("sb_"))
        if root.count("/") > 7:
            dirs[:] = []
    return n


def sample(pid, data):
    subprocess.run(["sync"], check=False)
    try:
        open("/proc/sys/vm/drop_caches", "w").write("3\n")  # page cache out of "used"
    except OSError:
        pass
    time.sleep(1)
    return {"rss": rss(pid), "used": used(), "fds": fds(pid), "cgroups": sandbox_cgroups(), "store": store(data)}


def store(data):
    """The records: the daemon's database files (not the pool, not logs)."""
    return sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)
               if (".db" in f or ".sqlite" in f) and os.path.isfile(os.path.join(data, f)))


def mib(b):
    return b / (1 << 20)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    count = int(sys.argv[sys.argv.index("--count") + 1]) if "--count" in sys.argv else 10000
    workers = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 8
    d, api, data = serve(binary, "paused", "3GiB")
    try:
        body = {"storage": "disk", "timeout_s": 86400, "policy": {"version": 1, "limits": {"disk": "64MiB"}}}
        # The pool exists before the baseline (its mount is not a sandbox's cost).
        warm = api.call("POST", "/v1/sandboxes", body)["id"]
        api.call("DELETE", f"/v1/sandboxes/{warm}")
        base = sample(d.pid, data)
        one = api.call("POST", "/v1/sandboxes", body)["id"]
        api.call("POST", f"/v1/sandboxes/{one}/exec", {"cmd": ["true"]})
        running = sample(d.pid, data)
        api.call("DELETE", f"/v1/sandboxes/{one}")

        def make(i):
            sid = api.call("POST", "/v1/sandboxes", body)["id"]
            api.call("POST", f"/v1/sandboxes/{sid}/exec",
                      {"cmd": ["sh", "-c", f"echo {i} > /workspace/mine.txt"]})
            api.call("POST", f"/v1/sandboxes/{sid}/pause")
            return sid

        t0 = time.time()
        ids = []
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            for sid in ex.map(make, range(count)):
                ids.append(sid)
                if len(ids) % 1000 == 0:
                    print(f"  {len(ids)} paused ({time.time() - t0:.0f} s)", file=sys.stderr)
        made = time.time() - t0
        paused = sample(d.pid, data)
        # A sample resumes with its files.
        ok = 0
        for i in range(0, count, max(1, count // 20)):
            sid = ids[i]
            api.call("POST", f"/v1/sandboxes/{sid}/resume")
            out = api.call("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["cat", "/workspace/mine.txt"]})
            ok += out.get("stdout", "").strip() == str(i)
            api.call("POST", f"/v1/sandboxes/{sid}/pause")
        samples = len(range(0, count, max(1, count // 20)))
        print(f"machine: {os.cpu_count()} cores, load {open('/proc/loadavg').read().split()[:3]}, binary {binary}")
        print(f"{count} sandboxes made, written to and paused in {made:.0f} s ({workers} at a time)")
        print(f"{'':28}{'no sandbox':>14}{'1 running':>14}{f'{count} paused':>16}{'per paused':>14}")
        for k, unit in (("rss", "MiB"), ("used", "MiB"), ("store", "MiB")):
            per = (paused[k] - base[k]) / count
            print(f"{k:28}{mib(base[k]):13.1f}M{mib(running[k]):13.1f}M{mib(paused[k]):15.1f}M{per / 1024:12.2f}KiB")
        for k in ("fds", "cgroups"):
            print(f"{k:28}{base[k]:14}{running[k]:14}{paused[k]:16}")
        print(f"resumed a sample of {samples}: {ok} had their files")
    finally:
        stop(d, data)


if __name__ == "__main__":
    main()
