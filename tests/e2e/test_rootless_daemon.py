"""`safehouse serve` run by an unprivileged user (rootless mode): sandboxes start in user
namespaces, commands and files work, their processes are the daemon's user on the host
(never root), and what needs privileges it lacks (cgroup limits, freeze on cgroup v1) is
refused with the reason instead of silently dropped. The session daemon (root) is the
contrast: it accepts the same requests."""
import os

import pytest

from .support import IS_ROOT, pid_alive, require_root, running_daemon, wait_for
from .test_events import read_sse

USER = "nobody"


def host_uids(pid):
    """(real, effective) uid of a host process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                real, eff = line.split()[1:3]
                return int(real), int(eff)
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture(scope="module")
def rootless():
    if not IS_ROOT:
        require_root("to start a daemon as another user")
    d = running_daemon(run_as=USER)
    yield d
    d.cleanup()


def created_paths(api, sid):
    status, events = read_sse(api, f"/v1/sandboxes/{sid}/events", {"follow": "false"})
    assert status == 200, events
    return [e["data"]["data"].get("path") for e in events if e["event"] == "fs.created"]


def cgroup_v1():
    return not os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def test_the_daemon_and_its_sandboxes_run_as_the_unprivileged_user(rootless):
    import pwd

    uid = pwd.getpwnam(USER).pw_uid
    assert host_uids(rootless.proc.pid) == (uid, uid)
    api = rootless.admin()
    sb = api.create(timeout_s=60)
    try:
        # Seen from the host, the sandbox's processes are the daemon's user, not root.
        assert host_uids(sb["pid"]) == (uid, uid)
        res = api.exec(sb["id"], ["sh", "-c", "id -u; echo hello > /tmp/f; cat /tmp/f"])
        assert res["exit_code"] == 0, res
        inside_uid, echoed = res["stdout"].split("\n")[:2]
        assert inside_uid.isdigit() and echoed == "hello", res
        # Files in and out, through the root the sandbox handed over (the agent is
        # non-dumpable: an unprivileged daemon cannot open /proc/<agent>/root).
        r = api.put_file(sb["id"], "/tmp/up.bin", b"\x00\x01rootless")
        assert r.status in (200, 201), r
        r = api.get_file(sb["id"], "/tmp/up.bin")
        assert (r.status, r.body) == (200, b"\x00\x01rootless"), r
        assert api.exec(sb["id"], ["cat", "/tmp/f"])["stdout"] == "hello\n"
        r = api.get(f"/v1/sandboxes/{sb['id']}/fs/list", query={"path": "/tmp"})
        assert r.status == 200 and {"f", "up.bin"} <= {e["name"] for e in r.json()["entries"]}, r
        # File events are watched beneath the same root.
        assert wait_for(lambda: "/tmp/f" in created_paths(api, sb["id"]), 10), created_paths(api, sb["id"])
        # The writable layer's use is measured the same way.
        r = api.get(f"/v1/sandboxes/{sb['id']}/metrics")
        assert r.status == 200 and r.json()["current"]["disk_bytes"] > 0, r
    finally:
        api.kill(sb["id"])
    assert wait_for(lambda: not pid_alive(sb["pid"]), 10), "the sandbox outlived its kill"


def test_limits_it_cannot_enforce_are_refused_with_the_reason(rootless, api):
    if not cgroup_v1():
        pytest.skip("on cgroup v2 a delegated subtree may let a rootless daemon enforce limits")
    policy = {"limits": {"memory": "64MiB"}}
    # Contrast: the root daemon enforces it.
    sb = api.create(policy=policy, timeout_s=30)
    api.kill(sb["id"])
    r = rootless.admin().post("/v1/sandboxes", {"policy": policy, "timeout_s": 30})
    assert r.status == 422, r
    err = r.json()["error"]
    assert err["code"] == "policy_refused" and "cgroup" in err["message"], err


def test_freeze_without_a_cgroup_is_refused_and_the_sandbox_keeps_running(rootless, api):
    if not cgroup_v1():
        pytest.skip("cgroup v2 freeze may be delegated to the user")
    sb = api.create(timeout_s=30)
    try:
        r = api.post(f"/v1/sandboxes/{sb['id']}/freeze")
        assert r.status == 200, r
    finally:
        api.kill(sb["id"])
    ra = rootless.admin()
    sb = ra.create(timeout_s=30)
    try:
        r = ra.post(f"/v1/sandboxes/{sb['id']}/freeze")
        assert r.status == 409, r
        assert "cgroup" in r.json()["error"]["message"], r
        assert ra.exec(sb["id"], ["echo", "alive"])["stdout"] == "alive\n"
    finally:
        ra.kill(sb["id"])


def test_the_port_proxy_is_refused_with_the_reason(rootless, api):
    """Making a socket in a sandbox's network namespace takes CAP_SYS_ADMIN (setns): a
    rootless daemon says so instead of failing obscurely. The root daemon proxies."""
    serve = ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"]
    for d, expect in ((api, 200), (rootless.admin(), 501)):
        sb = d.create(timeout_s=30)
        try:
            d.start(sb["id"], serve)
            path = f"/v1/sandboxes/{sb['id']}/ports/8000/"
            # Until the server listens the root daemon answers 502 port_unreachable.
            wait_for(lambda: d.get(path).status != 502, 10)
            r = d.get(path)
            assert r.status == expect, r
            if expect == 501:
                err = r.json()["error"]
                assert err["code"] == "unsupported" and "root daemon" in err["message"], err
        finally:
            d.kill(sb["id"])
