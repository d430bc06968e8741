"""The daemon serves image roots: `template` on create (the native API, the Python SDK,
MCP and the E2B front), `filesystem.rootfs = "image:REF"` in a policy, `GET/DELETE
/v1/templates`, pause/resume on an image, and a restart that re-leases the image."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from e2e.support import Daemon, binary_serves, skip_or_fail, wait_for

from .conftest import Cli, rm_rf
from .oci import busybox_rootfs


@pytest.fixture(scope="module")
def served():
    """A daemon whose data dir holds `bb` (busybox, imported from a root filesystem)."""
    ok, why = binary_serves()
    if not ok:
        skip_or_fail(why)
    if not shutil.which("busybox"):
        skip_or_fail("busybox-static is not installed (scripts/test installs it)")
    work = Path(tempfile.mkdtemp(prefix="safehouse-dimg-"))
    os.chmod(work, 0o755)
    data = work / "data"
    data.mkdir()
    cli = Cli(data)
    cli("image", "import", str(busybox_rootfs(work / "root")), "--tag", "bb", check=0)
    d = Daemon(data_dir=str(data))
    d.start()
    d.cli = cli
    yield d
    d.cleanup()
    rm_rf(work)


def layer_dirs(d):
    root = Path(d.data_dir) / "images" / "layers"
    return [p / "root" for p in root.iterdir()]


def tenant(d, name):
    r = d.admin().post("/v1/keys", {"tenant": name})
    assert r.status == 201, r
    return d.admin().with_key(r.json()["key"]), r.json()


def test_a_template_is_the_root_and_its_layers_stay_unwritten(served):
    api = served.admin()
    sb = api.create(template="bb", timeout_s=120)
    sid = sb["id"]
    # The outside control: the host has the file the image lacks.
    assert os.path.exists("/usr/bin/python3")
    r = api.exec(sid, ["/bin/sh", "-c", "cat /etc/os-release; test -e /usr/bin/python3 || echo no-python; id -u"])
    assert r["exit_code"] == 0, r
    assert r["stdout"] == "ID=busybox\nNAME=busybox-test\nno-python\n0\n", r
    # Writes land in the sandbox's own layer, never in the shared one.
    r = api.exec(sid, ["/bin/sh", "-c", "echo mine > /etc/os-release && echo new > /bin/added && cat /etc/os-release"])
    assert (r["exit_code"], r["stdout"]) == (0, "mine\n"), r
    for layer in layer_dirs(served):
        assert (layer / "etc" / "os-release").read_text() == "ID=busybox\nNAME=busybox-test\n"
        assert not (layer / "bin" / "added").exists()
    # A second sandbox on the same image sees the image, not the first one's writes.
    other = api.create(template="bb", timeout_s=60)["id"]
    assert api.exec(other, ["cat", "/etc/os-release"])["stdout"] == "ID=busybox\nNAME=busybox-test\n"
    # Files through the API belong to the image's user (root of the image here).
    assert api.put_file(sid, "/root/up.txt", b"uploaded").status in (200, 201)
    r = api.exec(sid, ["/bin/sh", "-c", "stat -c '%u %g' /root/up.txt; cat /root/up.txt"])
    assert r["stdout"] == "0 0\nuploaded", r
    # The recorded policy names the image by digest: a resume finds the same layers.
    pol = api.get(f"/v1/sandboxes/{sid}/policy").json()["policy"]
    digest = json.loads(served.cli("image", "inspect", "bb", check=0).out)["digest"]
    assert pol["filesystem"]["rootfs"] == f"image:{digest}", pol
    assert api.kill(sid).status == 204 and api.kill(other).status == 204


def test_a_policy_names_an_image_and_bad_names_say_what_to_do(served):
    api = served.admin()
    sb = api.create(policy={"version": 1, "filesystem": {"rootfs": "image:bb"}}, timeout_s=60)
    assert api.exec(sb["id"], ["cat", "/etc/os-release"])["stdout"].startswith("ID=busybox")
    api.kill(sb["id"])
    r = api.post("/v1/sandboxes", {"template": "no-such-template"})
    assert r.status == 400 and "template build" in r.json()["error"]["message"], r
    r = api.post("/v1/sandboxes", {"template": "bb", "policy": {"version": 1, "filesystem": {"rootfs": "image:bb"}}})
    assert r.status == 400 and "not both" in r.json()["error"]["message"], r
    # A tenant may start from the store's templates (no host path is named) ...
    user, _ = tenant(served, "imgs")
    sb = user.create(template="bb", timeout_s=60)
    assert user.exec(sb["id"], ["cat", "/etc/os-release"])["stdout"].startswith("ID=busybox")
    # ... but never a host directory as its root (the operator's call).
    r = user.post("/v1/sandboxes", {"policy": {"version": 1, "filesystem": {"rootfs": "/usr"}}})
    assert r.status == 422 and r.json()["error"]["code"] == "policy_refused", r
    user.kill(sb["id"])


def test_templates_are_listed_and_removed_only_when_unused(served):
    api = served.admin()
    served.cli("image", "import", str(Path(served.data_dir).parent / "root"), "--tag", "bb2", check=0)
    listed = {t["name"]: t for t in api.get("/v1/templates").json()["templates"]}
    assert listed["bb2"]["kind"] == "image" and listed["bb2"]["layers"] == 1 and listed["bb2"]["sandboxes"] == 0
    sid = api.create(template="bb2", timeout_s=60)["id"]
    listed = {t["name"]: t for t in api.get("/v1/templates").json()["templates"]}
    assert listed["bb2"]["sandboxes"] == 1
    user, _ = tenant(served, "rm-templates")
    r = user.delete("/v1/templates/bb2")
    assert r.status == 403, r
    r = api.delete("/v1/templates/bb2")
    assert r.status == 409 and "running sandbox" in r.json()["error"]["message"], r
    api.kill(sid)
    r = api.delete("/v1/templates/bb2")
    assert r.status == 200 and r.json()["name"] == "bb2", r
    assert api.delete("/v1/templates/bb2").status == 404
    assert api.post("/v1/sandboxes", {"template": "bb2"}).status == 400


def test_pause_resume_and_fork_keep_the_image_and_the_files(served):
    api = served.admin()
    sid = api.create(template="bb", storage="disk", timeout_s=120)["id"]
    assert api.exec(sid, ["/bin/sh", "-c", "echo kept > /root/state"])["exit_code"] == 0
    assert api.post(f"/v1/sandboxes/{sid}/pause").status == 200
    assert api.post(f"/v1/sandboxes/{sid}/resume").status == 200
    r = api.exec(sid, ["/bin/sh", "-c", "cat /root/state /etc/os-release"])
    assert r["stdout"] == "kept\nID=busybox\nNAME=busybox-test\n", r
    forks = api.post(f"/v1/sandboxes/{sid}/fork", {"count": 1}).json()["sandboxes"]
    r = api.exec(forks[0]["id"], ["cat", "/root/state"])
    assert r["stdout"] == "kept\n", r
    api.kill(forks[0]["id"])
    api.kill(sid)


def test_a_restarted_daemon_leases_the_image_again(served):
    """After a crash the new daemon re-attaches the sandbox and leases its image again:
    garbage collection keeps the layers while the sandbox lives (the outside control: gc
    removes them once nothing uses them)."""
    api = served.admin()
    served.cli("image", "import", str(Path(served.data_dir).parent / "root"), "--tag", "gcme", check=0)
    # A layer of its own, so gc has something to take: one more file than bb.
    extra = Path(served.data_dir).parent / "root2"
    if not extra.exists():
        shutil.copytree(Path(served.data_dir).parent / "root", extra, symlinks=True)
        (extra / "etc" / "marker").write_text("gcme\n")
    served.cli("image", "import", str(extra), "--tag", "gcme", check=0)
    sid = api.create(template="gcme", timeout_s=120)["id"]
    served.crash()
    served.start()
    assert api.info(sid)["state"] == "running"
    # The name goes; the layer stays while the sandbox runs on it.
    assert api.delete("/v1/templates/gcme").status == 409
    before = {p.parent.name for p in layer_dirs(served)}
    served.cli("image", "gc", check=0)
    assert {p.parent.name for p in layer_dirs(served)} == before, "gc took a layer a sandbox runs on"
    assert api.exec(sid, ["cat", "/etc/marker"])["stdout"] == "gcme\n"
    api.kill(sid)
    assert api.delete("/v1/templates/gcme").status == 200
    # The lease ends with the sandbox's teardown, which finishes just after the kill answers.
    assert wait_for(lambda: served.cli("image", "gc", check=0) and len(layer_dirs(served)) == len(before) - 1, 10), \
        served.cli("image", "gc", "--json").out


def test_sdk_mcp_and_e2b_create_from_a_template(served):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python" / "src"))
    from safehouse import Sandbox

    api = served.admin()
    user, created = tenant(served, "clients")
    # The Python SDK.
    names = [t["name"] for t in Sandbox.list_templates(api_key=created["key"], url=served.url)]
    assert "bb" in names, names
    sbx = Sandbox.create(template="bb", api_key=created["key"], url=served.url)
    try:
        assert sbx.commands.run("cat /etc/os-release").stdout.startswith("ID=busybox")
    finally:
        sbx.kill()
    # MCP's sandbox_create, with the real client.
    from e2e.test_mcp import http_session, ok, run

    async def over_mcp():
        async with http_session(served, created["key"]) as s:
            info = ok(await s.call_tool("sandbox_create", {"template": "bb"}))
            out = ok(await s.call_tool("run_command", {"sandbox_id": info["id"], "command": "cat /etc/os-release"}))
            return info["id"], out
    sid, out = run(over_mcp())
    assert "ID=busybox" in json.dumps(out), out
    user.kill(sid)
    # The E2B front: templateID names the store's template.
    r = user.post("/sandboxes", {"templateID": "bb"}, headers={"X-API-Key": created["e2b_key"]}, key=None)
    assert r.status == 201 and r.json()["templateID"] == "bb", r
    sid = r.json()["sandboxID"]
    assert user.exec(sid, ["cat", "/etc/os-release"])["stdout"].startswith("ID=busybox")
    user.kill(sid)


def context_tar(files):
    """A build context as `docker build` sends one: a tar of the directory."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_templates_build_through_the_api(served):
    """`POST /v1/templates` builds the context's Dockerfile as `template build` does: RUN
    in a sandbox, COPY from the context; waited for, or followed by its events."""
    from e2e.test_events import read_sse

    api = served.admin()
    dockerfile = b"FROM bb\nRUN echo built-by-run > /built\nCOPY hello.txt /srv/hello.txt\nENV GREETING=hi\n"
    ctx = context_tar({"Dockerfile": dockerfile, "hello.txt": b"from the context\n"})
    r = api.post("/v1/templates", ctx, query={"tag": "api-built", "wait": "1"},
                 headers={"Content-Type": "application/x-tar"}, timeout=600)
    assert r.status == 201, r
    assert r.json()["template"]["name"] == "api-built" and r.json()["template"]["kind"] == "template", r
    sid = api.create(template="api-built", timeout_s=60)["id"]
    res = api.exec(sid, ["/bin/sh", "-c", "cat /built /srv/hello.txt; echo $GREETING"])
    assert res["stdout"] == "built-by-run\nfrom the context\nhi\n", res
    api.kill(sid)

    # Not waited for: 202, then the build's events on the admin's stream.
    r = api.post("/v1/templates", ctx, query={"tag": "api-built-2"}, timeout=60)
    assert r.status == 202, r
    build_id = r.json()["build_id"]
    assert build_id.startswith("tb_")
    status, events = read_sse(api, "/v1/events", timeout=300,
                              on_event=lambda e: e.get("event", "").startswith("template.build.f")
                              and build_id in e.get("raw", ""))
    kinds = [e["event"] for e in events if build_id in e["raw"]]
    assert kinds[0] == "template.build.started" and kinds[-1] == "template.build.finished", kinds
    assert "template.build.log" in kinds, kinds
    assert "api-built-2" in {t["name"] for t in api.get("/v1/templates").json()["templates"]}

    # A failed step names its Dockerfile line; nothing is stored under the name.
    bad = context_tar({"Dockerfile": b"FROM bb\nRUN echo about to fail && exit 3\n"})
    r = api.post("/v1/templates", bad, query={"tag": "api-bad", "wait": "1"}, timeout=300)
    assert r.status == 400 and "line 2" in r.json()["error"]["message"], r
    assert "api-bad" not in {t["name"] for t in api.get("/v1/templates").json()["templates"]}

    # The Python SDK: a directory in, the template out; a failed step raises with its line.
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python" / "src"))
    from safehouse import Admin, SafehouseError
    d = Path(tempfile.mkdtemp(prefix="safehouse-ctx-"))
    (d / "Dockerfile").write_text("FROM bb\nARG WHO=nobody\nRUN echo hello $WHO > /greeting\n")
    with Admin(api_key=served.admin_key, url=served.url) as admin:
        t = admin.build_template(d, "sdk-built", build_args={"WHO": "sdk"})
        assert t["name"] == "sdk-built" and "sdk-built" in {x["name"] for x in admin.list_templates()}
        sid = api.create(template="sdk-built", timeout_s=60)["id"]
        assert api.exec(sid, ["cat", "/greeting"])["stdout"] == "hello sdk\n"
        api.kill(sid)
        assert admin.delete_template("sdk-built")["name"] == "sdk-built"
        (d / "Dockerfile").write_text("FROM bb\nRUN exit 7\n")
        with pytest.raises(SafehouseError) as e:
            admin.build_template(d, "sdk-bad")
        assert "line 2" in str(e.value), e.value
    rm_rf(d)


def test_bad_build_requests_are_refused_and_leave_nothing(served):
    import io
    import tarfile
    api = served.admin()
    user, _ = tenant(served, "builders")
    ctx = context_tar({"Dockerfile": b"FROM bb\n"})
    assert user.post("/v1/templates", ctx, query={"tag": "t"}).status == 403
    r = api.post("/v1/templates", ctx)
    assert r.status == 400 and "`tag`" in r.json()["error"]["message"], r
    r = api.post("/v1/templates", ctx, query={"tag": "t", "dockerfile": "../Dockerfile"})
    assert r.status == 400 and "relative path" in r.json()["error"]["message"], r
    r = api.post("/v1/templates", b"", query={"tag": "t"})
    assert r.status == 400 and "empty" in r.json()["error"]["message"], r
    r = api.post("/v1/templates", context_tar({"Other": b"x"}), query={"tag": "t", "wait": "1"})
    assert r.status == 400 and "no file" in r.json()["error"]["message"], r
    # A context that climbs out of its directory: refused by the unpacker, nothing outside.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("../../escaped-by-context")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    r = api.post("/v1/templates", buf.getvalue(), query={"tag": "t", "wait": "1"})
    tmp = Path(served.data_dir) / "images" / "tmp"
    assert r.status == 400, r
    assert not (tmp.parent / "escaped-by-context").exists() and not (tmp.parent.parent / "escaped-by-context").exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith("tb_")], list(tmp.iterdir())


def test_a_rootless_daemon_serves_templates_too():
    """A daemon run by an unprivileged user serves its own store's templates: the image's
    files, written in the sandbox's own layer, its processes the daemon's user on the host."""
    import pwd
    from e2e.support import IS_ROOT, require_root, running_daemon

    if not IS_ROOT:
        require_root("to start a daemon as another user")
    if not shutil.which("busybox"):
        skip_or_fail("busybox-static is not installed (scripts/test installs it)")
    nobody = pwd.getpwnam("nobody")
    work = Path(tempfile.mkdtemp(prefix="safehouse-dimg-rl-"))
    os.chmod(work, 0o755)
    data = work / "data"
    data.mkdir()
    root = busybox_rootfs(work / "root")
    subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(work)], check=True)
    cli = Cli(data, prefix=["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                            "--inh-caps=-all", "--"])
    cli("image", "import", str(root), "--tag", "bb", check=0, env={"HOME": str(work)})
    d = running_daemon(data_dir=str(data), run_as="nobody")
    try:
        api = d.admin()
        sid = api.create(template="bb", timeout_s=60)["id"]
        r = api.exec(sid, ["/bin/sh", "-c", "cat /etc/os-release; echo mine > /etc/x && cat /etc/x"])
        assert r["stdout"] == "ID=busybox\nNAME=busybox-test\nmine\n", r
        for layer in (data / "images" / "layers").iterdir():
            assert not (layer / "root" / "etc" / "x").exists(), "a sandbox wrote into a shared layer"
        with open(f"/proc/{api.info(sid)['pid']}/status") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        assert uid == nobody.pw_uid, uid
        api.kill(sid)
    finally:
        d.cleanup()
        rm_rf(work)
