"""Persistence with the real daemon (docs/persistence.md): disk-backed writable layers,
pause and resume across a `kill -9` of the daemon, on_timeout "pause", idle pauses and
auto-resume, snapshots taken while a process writes, forks, volumes and the tenant rules.
"""
import glob
import os
import shutil
import time

import pytest

from .support import pid_alive, require_root, skip_or_fail, wait_for

DISK = {"storage": "disk"}


@pytest.fixture(autouse=True)
def _needs_the_pool():
    require_root("disk-backed layers live in a loop-mounted pool: root only")
    if not shutil.which("mkfs.btrfs"):
        skip_or_fail("mkfs.btrfs is missing (scripts/test installs btrfs-progs)")


def layer_dir(d, sid):
    return os.path.join(d.data_dir, "storage", "pool", "layers", sid)


def cgroup_dirs(sid):
    return glob.glob(f"/sys/fs/cgroup/*/safehouse/{sid}") + glob.glob(f"/sys/fs/cgroup/safehouse/{sid}")


def test_files_survive_pause_then_daemon_kill9_then_resume(own_daemon):
    d = own_daemon
    d.start()
    api = d.admin()
    sb = api.create(env={"GREETING": "hello"}, policy={"version": 1, "limits": {"memory": "256MiB"}}, **DISK)
    sid = sb["id"]
    assert sb["storage"] == "disk", sb
    assert api.exec(sid, ["sh", "-c", "echo kept > /workspace/state && echo home > /home/user/h"])["exit_code"] == 0
    api.start(sid, ["sleep", "300"])
    agent = api.info(sid)["pid"]

    r = api.post(f"/v1/sandboxes/{sid}/pause")
    assert r.status == 200, r
    kept = r.json()
    assert (kept["state"], kept["filesystem"], kept["memory"]) == ("paused", True, False), kept
    assert "CRIU" in kept["note"], kept
    # Nothing of it runs, its cgroup (its memory) is gone, its files are on disk.
    assert wait_for(lambda: not pid_alive(agent), 5), "the agent survived the pause"
    assert cgroup_dirs(sid) == [], "a paused sandbox keeps a cgroup"
    assert os.path.isdir(layer_dir(d, sid))
    info = api.info(sid)
    assert info["state"] == "paused" and "pid" not in info or info["state"] == "paused", info
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]})
    assert (r.status, r.error_code) == (409, "paused"), r
    assert api.post(f"/v1/sandboxes/{sid}/pause").json()["state"] == "paused", "pause is idempotent"

    d.crash()
    d.start()
    assert api.info(sid)["state"] == "paused", "the paused state did not survive the restart"
    r = api.post(f"/v1/sandboxes/{sid}/resume")
    assert r.status == 200, r
    assert r.json()["id"] == sid and r.json()["state"] == "running", r.json()
    res = api.exec(sid, ["sh", "-c", "cat /workspace/state /home/user/h; echo $GREETING; pgrep -x sleep || echo none"])
    assert res["stdout"] == "kept\nhome\nhello\nnone\n", res
    assert api.post(f"/v1/sandboxes/{sid}/resume").status == 200, "resume is idempotent"

    assert api.kill(sid).status == 204
    assert wait_for(lambda: not os.path.exists(layer_dir(d, sid)), 5), "the layer outlived its sandbox"


def test_on_timeout_pause_then_auto_resume_on_exec(own_daemon):
    d = own_daemon
    d.start()
    api = d.admin()
    sb = api.create(timeout_s=2, lifecycle={"on_timeout": "pause", "auto_resume": True})
    sid = sb["id"]
    assert sb["storage"] == "disk" and sb["lifecycle"]["on_timeout"] == "pause", sb
    api.exec(sid, ["sh", "-c", "echo v1 > /tmp/f"])
    assert wait_for(lambda: api.info(sid)["state"] == "paused", 10), api.info(sid)
    res = api.exec(sid, ["cat", "/tmp/f"])  # resumes it on the way
    assert res["stdout"] == "v1\n", res
    assert api.info(sid)["state"] == "running"
    api.kill(sid)


def test_idle_sandboxes_pause_and_files_calls_resume_them(own_daemon):
    d = own_daemon
    d.start()
    api = d.admin()
    sb = api.create(timeout_s=300, lifecycle={"on_timeout": "pause", "auto_resume": True, "idle_timeout_s": 2})
    sid = sb["id"]
    api.put_file(sid, "/workspace/a.txt", b"idle")
    assert wait_for(lambda: api.info(sid)["state"] == "paused", 15), api.info(sid)
    r = api.get_file(sid, "/workspace/a.txt")  # the files API resumes it
    assert (r.status, r.body) == (200, b"idle"), r
    assert api.info(sid)["state"] == "running"
    api.kill(sid)


def test_a_memory_sandbox_cannot_pause_and_says_why(daemon):
    api = daemon.admin()
    sb = api.create()
    r = api.post(f"/v1/sandboxes/{sb['id']}/pause")
    assert r.status in (400, 409, 422, 501), r
    assert "storage" in r.json()["error"]["message"], r
    api.kill(sb["id"])
    r = api.post("/v1/sandboxes", {"storage": "memory", "lifecycle": {"on_timeout": "pause"}})
    assert r.status == 400 and "storage" in r.json()["error"]["message"], r


WRITER = r"""
i=0
while true; do
  i=$((i+1))
  printf 'record %08d %s\n' $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx >> /workspace/log
done
"""


def test_a_snapshot_taken_while_a_process_writes_is_consistent(daemon):
    api = daemon.admin()
    sb = api.create(**DISK)
    sid = sb["id"]
    api.start(sid, ["sh", "-c", WRITER])
    time.sleep(1)
    r = api.post(f"/v1/sandboxes/{sid}/snapshots")
    assert r.status == 201, r
    snap = r.json()
    assert snap["sandbox_id"] == sid and snap["id"].startswith("snap_"), snap
    assert snap["id"] in [s["id"] for s in api.get("/v1/snapshots").json()["snapshots"]]

    child = api.create(snapshot=snap["id"])
    assert child["storage"] == "disk", child
    res = api.exec(child["id"], ["sh", "-c", "wc -l < /workspace/log; awk 'length($0) != 88' /workspace/log | wc -l"])
    lines, torn = res["stdout"].split()
    assert int(lines) > 0 and torn == "0", f"torn records in the snapshot: {res}"
    # The parent keeps writing; the child's copy does not move.
    time.sleep(0.3)
    again = api.exec(child["id"], ["sh", "-c", "wc -l < /workspace/log"])["stdout"].strip()
    assert again == lines
    assert api.delete(f"/v1/snapshots/{snap['id']}").status == 204
    assert api.get(f"/v1/snapshots/{snap['id']}").status == 404
    assert api.exec(child["id"], ["sh", "-c", "wc -l < /workspace/log"])["stdout"].strip() == lines
    api.kill(child["id"])
    api.kill(sid)


def test_ten_forks_see_the_parent_and_not_each_other(daemon):
    api = daemon.admin()
    parent = api.create(env={"ROLE": "parent"}, **DISK)
    api.exec(parent["id"], ["sh", "-c", "echo from-parent > /workspace/shared"])
    r = api.post(f"/v1/sandboxes/{parent['id']}/fork", {"count": 10})
    assert r.status == 201, r
    forks = r.json()["sandboxes"]
    assert len(forks) == 10 and len({f["id"] for f in forks}) == 10, forks
    for i, f in enumerate(forks):
        daemon.created.append((api.key, f["id"]))
        res = api.exec(f["id"], ["sh", "-c", f"cat /workspace/shared; echo $ROLE; echo {i} > /workspace/mine-{i}"])
        assert res["stdout"] == "from-parent\nparent\n", res
    for i, f in enumerate(forks):
        res = api.exec(f["id"], ["sh", "-c", "ls /workspace | sort | tr '\\n' ' '"])
        assert res["stdout"] == f"mine-{i} shared ", res
    assert api.exec(parent["id"], ["ls", "/workspace"])["stdout"] == "shared\n"
    r = api.post(f"/v1/sandboxes/{parent['id']}/fork", {"count": 0})
    assert r.status == 400, r
    for f in forks:
        api.kill(f["id"])
    api.kill(parent["id"])


def test_a_volume_shared_by_two_sandboxes_and_the_tenant_rules(daemon, tenant_key):
    api = daemon.admin()
    r = api.post("/v1/volumes", {"name": "shared-data", "size": "64MiB"})
    assert r.status == 201, r
    assert api.post("/v1/volumes", {"name": "shared-data", "size": "64MiB"}).status == 409
    assert "shared-data" in [v["name"] for v in api.get("/v1/volumes").json()["volumes"]]
    writer = api.create(volumes=[{"name": "shared-data", "path": "/data"}], **DISK)
    reader = api.create(volumes=[{"name": "shared-data", "path": "/data", "read_only": True}])
    assert api.exec(writer["id"], ["sh", "-c", "echo shared > /data/f"])["exit_code"] == 0
    assert api.exec(reader["id"], ["cat", "/data/f"])["stdout"] == "shared\n"
    res = api.exec(reader["id"], ["sh", "-c", "echo x > /data/g"])
    assert res["exit_code"] != 0 and "Read-only" in res["stderr"], res
    # The cap holds inside.
    res = api.exec(writer["id"], ["sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=100 2>&1; true"])
    assert "Disk quota exceeded" in res["stdout"], res

    r = api.delete("/v1/volumes/shared-data")
    assert r.status == 409 and writer["id"] in r.json()["error"]["message"], r
    # Another tenant neither sees nor mounts it.
    other = api.with_key(tenant_key)
    assert other.get("/v1/volumes").json()["volumes"] == []
    r = other.post("/v1/sandboxes", {"volumes": [{"name": "shared-data", "path": "/data"}]})
    assert r.status == 400 and "no volume" in r.json()["error"]["message"], r
    assert other.delete("/v1/volumes/shared-data").status == 404

    api.kill(reader["id"])
    # A paused sandbox mounts it again on resume: it holds the volume too.
    assert api.post(f"/v1/sandboxes/{writer['id']}/pause").status == 200
    r = api.delete("/v1/volumes/shared-data")
    assert r.status == 409 and f"{writer['id']} (paused)" in r.json()["error"]["message"], r
    assert reader["id"] not in r.json()["error"]["message"], r
    api.kill(writer["id"])
    assert api.delete("/v1/volumes/shared-data").status == 204
    assert api.get("/v1/volumes").json()["volumes"] == []


def test_the_files_api_on_a_volume_without_a_sandbox(daemon, tenant_key):
    api = daemon.admin()
    assert api.post("/v1/volumes", {"name": "datasets", "size": "32MiB"}).status == 201
    vol = "/v1/volumes/datasets"
    r = api.request("PUT", f"{vol}/files", b"a,b\n1,2\n", raw=True, query={"path": "/in/data.csv"})
    assert r.status == 201 and r.json()["size"] == 8 and r.json()["path"] == "/in/data.csv", r
    assert api.get(f"{vol}/files", query={"path": "/in/data.csv"}).body == b"a,b\n1,2\n"
    assert api.get(f"{vol}/fs/stat", query={"path": "/in"}).json()["type"] == "dir"
    ls = api.get(f"{vol}/fs/list", query={"path": "/", "depth": "2"}).json()["entries"]
    assert sorted(e["path"] for e in ls) == ["/in", "/in/data.csv"], ls

    # A sandbox sees the file (as its own user) and what it writes is there without it.
    sb = api.create(volumes=[{"name": "datasets", "path": "/data"}])
    res = api.exec(sb["id"], ["sh", "-c", "cat /data/in/data.csv; echo out > /data/out.txt; "
                                          "ln -s /etc/shadow /data/shadow; ln -s ../../../../etc /data/up; "
                                          "[ $(stat -c %u /data/in/data.csv) = $(id -u) ] && echo mine"])
    assert res["stdout"] == "a,b\n1,2\nmine\n", res
    api.kill(sb["id"])
    assert api.get(f"{vol}/files", query={"path": "/out.txt"}).body == b"out\n"
    # Symlinks planted in the volume resolve inside it: the host's files stay out of reach
    # (the same paths are readable on the host, where they lead).
    assert os.path.exists("/etc/shadow") and os.path.isdir("/etc/ssl")
    for path in ("/shadow", "/up/shadow", "/up/ssl"):
        r = api.get(f"{vol}/files", query={"path": path})
        assert r.status == 404, (path, r)
    assert api.get(f"{vol}/fs/list", query={"path": "/up"}).status == 404

    # The cap holds for the API's writes too.
    r = api.request("PUT", f"{vol}/files", b"x" * (40 << 20), raw=True, query={"path": "/big"})
    assert (r.status, r.error_code) == (413, "quota_exceeded"), r
    assert "volume \"datasets\" is full" in r.json()["error"]["message"], r
    assert api.get(f"{vol}/fs/stat", query={"path": "/big"}).status == 404  # the failed upload left nothing
    assert api.post(f"{vol}/fs/mkdir", {"path": "/archive"}).status == 201
    assert api.post(f"{vol}/fs/mkdir", {"path": "/archive"}).status == 409
    r = api.post(f"{vol}/fs/move", {"from": "/out.txt", "to": "/archive/out.txt"})
    assert r.status == 200 and r.json()["path"] == "/archive/out.txt", r
    assert api.delete(f"{vol}/fs", query={"path": "/in"}).status == 409  # not empty
    assert api.delete(f"{vol}/fs", query={"path": "/in", "recursive": "true"}).status == 204
    assert api.get(f"{vol}/fs/stat", query={"path": "/in"}).status == 404

    other = api.with_key(tenant_key)
    for r in (other.get(f"{vol}/files", query={"path": "/archive/out.txt"}),
              other.request("PUT", f"{vol}/files", b"x", raw=True, query={"path": "/x"}),
              other.get(f"{vol}/fs/list", query={"path": "/"})):
        assert r.status == 404 and "no volume" in r.json()["error"]["message"], r
    assert api.get("/v1/volumes/nope/files", query={"path": "/x"}).status == 404
    assert api.delete(vol).status == 204


def test_the_disk_cap_stops_dd_with_edquot_in_a_daemon_sandbox(daemon):
    api = daemon.admin()
    st = os.statvfs("/")
    free = st.f_bavail * st.f_frsize
    sb = api.create(policy={"version": 1, "limits": {"disk": "16MiB"}}, **DISK)
    res = api.exec(sb["id"], ["sh", "-c", "dd if=/dev/zero of=/tmp/big bs=1M count=64 2>&1; echo rc=$?"])
    assert "Disk quota exceeded" in res["stdout"] and "rc=1" in res["stdout"], res
    st = os.statvfs("/")
    assert free - st.f_bavail * st.f_frsize < 64 << 20, "the host disk filled up"
    api.kill(sb["id"])


def test_another_tenant_cannot_pause_resume_or_snapshot(daemon, tenant_key):
    api = daemon.admin()
    sb = api.create(**DISK)
    other = api.with_key(tenant_key)
    for path in ("pause", "resume", "snapshots", "fork"):
        r = other.post(f"/v1/sandboxes/{sb['id']}/{path}", {} if path == "fork" else None)
        assert r.status == 404, (path, r)
    snap = api.post(f"/v1/sandboxes/{sb['id']}/snapshots").json()
    assert other.get(f"/v1/snapshots/{snap['id']}").status == 404
    assert other.delete(f"/v1/snapshots/{snap['id']}").status == 404
    r = other.post("/v1/sandboxes", {"snapshot": snap["id"]})
    assert r.status == 404, r
    api.delete(f"/v1/snapshots/{snap['id']}")
    api.kill(sb["id"])


def test_paused_layers_and_volumes_are_in_the_metrics(own_daemon):
    """Disk that lives without a running sandbox is visible: a paused sandbox's layer and a
    volume each have a series (from the pool's quota groups), and paused sandboxes count."""
    import re
    d = own_daemon
    d.start()
    api = d.admin()
    assert api.post("/v1/volumes", {"name": "metered", "size": "64MiB"}).status == 201
    sid = api.create(volumes=[{"name": "metered", "path": "/data"}], **DISK)["id"]
    r = api.exec(sid, ["sh", "-c", "head -c 6000000 /dev/urandom > /workspace/big && "
                                   "head -c 3000000 /dev/urandom > /data/vol"])
    assert r["exit_code"] == 0, r
    assert api.post(f"/v1/sandboxes/{sid}/pause").status == 200
    os.sync()  # the quota groups' counters move at the pool's commit

    def value(text, pattern):
        m = re.search(pattern + r" (\d+)$", text, re.M)
        return int(m.group(1)) if m else None

    def metrics():
        r = api.get("/metrics")
        assert r.status == 200, r
        return r.body.decode()

    text = metrics()
    assert value(text, r'safehouse_sandboxes\{state="paused"\}') == 1, text[:1500]
    assert wait_for(lambda: (value(metrics(), rf'safehouse_paused_disk_bytes\{{id="{sid}",tenant="admin"\}}') or 0)
                    >= 6_000_000, 40), metrics()[-1500:]
    assert wait_for(lambda: (value(metrics(), r'safehouse_volume_disk_bytes\{tenant="admin",name="metered"\}') or 0)
                    >= 3_000_000, 40), metrics()[-1500:]
    api.kill(sid)
    assert value(metrics(), r'safehouse_sandboxes\{state="paused"\}') == 0


def test_a_restart_removes_the_pools_orphans_and_keeps_what_records_name(own_daemon):
    """Subvolumes no record names (a crash between making one and recording it) go when the
    daemon starts; a paused sandbox's layer, a recorded snapshot and volume, and the CLI's
    own `run --storage disk` layers (the control) stay."""
    import subprocess
    if not shutil.which("btrfs"):
        skip_or_fail("btrfs is missing (scripts/test installs btrfs-progs)")
    d = own_daemon
    d.start()
    api = d.admin()
    sid = api.create(**DISK)["id"]
    snap = api.post(f"/v1/sandboxes/{sid}/snapshots").json()["id"]
    assert api.post(f"/v1/sandboxes/{sid}/pause").status == 200
    assert api.post("/v1/volumes", {"name": "kept-vol", "size": "16MiB"}).status == 201
    d.crash()
    pool = os.path.join(d.data_dir, "storage", "pool")
    orphans = [os.path.join(pool, "layers", "sb_" + "a" * 26), os.path.join(pool, "snapshots", "snap_" + "b" * 26),
               os.path.join(pool, "volumes", "0123456789abcdef01234567")]
    control = os.path.join(pool, "layers", "run-999999-1")
    for p in orphans + [control]:
        subprocess.run(["btrfs", "-q", "subvolume", "create", p], check=True, capture_output=True)
    kept = [layer_dir(d, sid), os.path.join(pool, "snapshots", snap)]
    kept_vols = os.listdir(os.path.join(pool, "volumes"))
    d.start()
    for p in orphans:
        assert not os.path.exists(p), f"{p} outlived the restart"
    for p in kept + [control]:
        assert os.path.isdir(p), f"{p} was removed"
    assert sorted(os.listdir(os.path.join(pool, "volumes"))) == sorted(v for v in kept_vols if "0123456789abcdef" not in v)
    assert api.post(f"/v1/sandboxes/{sid}/resume").status == 200
    subprocess.run(["btrfs", "-q", "subvolume", "delete", control], capture_output=True)


def test_a_full_pool_is_refused_by_name_not_an_internal_error(monkeypatch):
    """When the storage pool is full, a sandbox on a disk layer (create or resume) is refused
    with 503 `capacity` naming the pool and the fix — it failed deep in its setup with a 500
    "internal error" before. Outside control: the same create works while there is room."""
    from .support import Daemon, binary_serves
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    monkeypatch.setenv("SAFEHOUSE_STORAGE_SIZE", "256MiB")
    d = Daemon()
    try:
        d.start()
        api = d.admin()
        big = {"version": 1, "limits": {"disk": "1GiB"}}
        sb = api.create(policy=big, **DISK)  # the control: room for it
        assert api.post(f"/v1/sandboxes/{sb['id']}/pause").status == 200
        filler = api.create(policy=big, **DISK)
        out = api.exec(filler["id"], ["sh", "-c", "dd if=/dev/urandom of=/tmp/fill bs=1M count=400 2>&1; sync; "
                                                  "echo rc=$?"])
        assert "No space left" in out["stdout"], out
        r = api.post("/v1/sandboxes", {"policy": big, **DISK})
        assert r.status == 503 and r.error_code == "capacity", r
        assert "storage pool is full" in r.json()["error"]["message"], r.json()
        r = api.post(f"/v1/sandboxes/{sb['id']}/resume")
        assert r.status == 503 and "storage pool is full" in r.json()["error"]["message"], r.json()
        # A sandbox in RAM does not need the pool.
        assert api.post("/v1/sandboxes", {}).status == 201
    finally:
        d.cleanup()
