#!/usr/bin/env python3
"""SDK exec round trip against a raw HTTP client doing the same request (issue 6 target:
SDK <= 1.5x raw). One daemon, one sandbox; R x N calls of
`POST /v1/sandboxes/{id}/exec {"cmd": ["true"]}` through a pooled httpx client and as many
calls of `sbx.commands.run(["true"])` (sync), and the same pair with httpx.AsyncClient and
AsyncSandbox. Calls alternate one by one (raw, SDK, raw, SDK, ...) so machine noise hits
both alike. Prints medians, p95 and the ratios.

Usage: scripts/bench_sdk.py BIN [--rounds R] [--per-round N]   (needs httpx and the SDK:
run it with the test venv's python, .venv/bin/python)
"""
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk" / "python" / "src"))
import httpx  # noqa: E402

from safehouse import AsyncSandbox, Sandbox  # noqa: E402
from benchlib import free_port  # noqa: E402

BIN = sys.argv[1]
ARGS = sys.argv[2:]
ROUNDS = int(ARGS[ARGS.index("--rounds") + 1]) if "--rounds" in ARGS else 10
PER = int(ARGS[ARGS.index("--per-round") + 1]) if "--per-round" in ARGS else 100
KEY = "sh_bench" + "s" * 27
BODY = {"cmd": ["true"], "timeout_s": 60}


def start_daemon():
    data = tempfile.mkdtemp(prefix="safehouse-bench-sdk-")
    port = free_port()
    env = dict(os.environ, SAFEHOUSE_ADMIN_KEY=KEY)
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, data, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("bench_sdk: the daemon did not start")


def paired(a, b, n):
    """Times N calls of A and of B, alternating call by call."""
    ta, tb = [], []
    for _ in range(n):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


async def apaired(a, b, n):
    ta, tb = [], []
    for _ in range(n):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            await fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def row(name, xs):
    xs = sorted(xs)
    med = statistics.median(xs) * 1000
    p95 = xs[int(len(xs) * 0.95)] * 1000
    print(f"  {name:<34}{med:>10.3f}{p95:>10.3f}")
    return med


def main():
    proc, data, url = start_daemon()
    try:
        sbx = Sandbox.create(timeout=3600, url=url, api_key=KEY)
        path = f"/v1/sandboxes/{sbx.id}/exec"
        raw = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=70)

        def raw_exec():
            r = raw.post(path, json=BODY)
            assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text

        def sdk_exec():
            assert sbx.commands.run(["true"]).exit_code == 0

        async def async_rounds():
            asbx = await AsyncSandbox.connect(sbx.id, url=url, api_key=KEY)
            araw = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=70)

            async def araw_exec():
                r = await araw.post(path, json=BODY)
                assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text

            async def asdk_exec():
                assert (await asbx.commands.run(["true"])).exit_code == 0

            await apaired(araw_exec, asdk_exec, 10)  # warm both pools
            a_raw, a_sdk = await apaired(araw_exec, asdk_exec, ROUNDS * PER)
            await araw.aclose()
            await asbx.close()
            return a_raw, a_sdk

        paired(raw_exec, sdk_exec, 10)  # warm both pools
        s_raw, s_sdk = paired(raw_exec, sdk_exec, ROUNDS * PER)
        a_raw, a_sdk = asyncio.run(async_rounds())

        print(f"exec round trip of `true`, {ROUNDS} x {PER} calls each{'':<3}{'median ms':>10}{'p95 ms':>10}")
        r1 = row("raw httpx.Client POST .../exec", s_raw)
        r2 = row("Sandbox.commands.run", s_sdk)
        r3 = row("raw httpx.AsyncClient POST .../exec", a_raw)
        r4 = row("AsyncSandbox.commands.run", a_sdk)
        print(f"  ratio SDK/raw (median): sync {r2 / r1:.3f}x, async {r4 / r3:.3f}x  (target <= 1.5x)")
        print(f"  SDK overhead per call (median): sync {(r2 - r1) * 1000:.0f} us, async {(r4 - r3) * 1000:.0f} us")
        raw.close()
        sbx.kill()
        sbx.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
