"""The control plane: per-sandbox metrics and their history, the Prometheus endpoint,
freeze/thaw, the emergency stop (kill-all) and the automatic CPU-budget rule."""
import concurrent.futures
import glob
import os
import re
import time

import pytest

from .support import IS_ROOT, MiB
from .test_events import read_sse

SPIN = ["/bin/sh", "-c", "while :; do :; done"]
PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? [-+0-9.eE]+(Inf|NaN)?$')


def metrics(api, sid):
    r = api.get(f"/v1/sandboxes/{sid}/metrics")
    assert r.status == 200, r
    return r.json()


def wait_for(pred, timeout, what, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cgroup_dirs(sid):
    return glob.glob(f"/sys/fs/cgroup/*/safehouse/{sid}") + glob.glob(f"/sys/fs/cgroup/safehouse/{sid}")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


def cgroup_tasks(sid):
    """Every task listed in the sandbox's cgroups (every hierarchy, nested cgroups too)."""
    tasks = set()
    for d in cgroup_dirs(sid):
        for root, _, files in os.walk(d):
            try:
                with open(os.path.join(root, "cgroup.procs")) as f:
                    tasks.update(int(x) for x in f.read().split())
            except OSError:
                pass  # removed meanwhile
    return sorted(tasks)


def leftovers(data_dir, sid):
    """The sandbox's cgroup directories and its socket directory, those that exist."""
    sock_dir = os.path.join(data_dir, "sandboxes", sid)
    return cgroup_dirs(sid) + ([sock_dir] if os.path.exists(sock_dir) else [])


def test_metrics_of_a_spinning_sandbox(api, sandbox):
    sid = sandbox["id"]
    # Two spinners: on a loaded 2-core machine one alone may get only half a core.
    api.start(sid, SPIN)
    api.start(sid, SPIN)
    time.sleep(2.5)
    m1 = metrics(api, sid)
    assert len(m1["history"]) >= 2, m1
    for s in m1["history"]:
        assert set(s) == {"t", "cpu_pct", "memory_bytes", "pids", "disk_bytes", "net_in", "net_out"}, s
    assert m1["history"][-1]["t"] > m1["history"][0]["t"]
    cur = m1["current"]
    assert cur["state"] == "running"
    assert cur["cpu_pct"] > 50, cur
    assert cur["pids"] >= 2, cur
    time.sleep(0.5)
    m2 = metrics(api, sid)
    assert m2["current"]["cpu_usage_ns"] > cur["cpu_usage_ns"] + 200_000_000, (cur, m2["current"])


def test_metrics_memory_and_disk(api, sandbox):
    sid = sandbox["id"]
    api.start(sid, ["python3", "-c", "import time; b = bytearray(100 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(120)"])
    api.exec(sid, "head -c 20971520 /dev/zero > /workspace/blob && sync")
    m = wait_for(lambda: (lambda m: m if m["current"]["memory_bytes"] >= 100 * MiB else None)(metrics(api, sid)),
                 15, "100 MiB of memory in the metrics")
    cur = m["current"]
    assert cur["memory_peak_bytes"] is None or cur["memory_peak_bytes"] >= cur["memory_bytes"] - MiB, cur
    assert cur["disk_bytes"] >= 20 * MiB, cur
    # The writable layer, not the host's disk: far below any real disk's use.
    assert cur["disk_bytes"] < 200 * MiB, cur


def test_metrics_are_tenant_checked(api, sandbox, tenant_key):
    other = api.with_key(tenant_key)
    r = other.get(f"/v1/sandboxes/{sandbox['id']}/metrics")
    assert r.status == 404, r
    assert api.get("/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaaa/metrics").status == 404


def test_prometheus_text(api, sandbox, tenant_key):
    time.sleep(1.2)  # one sampler round at least
    r = api.get("/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain")
    text = r.body.decode()
    for line in text.splitlines():
        assert line.startswith("#") or PROM_LINE.match(line), f"not a Prometheus line: {line!r}"
    assert re.search(r'^safehouse_sandboxes\{state="running"\} [1-9]', text, re.M), text[:2000]
    assert f'safehouse_sandbox_memory_bytes{{id="{sandbox["id"]}",tenant="admin"}}' in text
    assert "safehouse_sandboxes_created_total" in text
    assert re.search(r'^safehouse_http_requests_total\{method="GET",route="/v1/sandboxes/\{id\}/metrics",status="200"\}', text, re.M) or \
        re.search(r'^safehouse_http_requests_total\{method="POST",route="/v1/sandboxes",status="201"\}', text, re.M), text
    # Never a raw path (one series per sandbox id) in the request counters.
    assert "route=\"/v1/sandboxes/sb_" not in text
    # Other tenants: forbidden (it names every tenant's sandboxes); no key: 401.
    assert api.with_key(tenant_key).get("/metrics").status == 403
    assert api.get("/metrics", key=None).status == 401


def test_freeze_stops_cpu_and_refuses_exec(api, sandbox):
    sid = sandbox["id"]
    api.start(sid, SPIN)
    time.sleep(0.5)
    r = api.post(f"/v1/sandboxes/{sid}/freeze")
    assert r.status == 200, r
    assert r.json()["state"] == "frozen"
    assert api.info(sid)["state"] == "frozen"
    a = metrics(api, sid)["current"]
    assert a["state"] == "frozen"
    time.sleep(1.0)
    b = metrics(api, sid)["current"]
    assert b["cpu_usage_ns"] - a["cpu_usage_ns"] < 20_000_000, (a, b)
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]})
    assert r.status == 409 and r.error_code == "frozen" and "thaw" in r.json()["error"]["message"], r
    r = api.post(f"/v1/sandboxes/{sid}/processes", {"cmd": ["true"]})
    assert r.status == 409 and r.error_code == "frozen", r
    # Files stay reachable for inspection; freeze is idempotent.
    assert api.stat(sid, "/workspace").status == 200
    assert api.post(f"/v1/sandboxes/{sid}/freeze").json()["state"] == "frozen"
    listed = api.get("/v1/sandboxes", query={"state": "frozen"}).json()["sandboxes"]
    assert sid in [s["id"] for s in listed]
    r = api.post(f"/v1/sandboxes/{sid}/thaw")
    assert r.status == 200 and r.json()["state"] == "running", r
    time.sleep(1.0)
    c = metrics(api, sid)["current"]
    assert c["cpu_usage_ns"] - b["cpu_usage_ns"] > 300_000_000, (b, c)
    assert api.exec(sid, ["true"])["exit_code"] == 0


def test_kill_of_a_frozen_sandbox(api):
    sb = api.create()
    sid = sb["id"]
    pid = sb["pid"]
    api.start(sid, SPIN)
    assert api.post(f"/v1/sandboxes/{sid}/freeze").status == 200
    assert api.kill(sid).status == 204
    assert api.info(sid)["state"] == "killed"
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] in "ZX"
    assert cgroup_dirs(sid) == []


def test_kill_all_of_a_tenant(api, tenant_key):
    """A tenant's kill-all stops its own 20 spinning sandboxes, nothing of them is left, and
    the admin's sandbox survives."""
    tenant = api.with_key(tenant_key)
    keep = api.create()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sbs = list(pool.map(lambda _: tenant.create(), range(20)))
        list(pool.map(lambda sb: tenant.start(sb["id"], SPIN), sbs))
    pids = [sb["pid"] for sb in sbs]
    if IS_ROOT:
        assert all(cgroup_dirs(sb["id"]) for sb in sbs)
    t0 = time.monotonic()
    r = tenant.post("/v1/kill-all")
    took = time.monotonic() - t0
    assert r.status == 200, r
    body = r.json()
    assert body["killed"] == 20 and isinstance(body["ms"], int), body
    assert took < 10, took
    # At the reply nothing of them runs: no agent, no task in any of their cgroups.
    for pid in pids:
        assert not alive(pid), f"agent {pid} still running after kill-all"
    for sb in sbs:
        running = [t for t in cgroup_tasks(sb["id"]) if alive(t)]
        assert running == [], f"{sb['id']}: tasks {running} still in its cgroup after kill-all"
        info = tenant.info(sb["id"])
        assert info["state"] == "killed" and "kill-all" in info["error"], info
    # Each one's event stream says so and ends (replay of an ended sandbox).
    status, events = read_sse(tenant, f"/v1/sandboxes/{sbs[0]['id']}/events", timeout=10)
    assert status == 200 and events[-1]["event"] == "sandbox.killed", events[-3:]
    assert events[-1]["data"]["data"]["error"] == "stopped by kill-all", events[-1]
    # What does not run (cgroup and socket directories) goes in the background, promptly.
    data_dir = api.daemon.data_dir
    wait_for(lambda: not any(leftovers(data_dir, sb["id"]) for sb in sbs), 10, "kill-all's leftovers removed")
    assert api.info(keep["id"])["state"] == "running"
    assert leftovers(data_dir, keep["id"]), "the surviving sandbox's own directories must stay"
    api.kill(keep["id"])
    # Nothing left: a second call stops nothing.
    assert tenant.post("/v1/kill-all").json()["killed"] == 0


def test_cpu_budget_kills(api):
    sb = api.create(policy={"version": 1, "control": {"cpu_budget": "1s"}})
    sid = sb["id"]
    api.start(sid, SPIN)
    t0 = time.monotonic()
    info = wait_for(lambda: (lambda i: i if i["state"] != "running" else None)(api.info(sid)), 6, "the CPU budget to kill")
    took = time.monotonic() - t0
    assert info["state"] == "killed", info
    assert "control.cpu_budget" in info["error"], info
    assert took < 3.5, took


@pytest.mark.parametrize("control, message", [
    ({"kill_after_violations": 0}, "at least 1"),
    ({"cpu_budget": "0s"}, "more than zero"),
])
def test_control_rules_are_validated(api, control, message):
    r = api.post("/v1/sandboxes", {"policy": {"version": 1, "control": control}})
    assert r.status == 400 and message in r.json()["error"]["message"], r


def test_kill_after_violations_counts_gateway_denials(api):
    """[control] kill_after_violations: each request the gateway denies is a violation;
    at the third the sandbox is killed, with the rule named in its error."""
    sb = api.create(policy={"version": 1, "network": {"allow": ["web.test:80"]},
                            "control": {"kill_after_violations": 3}})
    sid = sb["id"]
    code = ("import urllib.request\n"
            "for i in range(2):\n"
            "    try: urllib.request.urlopen('http://other.test/', timeout=5)\n"
            "    except Exception as e: print(getattr(e, 'code', e))\n")
    r = api.exec(sid, ["/usr/bin/python3", "-c", code])
    assert r["stdout"].split() == ["403", "403"], r
    assert api.info(sid)["state"] == "running", "two violations are below the limit"
    # The third denial kills the sandbox (this exec's own answer may be cut short).
    api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["/usr/bin/python3", "-c", code]})
    info = wait_for(lambda: (lambda i: i if i["state"] != "running" else None)(api.info(sid)), 10,
                    "the sandbox killed by kill_after_violations")
    assert info["state"] == "killed", info
    assert "kill_after_violations" in (info.get("error") or ""), info
