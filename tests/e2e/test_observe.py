"""What code inside a sandbox does to its files, and the limits it hits, as events (issue 5,
the observation plane): file changes in the writable zones (fs.*), a flood of them
rate-limited at the source and counted while the daemon stays responsive, and limit hits
(limit.pids, limit.memory, limit.disk) read from the sandbox's cgroup and filesystem."""
import threading
import time

from .support import wait_for
from .test_events import read_sse


def stream(api, sid):
    status, events = read_sse(api, f"/v1/sandboxes/{sid}/events", {"follow": "false"})
    assert status == 200, events
    return events


def fs_events(api, sid):
    return [(e["event"], e["data"]["data"]) for e in stream(api, sid) if e["event"].startswith("fs.")]


def test_file_changes_inside_are_events(api, sandbox):
    """Writes, appends, renames and deletes by a command inside, in /workspace and /tmp,
    each show up with the sandbox-side path; a nested directory made with mkdir -p is
    watched as it appears; /etc (read-only) is not a zone."""
    sid = sandbox["id"]
    script = (
        "cd /workspace && echo one > a.txt && sleep 0.3 && echo two >> a.txt && mv a.txt b.txt"
        " && mkdir -p d/e && sleep 0.3 && echo deep > d/e/f.txt && rm b.txt"
        " && echo t > /tmp/t.txt && mv /tmp/t.txt /tmp/u.txt && rm /tmp/u.txt"
    )
    assert api.exec(sid, ["/bin/sh", "-c", script])["exit_code"] == 0
    assert wait_for(lambda: ("fs.deleted", "/tmp/u.txt") in [(k, d.get("path")) for k, d in fs_events(api, sid)], 10)
    got = fs_events(api, sid)
    flat = [(k, d.get("path") or d.get("to"), d.get("from")) for k, d in got]
    want_in_order = [
        ("fs.created", "/workspace/a.txt", None),
        ("fs.modified", "/workspace/a.txt", None),
        ("fs.modified", "/workspace/a.txt", None),  # the append, at its close
        ("fs.moved", "/workspace/b.txt", "/workspace/a.txt"),
        ("fs.created", "/workspace/d", None),
        ("fs.deleted", "/workspace/b.txt", None),
        ("fs.created", "/tmp/t.txt", None),
        ("fs.moved", "/tmp/u.txt", "/tmp/t.txt"),
        ("fs.deleted", "/tmp/u.txt", None),
    ]
    at = 0
    for ev in flat:
        if at < len(want_in_order) and ev == want_in_order[at]:
            at += 1
    assert at == len(want_in_order), (want_in_order[at:], flat)
    assert ("fs.created", "/workspace/d/e/f.txt", None) in flat, flat
    assert any(k == "fs.modified" and p == "/workspace/d/e/f.txt" for k, p, _ in flat), flat


def test_a_file_flood_is_rate_limited_counted_and_the_daemon_stays_responsive(api):
    """100 000 files created and deleted inside (300 000 raw events): at most the bucket's
    burst plus its rate gets through, the rest is counted in `dropped` and in the
    terminal event, and the API answers health checks quickly meanwhile."""
    sb = api.create(timeout_s=300)
    sid = sb["id"]
    flood = (
        "import os\n"
        "os.makedirs('/tmp/fl', exist_ok=True)\n"
        "for i in range(100000):\n"
        "    p = f'/tmp/fl/{i}'\n"
        "    open(p, 'w').close()\n"
        "    os.unlink(p)\n"
    )
    done = {}

    def run():
        t0 = time.monotonic()
        done["r"] = api.exec(sid, ["python3", "-c", flood], http_timeout=280)
        done["s"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    worst = 0.0
    while t.is_alive():
        t0 = time.monotonic()
        assert api.get("/healthz", timeout=5).status == 200
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.1)
    t.join()
    assert done["r"]["exit_code"] == 0, done["r"]
    time.sleep(1)
    assert worst < 2.0, f"a health check took {worst:.3f}s during the flood"
    time.sleep(1)
    assert api.kill(sid).status == 204
    events = stream(api, sid)
    end = events[-1]
    assert end["event"] == "sandbox.killed", end
    dropped = end["data"]["data"]["events_dropped"]
    # seq counts every event that got through (the replay ring keeps only the last 1024).
    emitted = end["data"]["seq"]
    # The bus lets 1000/s through after a burst of 5000 (every limited kind together).
    assert emitted <= 5000 + 1000 * (done["s"] + 3) + 100, (emitted, done["s"])
    assert dropped >= 100_000, dropped
    overflowed = any(e["event"] == "fs.overflow" for e in events)
    # Each file: created, modified (its close), deleted. At most the kernel's queue
    # (fs.inotify.max_queued_events, 16384 here) may still wait when the sandbox is
    # removed; more behind would have overflowed it (fs.overflow).
    assert overflowed or emitted + dropped >= 300_000 - 16_384 - 1_000, (emitted, dropped)
    assert any(e["data"].get("dropped", 0) > 0 for e in events), "drops are reported on later events"


def limit_events(api, sid, kind):
    return [e["data"]["data"] for e in stream(api, sid) if e["event"] == kind]


def test_pids_limit_hits_are_events(api):
    """Forks refused by the sandbox's pids limit become limit.pids (read from the cgroup's
    pids.events, v1 or v2); before the limit is reached there is none."""
    sb = api.create(policy={"version": 1, "limits": {"pids": 16}})
    sid = sb["id"]
    try:
        assert api.exec(sid, ["/bin/sh", "-c", "for i in 1 2 3; do /bin/true; done"])["exit_code"] == 0
        time.sleep(1.5)
        assert limit_events(api, sid, "limit.pids") == [], "no limit reached yet"
        api.exec(sid, ["/bin/sh", "-c", "for i in $(seq 40); do sleep 3 & done; wait"], http_timeout=60)
        assert wait_for(lambda: limit_events(api, sid, "limit.pids"), 5)
        hit = limit_events(api, sid, "limit.pids")[0]
        assert hit["refused_forks"] >= 1 and hit["total"] >= hit["refused_forks"], hit
    finally:
        api.kill(sid)


def test_memory_limit_kills_are_events(api):
    """A command killed by the OOM killer at the sandbox's memory limit: limit.memory."""
    sb = api.create(policy={"version": 1, "limits": {"memory": "64MiB"}})
    sid = sb["id"]
    try:
        small = api.exec(sid, ["python3", "-c", "b = bytearray(8 << 20)"])
        assert small["exit_code"] == 0 and not small["oom_killed"], small
        time.sleep(1.5)
        assert limit_events(api, sid, "limit.memory") == []
        big = api.exec(sid, ["python3", "-c", "b = bytearray(512 << 20)"])
        assert big["oom_killed"], big
        assert wait_for(lambda: limit_events(api, sid, "limit.memory"), 5)
        assert limit_events(api, sid, "limit.memory")[0]["oom_kills"] >= 1
    finally:
        api.kill(sid)


def test_a_full_disk_is_an_event(api):
    """Filling the writable layer (its tmpfs is the disk limit) gives one limit.disk."""
    sb = api.create(policy={"version": 1, "limits": {"disk": "16MiB"}})
    sid = sb["id"]
    try:
        assert api.exec(sid, ["/bin/sh", "-c", "head -c 1000000 /dev/zero > /tmp/small"])["exit_code"] == 0
        time.sleep(1.5)
        assert limit_events(api, sid, "limit.disk") == [], "1 MB of 16 MiB: not full"
        r = api.exec(sid, ["/bin/sh", "-c", "head -c 100000000 /dev/zero > /workspace/big"])
        assert r["exit_code"] != 0 and "No space" in r["stderr"], r
        assert wait_for(lambda: limit_events(api, sid, "limit.disk"), 5)
        time.sleep(2)
        assert len(limit_events(api, sid, "limit.disk")) == 1, "said once while it stays full"
    finally:
        api.kill(sid)


def test_denied_execs_are_violations_and_trigger_the_stop_rule(api):
    """With tools.allow, an exec of another file fails with EACCES inside, and the daemon
    says so: policy.violation (layer tools.allow, the path), counted toward
    control.kill_after_violations. Allowed execs are not violations."""
    policy = {"version": 1, "tools": {"allow": ["/bin/sh", "/bin/true"]},
              "control": {"kill_after_violations": 3}}
    sb = api.create(policy=policy)
    sid = sb["id"]
    r = api.exec(sid, ["/bin/sh", "-c", "/bin/true && echo ok"])
    assert r["stdout"].strip() == "ok", r
    time.sleep(0.5)
    assert [e for e in stream(api, sid) if e["event"] == "policy.violation"] == [], "allowed: no violation"
    r = api.exec(sid, ["/bin/sh", "-c", "/bin/ls /; /bin/cat /etc/hostname; echo rc=$?"])
    assert "Permission denied" in r["stderr"] and "rc=126" in r["stdout"], r
    violations = [e["data"]["data"] for e in stream(api, sid) if e["event"] == "policy.violation"]
    assert [v["path"] for v in violations] == ["/bin/ls", "/bin/cat"], violations
    assert violations[0]["layer"] == "tools.allow" and violations[0]["argv"] == ["/bin/ls", "/"], violations
    assert api.info(sid)["state"] == "running", "two violations are below the limit"
    api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["/bin/sh", "-c", "/bin/ls"]})
    info = wait_for(lambda: (lambda i: i if i["state"] != "running" else None)(api.info(sid)), 10)
    assert info and info["state"] == "killed" and "kill_after_violations" in (info.get("error") or ""), info
