#!/usr/bin/env python3
"""The code interpreter's figures (docs/interpreter.md), medians and p90s, each next to its
baseline measured in the same invocation:

- `run_code("1+1")` on a warm context, through the native API (the Python SDK), against a
  native `exec` of `true` in the same sandbox (the daemon's round trip without a kernel);
- create a sandbox from the template and get the first result with the E2B code-interpreter
  SDK: with the warm pool (a daemon with --code-pool 1) against cold (no pool);
- a matplotlib chart of 1000 points end to end (PNG + chart data), against a cell that
  builds the same data without plotting.

Sandboxes run on the code-interpreter template (`code-interpreter-v1`, built into each
daemon's store by tests/interp/image.py: `template build` of templates/code-interpreter on
the cached Debian base, about a minute each): the native SDK creates with `template=`, the
E2B SDK's default template resolves to it, and the warm pool is made of it. `--host-root`
measures on the host's root instead (the host's python3 with ipykernel, pandas and matplotlib). Needs the
test venv:
    SAFEHOUSE_BIN=target/safehouse .venv/bin/python scripts/bench_interp.py [--runs N] [--host-root]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from e2e.support import Daemon  # noqa: E402

RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
HOST_ROOT = "--host-root" in sys.argv
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


def rootfs(d, sid):
    root = d.admin().get(f"/v1/sandboxes/{sid}/policy").json()["policy"]["filesystem"]["rootfs"]
    assert root.startswith("image:sha256:"), root
    return root


PARTS = {"create": [], "first run_code": [], "kill": []}


def create_first_result(n):
    """Sandbox.create() -> the first run_code's result, n times; the kill after each is
    timed apart (PARTS), not in the figure."""
    from e2b_code_interpreter import Sandbox

    ts = []
    for _ in range(n):
        t = time.perf_counter()
        s = Sandbox.create()
        try:
            t1 = time.perf_counter()
            assert s.run_code("1+1").text == "2"
            t2 = time.perf_counter()
            ts.append((t2 - t) * 1000)
            PARTS["create"].append((t1 - t) * 1000)
            PARTS["first run_code"].append((t2 - t1) * 1000)
        finally:
            t3 = time.perf_counter()
            s.kill()
            PARTS["kill"].append((time.perf_counter() - t3) * 1000)
    return sorted(ts)


def wait_ready(d):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the replacement is warm again
        p = d.admin().get("/v1/code/pool").json()["pools"]
        if p and p[0]["ready"]:
            return
        time.sleep(0.2)


def main():
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; date {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}")
    cold = Daemon()
    pool = Daemon(env={"SAFEHOUSE_CODE_POOL": "1"})
    template = None
    if not HOST_ROOT:
        from interp.image import import_image
        t0 = time.perf_counter()
        for d in (cold, pool):
            template = import_image(d.data_dir)
        print(f"root: the {template} template, built into both daemons' stores in {time.perf_counter() - t0:.0f} s")
    else:
        print("root: the host's (--host-root)")
    cold.start()
    pool.start()
    try:
        from safehouse import Sandbox

        s = Sandbox.create(timeout=600, api_key=cold.admin_key, url=cold.url, template=template)
        if template:  # the kernel runs on the image, not the host
            print(f"sandbox root: {rootfs(cold, s.id)}")
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
        print(f"  of which Sandbox.create() p50 {statistics.median(PARTS['create']):.2f} ms, the first run_code "
              f"(driver + kernel start) p50 {statistics.median(PARTS['first run_code']):.2f} ms; "
              f"the kill after (not counted) p50 {statistics.median(PARTS['kill']):.2f} ms")
        key = e2b_env(pool)
        create_first_result(1)  # the tenant's first create is cold and starts its pool
        warm = []
        for v in PARTS.values():
            v.clear()
        for _ in range(n):
            wait_ready(pool)
            warm += create_first_result(1)
        warm.sort()
        show("warm pool: e2b Sandbox.create() -> run_code('1+1')", warm, coldts)
        print(f"  of which Sandbox.create() p50 {statistics.median(PARTS['create']):.2f} ms, the first run_code "
              f"p50 {statistics.median(PARTS['first run_code']):.2f} ms; the kill after (not counted) "
              f"p50 {statistics.median(PARTS['kill']):.2f} ms")
        wait_ready(pool)
        if template:  # the pool's sandboxes (the tenant's own) are on the image too
            tenant = pool.admin().with_key(key)
            sbs = tenant.get("/v1/sandboxes", query={"state": "running"}).json()["sandboxes"]
            assert sbs, "the warm pool has a ready sandbox"
            for sb in sbs:
                root = tenant.get(f"/v1/sandboxes/{sb['id']}/policy").json()["policy"]["filesystem"]["rootfs"]
                assert root.startswith("image:sha256:"), root
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
