"""Sandbox lifecycle over real HTTP: create, info, list with filters, timeout, kill
(idempotent) and automatic expiry with nothing left behind on the host."""
import os
import time
import uuid

from .support import ID_RE, IS_ROOT, RFC3339_RE, cgroup_dirs_named, parse_time, pid_alive, wait_for


def test_healthz_and_openapi_need_no_key(api):
    r = api.get("/healthz", key=None)
    assert r.status == 200 and r.json() == {"status": "ok"}, r
    r = api.get("/v1/openapi.json", key=None)
    assert r.status == 200, r
    doc = r.json()
    assert "openapi" in doc and "/v1/sandboxes" in doc.get("paths", {}), list(doc)[:10]


def test_create_and_info(api):
    tag = uuid.uuid4().hex
    t0 = time.time()
    sb = api.create(metadata={"run": tag, "owner": "e2e"}, timeout_s=60, env={"GREETING": "hi"})
    try:
        assert ID_RE.match(sb["id"]), sb
        assert sb["state"] == "running", sb
        assert RFC3339_RE.match(sb["created_at"]) and RFC3339_RE.match(sb["expires_at"]), sb
        created, expires = parse_time(sb["created_at"]), parse_time(sb["expires_at"])
        assert abs(created - t0) < 30, sb
        assert 55 <= expires - created <= 65, sb
        assert sb["metadata"] == {"run": tag, "owner": "e2e"}, sb
        info = api.info(sb["id"])
        assert info["id"] == sb["id"] and info["state"] == "running", info
        assert info["metadata"] == sb["metadata"], info
        # The sandbox-wide env reaches commands.
        res = api.exec(sb["id"], ["printenv", "GREETING"])
        assert (res["exit_code"], res["stdout"]) == (0, "hi\n"), res
    finally:
        api.kill(sb["id"])


def test_unknown_ids_are_404(api):
    for sid in ("sb_" + "a" * 26, "nope", "sb_UPPER"):
        r = api.get(f"/v1/sandboxes/{sid}")
        assert r.status == 404 and r.error_code == "not_found", (sid, r)
    r = api.delete("/v1/sandboxes/sb_" + "b" * 26)
    assert r.status == 404, r


def test_list_filters_by_metadata_and_state(api):
    run = uuid.uuid4().hex
    a = api.create(metadata={"run": run, "tag": "a"})
    b = api.create(metadata={"run": run, "tag": "b"})
    try:
        r = api.get("/v1/sandboxes", query={"metadata.run": run})
        assert r.status == 200, r
        assert sorted(s["id"] for s in r.json()["sandboxes"]) == sorted([a["id"], b["id"]]), r
        r = api.get("/v1/sandboxes", query={"metadata.run": run, "metadata.tag": "a"})
        assert [s["id"] for s in r.json()["sandboxes"]] == [a["id"]], r
        r = api.get("/v1/sandboxes", query={"metadata.run": run, "metadata.tag": "zzz"})
        assert r.json()["sandboxes"] == [], r
        assert api.kill(b["id"]).status == 204
        r = api.get("/v1/sandboxes", query={"metadata.run": run, "state": "running"})
        assert [s["id"] for s in r.json()["sandboxes"]] == [a["id"]], r
        r = api.get("/v1/sandboxes", query={"metadata.run": run, "state": "killed"})
        assert [s["id"] for s in r.json()["sandboxes"]] == [b["id"]], r
        r = api.get("/v1/sandboxes", query={"state": "sleeping"})
        assert r.status == 400, r
    finally:
        api.kill(a["id"])
        api.kill(b["id"])


def test_timeout_sets_a_new_deadline(api, sandbox):
    t0 = time.time()
    r = api.post(f"/v1/sandboxes/{sandbox['id']}/timeout", {"timeout_s": 600})
    assert r.status == 200, r
    sb = r.json()
    assert sb["id"] == sandbox["id"], sb
    assert abs(parse_time(sb["expires_at"]) - (t0 + 600)) < 10, (t0, sb)
    assert api.info(sandbox["id"])["expires_at"] == sb["expires_at"]
    # Shorter works too: it is "from now", not "added".
    r = api.post(f"/v1/sandboxes/{sandbox['id']}/timeout", {"timeout_s": 30})
    assert r.status == 200 and parse_time(r.json()["expires_at"]) < t0 + 60, r
    for bad in ({"timeout_s": -1}, {"timeout_s": 86401}, {"timeout_s": "10"}, {}):
        r = api.post(f"/v1/sandboxes/{sandbox['id']}/timeout", bad)
        assert r.status == 400, (bad, r)


def test_create_validates(api):
    for bad in ({"timeout_s": 86401}, {"timeout_s": 0}, {"preset": "no-such-preset"},
                {"metadata": {"k": 1}}, {"metadata": {f"k{i}": "v" for i in range(65)}},
                {"policy": {"version": 1, "limits": {"memroy": "1GiB"}}}):
        r = api.post("/v1/sandboxes", bad)
        if r.status == 201:
            api.kill(r.json()["id"])
        assert r.status == 400, (bad, r)
        assert r.json()["error"]["message"], r


def test_create_with_policy_and_preset(api):
    sb = api.create(policy={"version": 1, "limits": {"pids": 64, "memory": "256MiB"}}, timeout_s=60)
    api.kill(sb["id"])
    sb = api.create(preset="offline", timeout_s=60)
    assert sb.get("preset") in (None, "offline"), sb
    api.kill(sb["id"])


def test_kill_is_idempotent_and_final(api):
    sb = api.create(timeout_s=60)
    sid = sb["id"]
    agent_pid = sb.get("pid")
    assert api.kill(sid).status == 204
    assert api.kill(sid).status == 204, "a second DELETE of a killed sandbox is 204 (idempotent)"
    r = api.get(f"/v1/sandboxes/{sid}")
    assert r.status == 200 and r.json()["state"] == "killed", r
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]})
    assert 400 <= r.status < 500, f"exec in a killed sandbox: {r}"
    if agent_pid and IS_ROOT:
        assert wait_for(lambda: not pid_alive(agent_pid), 5), f"agent pid {agent_pid} still alive after kill"


def test_auto_expiry_leaves_nothing(api):
    sb = api.create(timeout_s=2)
    sid = sb["id"]
    info = api.info(sid)
    cg = info.get("cgroup")
    cg_name = cg.rstrip("/").rsplit("/", 1)[-1] if isinstance(cg, str) and cg else None
    agent_pid = info.get("pid")
    if IS_ROOT:
        assert cgroup_dirs_named(sid, cg_name), f"no cgroup found for a running sandbox ({info})"
    final = wait_for(lambda: api.info(sid)["state"] != "running" and api.info(sid), 12, 0.25)
    assert final and final["state"] == "expired", api.info(sid)
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]})
    assert r.status != 200, r
    assert wait_for(lambda: not cgroup_dirs_named(sid, cg_name), 5), cgroup_dirs_named(sid, cg_name)
    if agent_pid:
        assert wait_for(lambda: not pid_alive(agent_pid), 5), f"agent {agent_pid} of an expired sandbox lives"
    # Deleting an expired sandbox is still fine.
    assert api.kill(sid).status == 204


def test_tool_allowlist_in_a_daemon_sandbox(api):
    """tools.allow holds in daemon sandboxes (the agent is forked, not exec'd, so it runs);
    a pattern that matches no file is refused. (tools.limits: test_tool_limits_daemon.py.)"""
    allow = {"tools": {"allow": ["/usr/bin/python3*", "/bin/sh"]}}
    sb = api.create(policy=allow)
    try:
        out = api.exec(sb["id"], ["python3", "-c", "print(42)"])
        assert (out["exit_code"], out["stdout"]) == (0, "42\n"), out
        r = api.post(f"/v1/sandboxes/{sb['id']}/exec", {"cmd": ["/bin/ls"]})
        assert r.status == 400 and "Permission denied" in r.json()["error"]["message"], r
        out = api.exec(sb["id"], "ls /; echo rc=$?")
        assert out["stdout"] == "rc=126\n" and "Permission denied" in out["stderr"], out
    finally:
        api.kill(sb["id"])
    r = api.post("/v1/sandboxes", {"policy": {"tools": {"allow": ["/usr/bin/no-such-tool"]}}})
    assert r.status == 400 and "tools.allow: /usr/bin/no-such-tool" in r.json()["error"]["message"], r
    # Two patterns may name one file (merged /usr: /bin/sh and /usr/bin/sh): accepted.
    sb = api.create(policy={"tools": {"allow": ["/bin/sh", "/usr/bin/sh"]}})
    try:
        out = api.exec(sb["id"], ["/bin/sh", "-c", "echo ok"])
        assert (out["exit_code"], out["stdout"]) == (0, "ok\n"), out
    finally:
        api.kill(sb["id"])


def test_creates_stop_short_of_the_open_file_limit_and_the_running_keep_working():
    """A daemon started with a small open-file limit (600) admits sandboxes only while it has
    descriptors for one more and for the ones running: then 503 `capacity` naming the limit
    and the fix. Every sandbox already running still answers exec, and a kill frees room
    for a new one. (Before: creates went on until the limit, then everything failed.)"""
    from .support import Daemon, binary_serves, skip_or_fail

    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    d = Daemon(nofile=600)
    try:
        d.start()
        api = d.admin()
        made = []
        # The sandboxes' own open-file limit must fit under the daemon's hard limit.
        body = {"timeout_s": 120, "policy": {"version": 1, "limits": {"nofile": 64}}}
        for _ in range(200):
            r = api.post("/v1/sandboxes", body)
            if r.status != 201:
                break
            made.append(r.json()["id"])
            d.created.append((d.admin_key, made[-1]))
        assert r.status == 503 and r.error_code == "capacity", r
        message = r.json()["error"]["message"]
        assert "of its 600 open files" in message and "LimitNOFILE" in message, message
        assert 3 <= len(made) < 200, len(made)
        for sid in made:
            assert api.exec(sid, ["/bin/echo", "alive"])["stdout"] == "alive\n", sid
        assert api.kill(made.pop()).status == 204
        # A kill frees its descriptors: a create fits again.
        wait_for(lambda: api.post("/v1/sandboxes", body).status == 201, timeout=20)
    finally:
        d.cleanup()


def test_an_ended_sandbox_gives_back_its_descriptors_at_once(daemon, api):
    """A killed sandbox, and one paused to disk, give back the daemon's descriptors they
    held at once, not when their deadline would have come (they held three each — its
    agent's pidfd, socket and root directory — until then: with long timeouts a daemon
    that creates and kills sandboxes ran out of descriptors)."""
    def fds():
        return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))

    body = {"timeout_s": 3600}
    warm = api.create(**body)["id"]
    api.kill(warm)
    time.sleep(0.5)
    base = fds()
    made = [api.create(**body)["id"] for _ in range(10)]
    for sid in made:
        assert api.exec(sid, ["/bin/true"])["exit_code"] == 0
    # Outside control: while they run, the daemon holds their descriptors.
    assert fds() >= base + 30, (fds(), base)
    for sid in made:
        assert api.kill(sid).status == 204
    assert wait_for(lambda: fds() <= base + 2, timeout=10), (fds(), base)
    if IS_ROOT:
        disk = [api.create(storage="disk", **body)["id"] for _ in range(5)]
        assert fds() >= base + 15, (fds(), base)
        for sid in disk:
            assert api.post(f"/v1/sandboxes/{sid}/pause").status == 200
        assert wait_for(lambda: fds() <= base + 2, timeout=10), (fds(), base)
        for sid in disk:
            api.kill(sid)
