"""Per-tenant quotas (issue 22 item 6; crates/manager/src/quota.rs, docs/quotas.md): a real
daemon with small quotas. Each refusal is a 429 `tenant_quota` whose message names the quota
and its value; each has an outside control: another tenant (or the admin tenant) doing the
same thing at the same time is admitted. Also: `limits.nofile` above the daemon's own hard
limit is refused before any work (422), where it used to fail deep in the sandbox's setup."""
import os
import time

import pytest

from .support import Daemon, binary_serves, skip_or_fail, wait_for
from .test_events import read_sse

SMALL = {"version": 1, "limits": {"memory": "128MiB", "disk": "64MiB"}}
QUOTAS = [
    "--quota", "sandboxes=2,memory=1GiB",
    "--tenant-quota", "qm:sandboxes=10,memory=512MiB",
    "--tenant-quota", "qd:sandboxes=10,disk=1GiB",
    "--tenant-quota", "qe:execs=3/min",
    "--tenant-quota", "qp:sandboxes=1,disk=1GiB",
    "--tenant-quota", "qf:sandboxes=1",
    "--tenant-quota", "qev:events=30/min",
]


def start(**kw):
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    d = Daemon(**kw)
    try:
        d.start()
    except RuntimeError as e:
        d.cleanup()
        pytest.fail(str(e))
    return d


@pytest.fixture(scope="module")
def qd():
    d = start(args=QUOTAS)
    yield d
    d.cleanup()


def key(d, tenant):
    r = d.admin().post("/v1/keys", {"tenant": tenant})
    assert r.status == 201, r
    return d.admin().with_key(r.json()["key"])


MIB = 1 << 20


def usage(api):
    r = api.get("/v1/quota")
    assert r.status == 200, r
    return r.json()["usage"]


def policy(memory="128MiB", disk="64MiB"):
    return {"version": 1, "limits": {"memory": memory, "disk": disk}}


def refused(r, quota):
    assert (r.status, r.error_code) == (429, "tenant_quota"), r
    message = r.json()["error"]["message"]
    assert f"(quota {quota})" in message, message
    return message


def test_a_tenant_sees_its_usage_and_limits_and_only_the_admin_sees_others(qd):
    t, other, admin = key(qd, "qv"), key(qd, "qv-other"), qd.admin()
    sid = t.create(policy=policy(memory="256MiB", disk="128MiB"))["id"]
    r = t.get("/v1/quota")
    assert r.json() == {
        "tenant": "qv",
        "usage": {"sandboxes": 1, "memory_bytes": 256 * MIB, "disk_bytes": 128 * MIB},
        "limits": {"sandboxes": 2, "memory_bytes": 1 << 30, "disk_bytes": None, "creates": None, "execs": None,
                   "events": None},
    }, r
    assert admin.get("/v1/quota", query={"tenant": "qv"}).json() == r.json()
    assert admin.get("/v1/quota", query={"tenant": "qe"}).json()["limits"]["execs"] == "3/min"
    # The admin tenant is unlimited here.
    assert set(admin.get("/v1/quota").json()["limits"].values()) == {None}
    assert t.get("/v1/quota", query={"tenant": "qv"}).status == 200
    r = other.get("/v1/quota", query={"tenant": "qv"})
    assert (r.status, r.error_code) == (403, "forbidden"), r
    r = admin.get("/v1/quota", query={"tenant": "Not A Tenant"})
    assert (r.status, r.error_code) == (400, "invalid_request"), r
    assert t.kill(sid).status == 204
    assert usage(t) == {"sandboxes": 0, "memory_bytes": 0, "disk_bytes": 0}


def test_the_sandbox_after_the_quota_is_429_until_one_is_killed(qd):
    t1, t2, admin = key(qd, "qs1"), key(qd, "qs2"), qd.admin()
    made = [t1.create(policy=SMALL)["id"] for _ in range(2)]
    r = t1.post("/v1/sandboxes", {"policy": SMALL, "timeout_s": 60})
    message = refused(r, "sandboxes=2")
    assert message.startswith("tenant qs1 has 2 of its 2 sandboxes running"), message
    assert "kill or pause some" in message and "--tenant-quota qs1:sandboxes=N" in message, message
    # Outside control: another tenant, and the admin tenant (no quota of its own), are
    # admitted while qs1 is full.
    for other in (t2, t2, admin, admin, admin):
        other.create(policy=SMALL)
    assert refused(t2.post("/v1/sandboxes", {"policy": SMALL}), "sandboxes=2")
    # Both of qs1's sandboxes still work; a kill frees a slot at once.
    for sid in made:
        assert t1.exec(sid, ["/bin/echo", "ok"])["stdout"] == "ok\n"
    assert t1.kill(made[0]).status == 204
    t1.create(policy=SMALL)
    refused(t1.post("/v1/sandboxes", {"policy": SMALL}), "sandboxes=2")
    # Killing twice gives nothing back twice.
    assert t1.kill(made[0]).status == 204
    refused(t1.post("/v1/sandboxes", {"policy": SMALL}), "sandboxes=2")


def test_memory_quota_refuses_a_create_that_would_exceed_the_total(qd):
    qm, other = key(qd, "qm"), key(qd, "qm-other")
    first = qm.create(policy=policy(memory="256MiB"))["id"]
    r = qm.post("/v1/sandboxes", {"policy": policy(memory="384MiB")})
    message = refused(r, "memory=512MiB")
    assert message.startswith(
        "tenant qm's running sandboxes hold 256MiB of its 512MiB of memory and this one asks for 384MiB"), message
    assert "limits.memory" in message, message
    # Outside control: the same create by a tenant under the default (1GiB) is admitted.
    other.create(policy=policy(memory="384MiB"))
    # What fits exactly is admitted; the default memory limit (1GiB) is counted when the
    # policy gives none.
    qm.create(policy=policy(memory="256MiB"))
    r = qm.post("/v1/sandboxes", {})
    refused(r, "memory=512MiB")
    assert qm.kill(first).status == 204
    qm.create(policy=policy(memory="256MiB"))


def test_disk_quota_counts_writable_layer_caps(qd):
    t = key(qd, "qd")
    t.create(policy=policy(disk="768MiB"))
    message = refused(t.post("/v1/sandboxes", {"policy": policy(disk="512MiB")}), "disk=1GiB")
    assert "hold 768MiB of its 1GiB of writable disk and this one asks for 512MiB" in message, message
    t.create(policy=policy(disk="256MiB"))


def test_exec_rate_quota_is_429_and_other_tenants_are_unaffected(qd):
    qe, other = key(qd, "qe"), key(qd, "qe-other")
    sid = qe.create(policy=SMALL)["id"]
    osid = other.create(policy=SMALL)["id"]
    for i in range(3):
        assert qe.exec(sid, ["/bin/echo", str(i)])["stdout"] == f"{i}\n"
    r = qe.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["/bin/echo", "4"]})
    message = refused(r, "execs=3/min")
    assert message.startswith("tenant qe starts commands faster than its quota allows"), message
    assert "retry in " in message, message
    # Background processes count too.
    r = qe.post(f"/v1/sandboxes/{sid}/processes", {"cmd": ["/bin/sleep", "1"]})
    refused(r, "execs=3/min")
    # Outside control: another tenant runs as many as it likes meanwhile.
    for i in range(10):
        assert other.exec(osid, ["/bin/echo", str(i)])["stdout"] == f"{i}\n"


def test_events_past_the_tenants_rate_are_dropped_and_counted(qd):
    """200 execs inside make ~400 rate-limited events (proc.exec, proc.exit): a tenant with
    events=30/min gets about 30 of them streamed (and audited); the sandbox's end says how
    many were dropped. Another tenant's identical sandbox gets them all."""
    loop = ["/bin/sh", "-c", "for i in $(seq 200); do /bin/true; done"]
    got = {}
    for name in ("qev", "qev-other"):
        t = key(qd, name)
        sid = t.create(policy=SMALL)["id"]
        assert t.exec(sid, loop)["exit_code"] == 0
        if name == "qev-other":
            wait_for(lambda: len([e for e in read_sse(t, f"/v1/sandboxes/{sid}/events", {"follow": "false"})[1]
                                  if e["event"] == "proc.exec"]) >= 200, 10)
        else:
            time.sleep(1)  # the exec watcher reports a moment after the exec returns
        assert t.kill(sid).status == 204
        _, events = read_sse(t, f"/v1/sandboxes/{sid}/events", {"follow": "false"})
        procs = [e for e in events if e["event"].startswith("proc.")]
        end = next(e for e in events if e["event"] == "sandbox.killed")["data"]["data"]
        got[name] = (len(procs), end["events_dropped"])
    limited, dropped = got["qev"]
    assert limited <= 40 and dropped >= 300, got
    # Outside control: the same work by a tenant without the quota loses nothing.
    assert got["qev-other"][0] >= 400 and got["qev-other"][1] == 0, got


def test_paused_sandboxes_free_their_slot_and_memory_but_keep_their_disk(qd):
    t = key(qd, "qp")
    sid = t.create(policy=policy(disk="768MiB"), storage="disk")["id"]
    refused(t.post("/v1/sandboxes", {"policy": SMALL}), "sandboxes=1")
    r = t.post(f"/v1/sandboxes/{sid}/pause")
    assert r.status == 200 and r.json()["state"] == "paused", r
    assert usage(t) == {"sandboxes": 0, "memory_bytes": 0, "disk_bytes": 768 * MIB}
    # The slot is free; the paused layer's disk still counts.
    message = refused(t.post("/v1/sandboxes", {"policy": policy(disk="512MiB")}), "disk=1GiB")
    assert "paused ones keep their disk" in message, message
    second = t.create(policy=policy(disk="128MiB"))["id"]
    # Resuming needs the slot again.
    refused(t.post(f"/v1/sandboxes/{sid}/resume"), "sandboxes=1")
    assert t.info(sid)["state"] == "paused"
    assert t.kill(second).status == 204
    r = t.post(f"/v1/sandboxes/{sid}/resume")
    assert r.status == 200 and r.json()["state"] == "running", r
    # Killed, it gives everything back.
    assert t.kill(sid).status == 204
    assert usage(t) == {"sandboxes": 0, "memory_bytes": 0, "disk_bytes": 0}
    t.create(policy=policy(disk="1GiB"))


def test_a_fork_over_the_quota_is_429_and_leaves_no_layer(qd):
    layers = os.path.join(qd.data_dir, "storage", "pool", "layers")
    t, other = key(qd, "qf"), key(qd, "qf-other")
    sid = t.create(policy=SMALL, storage="disk")["id"]
    before = set(os.listdir(layers))
    assert sid in before
    r = t.post(f"/v1/sandboxes/{sid}/fork", {"count": 2})
    refused(r, "sandboxes=1")
    assert set(os.listdir(layers)) == before, "a refused fork left its layers"
    # Outside control: a tenant with room forks.
    osid = other.create(policy=SMALL, storage="disk")["id"]
    r = other.post(f"/v1/sandboxes/{osid}/fork", {"count": 1})
    assert r.status in (200, 201) and len(r.json()["sandboxes"]) == 1, r
    for sb in r.json()["sandboxes"]:
        qd.created.append((other.key, sb["id"]))


def test_a_restarted_daemon_counts_the_sandboxes_it_adopts():
    d = start(args=["--quota", "sandboxes=2"])
    try:
        t = key(d, "qr")
        paused = t.create(policy=SMALL, storage="disk")["id"]
        assert t.post(f"/v1/sandboxes/{paused}/pause").status == 200
        made = [t.create(policy=SMALL, timeout_s=120)["id"] for _ in range(2)]
        before = usage(t)
        assert before == {"sandboxes": 2, "memory_bytes": 256 * MIB, "disk_bytes": 192 * MIB}
        d.crash()
        d.start()
        assert [t.info(s)["state"] for s in made] == ["running", "running"]
        # The running ones and the paused one's disk are counted again.
        assert usage(t) == before
        refused(t.post("/v1/sandboxes", {"policy": SMALL}), "sandboxes=2")
        key(d, "qr-other").create(policy=SMALL)  # outside control
        assert t.kill(made[0]).status == 204
        t.create(policy=SMALL)
        assert t.kill(paused).status == 204
        assert usage(t) == {"sandboxes": 2, "memory_bytes": 256 * MIB, "disk_bytes": 128 * MIB}
    finally:
        d.cleanup()


def test_nofile_above_the_daemons_hard_limit_is_refused_before_any_work():
    d = start(nofile=1024)
    try:
        api = d.admin()
        r = api.post("/v1/sandboxes", {"policy": {"version": 1, "limits": {"nofile": 4096}}})
        assert (r.status, r.error_code) == (422, "policy_refused"), r
        message = r.json()["error"]["message"]
        assert message.startswith("cannot enforce limits.nofile here: 4096 is more than this daemon's own "
                                  "hard open-file limit (1024)"), message
        # Nothing was made for it.
        assert api.get("/v1/sandboxes").json()["sandboxes"] == []
        # Outside control: up to the limit is admitted and set inside.
        sid = api.create(policy={"version": 1, "limits": {"nofile": 1024}})["id"]
        assert api.exec(sid, ["/bin/sh", "-c", "ulimit -n"])["stdout"] == "1024\n"
        assert wait_for(lambda: api.kill(sid).status == 204, 10)
    finally:
        d.cleanup()
