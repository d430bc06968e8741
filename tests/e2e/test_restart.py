"""Crash survival: `kill -9` the daemon while a sandbox runs a background `sleep 30`; a new
daemon on the same data dir lists it running, can exec in it and can kill it."""
import glob
import os
import sqlite3
import time

from .support import pid_alive, require_root, wait_for


def test_sandboxes_survive_a_daemon_crash(own_daemon):
    d = own_daemon
    d.start()
    api = d.admin()
    sb = api.create(timeout_s=120, metadata={"test": "crash"})
    sid = sb["id"]
    pid = api.start(sid, ["sleep", "30"])
    assert api.exec(sid, ["sh", "-c", "echo before > /workspace/state"])["exit_code"] == 0
    agent_pid = api.info(sid).get("pid")

    d.crash()
    if agent_pid:
        assert pid_alive(agent_pid), "the sandbox died with the daemon"

    d.start()  # same data dir, same port, same admin key
    info = api.info(sid)
    assert info["state"] == "running", info
    listed = api.get("/v1/sandboxes", query={"metadata.test": "crash"}).json()["sandboxes"]
    assert [s["id"] for s in listed] == [sid] and listed[0]["state"] == "running", listed
    res = api.exec(sid, ["cat", "/workspace/state"])
    assert (res["exit_code"], res["stdout"]) == (0, "before\n"), res
    res = api.exec(sid, ["sh", "-c", "pgrep -x sleep >/dev/null && echo sleeping"])
    assert res["stdout"] == "sleeping\n", f"the background sleep did not survive: {res}"
    procs = api.processes(sid)
    assert any(p["pid"] == pid for p in procs) or procs == [], procs

    assert api.kill(sid).status == 204
    assert api.info(sid)["state"] == "killed"
    if agent_pid:
        assert wait_for(lambda: not pid_alive(agent_pid), 5), f"agent {agent_pid} survived the kill"
    assert api.kill(sid).status == 204


def test_restart_keeps_keys_and_expired_stays_expired(own_daemon):
    d = own_daemon
    d.start()
    api = d.admin()
    r = api.post("/v1/keys", {"tenant": "persist"})
    assert r.status == 201, r
    user = api.with_key(r.json()["key"])
    sb = user.create(timeout_s=2)
    d.stop()
    time.sleep(2.5)  # it expires while no daemon runs
    d.start()
    assert user.get("/v1/sandboxes").status == 200, "keys must survive a restart"
    state = wait_for(lambda: user.info(sb["id"])["state"] != "running" and user.info(sb["id"])["state"], 8)
    assert state in ("expired", "killed", "failed"), user.info(sb["id"])


def _cgroup_dirs(sid):
    return glob.glob(f"/sys/fs/cgroup/*/safehouse/{sid}") + glob.glob(f"/sys/fs/cgroup/safehouse/{sid}")


def test_a_restart_finishes_the_cleanup_kill_all_left(own_daemon):
    """Kill-all removes cgroup and socket directories after its reply; a daemon that dies
    before that finishes the job when it starts again. Two cases, made deterministic after
    a crash: (a) a killed sandbox whose directories are still there (re-created empty, as
    the cleanup would have found them), (b) a sandbox recorded killed while its processes
    still run (a crash between the record and the kill): both are gone once the new daemon
    answers, while a sandbox that was running before the crash is re-attached untouched."""
    require_root("cgroup directories are the daemon's only as root")
    d = own_daemon
    d.start()
    api = d.admin()
    killed = api.create(timeout_s=120)
    assert api.post("/v1/kill-all").json()["killed"] == 1
    recorded_killed = api.create(timeout_s=120)
    api.start(recorded_killed["id"], ["sleep", "300"])
    survivor = api.create(timeout_s=120)
    d.crash()

    # (a) The leftovers of the killed sandbox, as a cleanup cut short would leave them.
    sock_dir = os.path.join(d.data_dir, "sandboxes", killed["id"])
    wait_for(lambda: not _cgroup_dirs(killed["id"]) and not os.path.exists(sock_dir), 10)
    # The hierarchies a sandbox's cgroup spans (v1), or the unified one (v2).
    v1 = {os.path.realpath(f"/sys/fs/cgroup/{c}/safehouse") for c in ("memory", "pids", "cpu", "cpuacct", "freezer")}
    hierarchies = [h for h in v1 if os.path.isdir(h)] or glob.glob("/sys/fs/cgroup/safehouse")
    for hierarchy in hierarchies:
        os.mkdir(os.path.join(hierarchy, killed["id"]))
    os.makedirs(sock_dir)
    open(os.path.join(sock_dir, "agent.sock"), "w").close()
    # (b) Recorded killed while it still runs.
    db = sqlite3.connect(os.path.join(d.data_dir, "safehouse.db"))
    with db:
        db.execute("UPDATE sandboxes SET state = 'killed', error = 'stopped by kill-all' WHERE id = ?",
                   (recorded_killed["id"],))
    db.close()
    assert pid_alive(recorded_killed["pid"]) and _cgroup_dirs(recorded_killed["id"])

    d.start()
    for sb in (killed, recorded_killed):
        assert _cgroup_dirs(sb["id"]) == [], sb["id"]
        assert not os.path.exists(os.path.join(d.data_dir, "sandboxes", sb["id"])), sb["id"]
        assert api.info(sb["id"])["state"] == "killed"
    assert not pid_alive(recorded_killed["pid"]), "a process under a killed record survived the restart"
    assert api.info(survivor["id"])["state"] == "running"
    assert _cgroup_dirs(survivor["id"]) and os.path.exists(os.path.join(d.data_dir, "sandboxes", survivor["id"]))
    assert api.exec(survivor["id"], ["true"])["exit_code"] == 0
    assert api.kill(survivor["id"]).status == 204
