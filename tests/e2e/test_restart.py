"""Crash survival: `kill -9` the daemon while a sandbox runs a background `sleep 30`; a new
daemon on the same data dir lists it running, can exec in it and can kill it."""
import time

from .support import pid_alive, wait_for


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
