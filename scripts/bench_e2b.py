#!/usr/bin/env python3
"""Round trips through the E2B-compatible front with the real e2b SDK, against the native
API for the same command (medians). Run from the repository root with the test venv:
    SAFEHOUSE_BIN=target/safehouse .venv/bin/python scripts/bench_e2b.py
"""
import os, sys, time, statistics, json
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from e2e.support import Daemon
d = Daemon().start()
try:
    api = d.admin()
    key = api.post("/v1/keys", {"tenant": "bench"}).json()["key"]
    os.environ.update(E2B_API_URL=d.url, E2B_SANDBOX_URL=d.url, E2B_API_KEY=key)
    from e2b import Sandbox
    def med(f, n=20):
        ts = []
        for _ in range(n):
            t = time.perf_counter(); f(); ts.append((time.perf_counter() - t) * 1000)
        return round(statistics.median(ts), 2)
    out = {}
    sbs = []
    def create():
        sbs.append(Sandbox.create(timeout=120))
    out["e2b_create_ms"] = med(create, 10)
    s = sbs[0]
    out["e2b_commands_run_echo_ms"] = med(lambda: s.commands.run("echo hi"))
    nsb = api.create(timeout_s=120)
    # The SDK runs commands as `/bin/bash -l -c CMD`: the same argv natively.
    out["native_exec_echo_ms"] = med(lambda: api.exec(nsb["id"], ["/bin/bash", "-l", "-c", "echo hi"]))
    blob = os.urandom(16 << 20)
    out["e2b_write_16MiB_ms"] = med(lambda: s.files.write("/tmp/b", blob), 5)
    out["e2b_read_16MiB_ms"] = med(lambda: s.files.read("/tmp/b", format="bytes"), 5)
    out["e2b_stat_ms"] = med(lambda: s.files.get_info("/tmp/b"))
    out["e2b_kill_ms"] = med(lambda: sbs.pop().kill(), 10)
    api.kill(nsb["id"])
    print(json.dumps(out, indent=1))
finally:
    d.kill_sandboxes()
    d.cleanup()
