#!/usr/bin/env python3
"""The code interpreter's figures (docs/interpreter.md), medians and p90s, each next to its
baseline measured in the same invocation:

- `run_code("1+1")` on a warm context, through the native API (the Python SDK), against a
  native `exec` of `true` in the same sandbox (the daemon's round trip without a kernel);
- create a sandbox from the template and get the first result with the E2B code-interpreter
  SDK: with the warm pool (a daemon with --code-pool 1) against cold (no pool);
- a matplotlib chart of 1000 points end to end (PNG + chart data), against a cell that
  builds the same data without plotting.

Sandboxes are on the host's root (the daemon does not serve image roots yet, and the
`code-interpreter-v1` template is `base` until it does): needs the host's python3 with
ipykernel, pandas and matplotlib (scripts/test installs them), and the test venv:
    SAFEHOUSE_BIN=target/safehouse .venv/bin/python scripts/bench_interp.py [--runs N]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from e2e.support import Daemon  # noqa: E402

RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
CHART = ("import matplotlib.pyplot as plt\nxs = list(range(1000))\nys = [(i * 37) % 101 for i in xs]\n"
         "plt.figure(); plt.plot(xs, ys); plt.title('bench')\nplt.show()")
NO_CHART = "xs = list(range(1000))\nys = [(i * 37) % 101 for i in xs]\nlen(ys)"


def timed(f, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return ts


def show(name, ts, base=None):
    p50, p90 = statistics.median(ts), ts[int(len(ts) * 0.9) - 1]
    line = f"{name:<58} p50 {p50:8.2f} ms   p90 {p90:8.2f} ms   n={len(ts)}"
    if base is not None:
        line += f"   ({p50 / statistics.median(base):.2f}x the baseline)"
    print(line, flush=True)


def e2b_env(d):
    key = d.admin().post("/v1/keys", {"tenant": f"bench-{d.port}"}).json()["key"]
    os.environ.update(E2B_API_URL=d.url, E2B_SANDBOX_URL=d.url, E2B_API_KEY=key)
    return key


def create_first_result(n):
    from e2b_code_interpreter import Sandbox

    def once():
        s = Sandbox.create()
        try:
            assert s.run_code("1+1").text == "2"
        finally:
            s.kill()
    return timed(once, n)


def main():
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; date {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}")
    cold = Daemon()
    cold.start()
    pool = Daemon(env={"SAFEHOUSE_CODE_POOL": "1"})
    pool.start()
    try:
        from safehouse import Sandbox

        s = Sandbox.create(timeout=600, api_key=cold.admin_key, url=cold.url)
        s.run_code("1+1")  # the kernel is up
        api = cold.admin()
        base = timed(lambda: api.exec(s.id, ["true"]), RUNS)
        show("baseline: exec `true` in the same sandbox", base)
        show("run_code('1+1') on a warm context (SDK, native API)", timed(lambda: s.run_code("1+1"), RUNS), base)
        s.run_code(CHART)  # matplotlib imported, fonts loaded
        nochart = timed(lambda: s.run_code(NO_CHART), RUNS)
        show("baseline: the chart's data, no plot", nochart)
        show("matplotlib chart, 1000 points (PNG + chart data)", timed(lambda: s.run_code(CHART), RUNS), nochart)
        s.kill()

        n = max(5, RUNS // 3)
        e2b_env(cold)
        coldts = create_first_result(n)
        show("cold: e2b Sandbox.create() -> run_code('1+1') (no pool)", coldts)
        e2b_env(pool)
        create_first_result(1)  # the tenant's first create is cold and starts its pool
        warm = []
        for _ in range(n):
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # the replacement is warm again
                p = pool.admin().get("/v1/code/pool").json()["pools"]
                if p and p[0]["ready"]:
                    break
                time.sleep(0.2)
            warm += create_first_result(1)
        warm.sort()
        show("warm pool: e2b Sandbox.create() -> run_code('1+1')", warm, coldts)
        p = pool.admin().get("/v1/code/pool").json()
        ready = p["pools"][0] if p["pools"] else {}
        print(f"pool: size {p['size']}, hits {ready.get('hits')}, misses {ready.get('misses')}, "
              f"memory of the ready sandboxes {ready.get('memory_bytes', 0) / 2**20:.0f} MiB")
    finally:
        for d in (cold, pool):
            d.kill_sandboxes()
            d.cleanup()


if __name__ == "__main__":
    main()
