"""E2B compatibility, round two (issue 16): the SDK's wider surface, sync and async, on
every SDK release scripts/e2b-sdks runs (the oldest 2.x, one from the middle that checks the
key's format client-side, the newest). What safehouse cannot do yet must be refused by name
in E2B's `{code, message}` shape, never dropped."""
import base64
import datetime
import gzip
import hashlib
import json
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

try:
    import e2b
except ImportError:
    import os
    if os.environ.get("CI"):
        raise  # under CI a missing SDK is a broken setup, not a skip
    pytest.skip("the e2b SDK is not installed: pip install -r tests/requirements.txt", allow_module_level=True)

from e2b import AsyncSandbox, Sandbox  # noqa: E402
from e2b.exceptions import AuthenticationException, SandboxException, TimeoutException  # noqa: E402
from e2b.sandbox.commands.command_handle import CommandExitException  # noqa: E402

from .e2b_support import (  # noqa: E402,F401
    SDK_VERSION, SDK_VERSION_TEXT, arun, assert_e2b_error, control, e2b_env, e2b_key, envd_headers, new_key,
    pause, raw, sbx, sdk_at_least,
)
from .support import wait_for  # noqa: E402

HOUR = 3600


def ids(items):
    return [x.sandbox_id for x in items]


def make_sandboxes(n, run, **kw):
    """n sandboxes started a second apart (startedAt has whole seconds), oldest first."""
    out = []
    for i in range(n):
        if i:
            time.sleep(1.05)
        out.append(Sandbox.create(metadata={"run": run, "i": str(i)}, timeout=120, **kw))
    return out


def kill_all(sandboxes):
    for s in sandboxes:
        try:
            s.kill()
        except Exception:
            pass


def end_in(s):
    return s.get_info().end_at.timestamp() - time.time()


# ------------------------------------------------------------ 1. listing order and filters


def test_list_is_newest_first_across_pages(e2b_env):
    from e2b import SandboxQuery
    run = uuid.uuid4().hex
    made = make_sandboxes(3, run)
    try:
        newest_first = ids(reversed(made))
        assert ids(Sandbox.list(query=SandboxQuery(metadata={"run": run})).next_items()) == newest_first
        pager = Sandbox.list(query=SandboxQuery(metadata={"run": run}), limit=1)
        pages = []
        while pager.has_next:
            pages += ids(pager.next_items())
        assert pages == newest_first

        async def listed():
            from e2b import AsyncSandbox
            p = AsyncSandbox.list(query=SandboxQuery(metadata={"run": run}), limit=2)
            got = []
            while p.has_next:
                got += ids(await p.next_items())
            return got
        assert arun(listed()) == newest_first
    finally:
        kill_all(made)


def test_list_order_started_after_and_template(e2b_env, e2b_key, daemon):
    run = uuid.uuid4().hex
    made = make_sandboxes(3, run)
    time.sleep(1.05)  # its own second: the order across pages is then certain
    preset = Sandbox.create(template="offline", metadata={"run": run, "i": "p"}, timeout=120)
    try:
        a, b, c = made
        key = e2b_key["e2b_key"]
        meta = urllib.parse.quote(f"run={run}")
        # The routes themselves, on every SDK release.
        status, _, body = control(daemon, key, "GET", f"/v2/sandboxes?metadata={meta}&order=asc&template=base")
        assert status == 200 and [x["sandboxID"] for x in body] == ids(made), body
        started_b = b.get_info().started_at.astimezone(datetime.timezone.utc).isoformat()
        q = urllib.parse.urlencode({"metadata": f"run={run}", "startedAfter": started_b, "template": "base"})
        status, _, body = control(daemon, key, "GET", f"/v2/sandboxes?{q}")
        assert status == 200 and [x["sandboxID"] for x in body] == [c.sandbox_id, b.sandbox_id], body
        status, _, body = control(daemon, key, "GET", f"/v2/sandboxes?metadata={meta}&template=offline")
        assert status == 200 and [x["sandboxID"] for x in body] == [preset.sandbox_id], body
        status, _, body = control(daemon, key, "GET", f"/v2/sandboxes?metadata={meta}&order=sideways")
        assert_e2b_error(status, body, 400, mentions=["order"])
        status, _, body = control(daemon, key, "GET", "/v2/sandboxes?startedAfter=yesterday")
        assert_e2b_error(status, body, 400, mentions=["startedAfter"])
        # Ascending order holds across pages too.
        status, headers, body = control(daemon, key, "GET", f"/v2/sandboxes?metadata={meta}&order=asc&limit=2")
        assert [x["sandboxID"] for x in body] == [a.sandbox_id, b.sandbox_id], body
        token = urllib.parse.quote(headers["x-next-token"])
        status, _, body = control(daemon, key, "GET", f"/v2/sandboxes?metadata={meta}&order=asc&limit=2&nextToken={token}")
        assert [x["sandboxID"] for x in body] == [c.sandbox_id, preset.sandbox_id], body

        # Through the SDK, where the release has the options.
        import inspect
        if "order" not in inspect.signature(Sandbox.list).parameters:
            pytest.skip(f"e2b {SDK_VERSION_TEXT} has no order/started_after/template on Sandbox.list (added in 2.45)")
        from e2b import SandboxQuery
        q = SandboxQuery(metadata={"run": run}, template="base")
        assert ids(Sandbox.list(query=q, order="asc").next_items()) == ids(made)
        q = SandboxQuery(metadata={"run": run}, started_after=b.get_info().started_at)
        assert set(ids(Sandbox.list(query=q).next_items())) == {b.sandbox_id, c.sandbox_id, preset.sandbox_id}
        q = SandboxQuery(metadata={"run": run}, template="offline")
        assert ids(Sandbox.list(query=q).next_items()) == [preset.sandbox_id]

        async def asc():
            p = AsyncSandbox.list(query=SandboxQuery(metadata={"run": run}, template="base"), order="asc")
            return ids(await p.next_items())
        assert arun(asc()) == ids(made)
    finally:
        kill_all(made + [preset])


# ------------------------------------------------------------ 2. connect only extends


def sdk_connects_with_set_timeout():
    """Releases before the connect route call set_timeout themselves (E2B shortens too)."""
    import importlib.util
    return importlib.util.find_spec("e2b.api.client.api.sandboxes.post_sandboxes_sandbox_id_connect") is None


def test_connect_never_shortens_a_running_sandbox(e2b_env):
    if sdk_connects_with_set_timeout():
        pytest.skip(f"e2b {SDK_VERSION_TEXT} connects with set_timeout, which sets the deadline as asked")
    s = Sandbox.create(timeout=300)
    try:
        again = Sandbox.connect(s.sandbox_id, timeout=10)
        assert 280 <= end_in(s) <= 310, end_in(s)
        assert again.commands.run("echo ok").stdout == "ok\n"
        Sandbox.connect(s.sandbox_id, timeout=600)
        assert 580 <= end_in(s) <= 610, end_in(s)

        async def short():
            await AsyncSandbox.connect(s.sandbox_id, timeout=5)
        arun(short())
        assert 580 <= end_in(s) <= 610, end_in(s)
    finally:
        s.kill()


def test_connect_resumes_a_paused_sandbox(e2b_env):
    s = Sandbox.create(timeout=120)
    try:
        s.commands.run("echo kept > /tmp/kept")
        pause(s)
        assert s.get_info().state.value == "paused"
        again = Sandbox.connect(s.sandbox_id)
        assert again.get_info().state.value == "running"
        assert again.files.read("/tmp/kept") == "kept\n"
    finally:
        s.kill()


# ------------------------------------------------------------ 3. is_running of a paused sandbox


def test_is_running_is_false_while_paused(e2b_env):
    s = Sandbox.create(timeout=120)
    try:
        assert s.is_running()
        pause(s)
        assert s.is_running() is False

        async def check():
            a = await AsyncSandbox.connect(s.sandbox_id)  # resumes it
            assert await a.is_running()
            await a.pause() if hasattr(a, "pause") else await a.beta_pause()
            return await a.is_running()
        assert arun(check()) is False
        Sandbox.connect(s.sandbox_id)
        assert s.is_running()
    finally:
        s.kill()
    assert s.is_running() is False


# ------------------------------------------------------------ 4. command timeouts, async too


def test_command_timeouts_sync_and_async(sbx):
    t0 = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30", timeout=2)
    assert time.monotonic() - t0 < 15

    async def scenario():
        a = await AsyncSandbox.connect(sbx.sandbox_id)
        t0 = time.monotonic()
        with pytest.raises(TimeoutException):
            await a.commands.run("sleep 30; echo late > /tmp/late", timeout=2)
        took = time.monotonic() - t0
        r = await a.commands.run("echo fast", timeout=5)
        return took, r.stdout
    took, out = arun(scenario(), timeout=60)
    assert took < 15 and out == "fast\n", (took, out)


# ------------------------------------------------------------ 5. one working directory


def test_commands_and_relative_files_share_the_home(sbx):
    assert sbx.commands.run("pwd").stdout == "/home/user\n"
    sbx.commands.run("echo from-cmd > f.txt")
    assert sbx.files.read("f.txt") == "from-cmd\n"
    sbx.files.write("g.txt", "from-files")
    assert sbx.commands.run("cat g.txt").stdout == "from-files"
    assert sbx.commands.run("echo $HOME").stdout == "/home/user\n"

    async def scenario():
        a = await AsyncSandbox.connect(sbx.sandbox_id)
        r = await a.commands.run("pwd; ls")
        return r.stdout, await a.files.read("f.txt")
    out, f = arun(scenario())
    assert out.splitlines()[0] == "/home/user" and "g.txt" in out.split() and f == "from-cmd\n", out


# ------------------------------------------------------------ 6. remove of a missing path


def test_remove_of_a_missing_path_is_a_no_op(sbx):
    sbx.files.remove("/tmp/never-was")
    sbx.files.remove("never-was-either")
    sbx.files.write("/tmp/once", "x")
    sbx.files.remove("/tmp/once")
    sbx.files.remove("/tmp/once")
    assert not sbx.files.exists("/tmp/once")

    async def scenario():
        a = await AsyncSandbox.connect(sbx.sandbox_id)
        await a.files.remove("/tmp/never-was")
    arun(scenario())
    # Other errors still raise: only "not there" is a no-op.
    with pytest.raises(SandboxException):
        sbx.files.remove("/tmp/" + "x" * 5000)


# ------------------------------------------------------------ 7. nothing silently dropped


def test_file_metadata_is_refused_by_name(daemon, sbx):
    h = dict(envd_headers(sbx.sandbox_id, sbx._envd_access_token), **{
        "Content-Type": "application/octet-stream", "X-Metadata-Owner": "me"})
    status, _, body = raw(daemon, "POST", "/files?path=/tmp/meta.txt", b"data", h)
    assert status == 400 and b"X-Metadata" in body, (status, body)
    assert not sbx.files.exists("/tmp/meta.txt")
    try:
        import inspect
        has_metadata = "metadata" in inspect.signature(sbx.files.write).parameters
    except (TypeError, ValueError):
        has_metadata = False
    if has_metadata:
        with pytest.raises(Exception) as e:
            sbx.files.write("/tmp/meta.txt", "data", metadata={"owner": "me"})
        assert "metadata" in str(e.value).lower(), e.value
        assert not sbx.files.exists("/tmp/meta.txt")


def test_watch_entries_are_refused_by_name(daemon, sbx):
    sbx.files.make_dir("/tmp/we")
    h = envd_headers(sbx.sandbox_id, sbx._envd_access_token)
    body = json.dumps({"path": "/tmp/we", "includeEntry": True}).encode()
    status, _, data = raw(daemon, "POST", "/filesystem.Filesystem/CreateWatcher", body, h)
    assert status == 400 and b"includeEntry" in data, (status, data)
    import inspect
    if "include_entry" in inspect.signature(sbx.files.watch_dir).parameters:
        with pytest.raises(Exception) as e:
            sbx.files.watch_dir("/tmp/we", include_entry=True)
        assert "entry" in str(e.value).lower() or "envd" in str(e.value).lower(), e.value
    # Without it, watching works as before.
    handle = sbx.files.watch_dir("/tmp/we")
    handle.stop()


def test_a_filesystem_pause_of_any_sandbox(daemon, e2b_key, sbx):
    """E2B's sandboxes keep their files on disk, so `pause(keep_memory=False)` (`{"memory":
    false}`) pauses any of them to the filesystem (processes gone, files kept) and
    `connect` resumes it; a memory pause (freeze) still works."""
    sbx.files.write("/home/user/kept.txt", "kept")
    status, _, body = control(daemon, e2b_key["e2b_key"], "POST", f"/sandboxes/{sbx.sandbox_id}/pause",
                              {"memory": False})
    assert status == 204, (status, body)
    assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
    again = Sandbox.connect(sbx.sandbox_id, timeout=120)
    assert again.files.read("/home/user/kept.txt") == "kept"
    if SDK_VERSION >= (2, 40, 0):
        again.pause(keep_memory=False)
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
        third = Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert third.files.read("/home/user/kept.txt") == "kept"
        third.pause(keep_memory=True)
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
        Sandbox.connect(sbx.sandbox_id, timeout=120)


def test_auto_pause_keeps_the_files_and_connect_resumes(e2b_env):
    """`autoPause` (lifecycle `on_timeout: pause`): at its deadline the sandbox pauses to the
    filesystem (processes gone, files on disk); `Sandbox.connect` resumes it with its files.
    A filesystem pause by call (`keep_memory=False`) does the same."""
    import inspect
    if SDK_VERSION >= (2, 63, 0):  # `mode` names the kind of pause
        s = Sandbox.create(timeout=3, lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}})
    elif "lifecycle" in inspect.signature(Sandbox.create).parameters:  # keep_memory defaults to True here
        s = Sandbox.create(timeout=3, lifecycle={"on_timeout": {"action": "pause", "keep_memory": False}})
    else:  # releases before `lifecycle`: autoPause only
        s = Sandbox.beta_create(auto_pause=True, timeout=3)
    try:
        s.files.write("/home/user/kept.txt", "kept")
        s.commands.run("sleep 300", background=True)
        assert wait_for(lambda: Sandbox.get_info(s.sandbox_id).state.value == "paused", 30), "no pause at the deadline"
        again = Sandbox.connect(s.sandbox_id, timeout=120)
        assert again.get_info().state.value == "running"
        assert again.files.read("/home/user/kept.txt") == "kept"
        # The processes started afresh: the background sleep is gone (memory is not kept).
        assert again.commands.run("pgrep -x sleep || echo none").stdout.strip() == "none"
        if SDK_VERSION >= (2, 40, 0):
            again.pause(keep_memory=False)
            assert Sandbox.get_info(s.sandbox_id).state.value == "paused"
            third = Sandbox.connect(s.sandbox_id, timeout=120)
            assert third.files.read("/home/user/kept.txt") == "kept"
    finally:
        Sandbox.kill(s.sandbox_id)


# ------------------------------------------------------------ 8. E2B's error shape everywhere


# (method, path, status, words the message must hold): what does not exist yet is refused
# by name; what E2B itself would refuse is refused as E2B does.
UNSUPPORTED = [
    ("GET", "/templates", 501, ["templates"]), ("POST", "/templates", 501, ["templates"]),
    ("POST", "/v2/templates", 501, ["templates"]), ("POST", "/v3/templates", 501, ["templates"]),
    ("GET", "/templates/base", 501, ["templates"]), ("DELETE", "/templates/t1", 501, ["templates"]),
    ("POST", "/volumes", 400, ["name"]), ("GET", "/volumes/v1", 404, ["volume"]),
    ("DELETE", "/templates/snap_aaaaaaaaaaaaaaaaaaaaaaaaaa", 404, ["snapshot"]),
    ("GET", "/snapshots?limit=0", 400, ["limit"]),
    ("PUT", "/sandboxes/{id}/network", 501, ["network"]), ("GET", "/sandboxes/{id}/nope", 404, []),
    ("GET", "/v2/sandboxes/{id}/nope", 404, []), ("POST", "/sandboxes/{id}/resume", 409, ["running"]),
]


@pytest.mark.parametrize("method,path,want,words", UNSUPPORTED)
def test_unsupported_routes_answer_in_e2b_shape(daemon, e2b_key, sbx, method, path, want, words):
    status, _, body = control(daemon, e2b_key["e2b_key"], method, path.format(id=sbx.sandbox_id), {})
    assert_e2b_error(status, body, want, mentions=words + (["safehouse"] if want == 501 else []))
    # No key is 401 in the same shape.
    status, _, data = raw(daemon, method, path.format(id=sbx.sandbox_id), b"{}")
    assert_e2b_error(status, json.loads(data), 401)


def test_sdk_shows_the_refusal_not_a_key_error(e2b_env, sbx):
    """What safehouse refuses reaches the SDK's exception with its reason (never a KeyError
    on a body it cannot read): a memory snapshot, a template that is not here."""
    if SDK_VERSION >= (2, 63, 0):
        with pytest.raises(SandboxException) as e:
            sbx.create_snapshot(mode="full")
        assert not isinstance(e.value, KeyError) and "criu" in str(e.value).lower(), repr(e.value)
    with pytest.raises(Exception) as e:
        Sandbox.create("no-such-template", timeout=30)
    assert not isinstance(e.value, KeyError) and "template build" in str(e.value), repr(e.value)


# ------------------------------------------------------------ 9. old route generations, keys


def test_both_route_generations(daemon, e2b_key):
    key = e2b_key["e2b_key"]
    status, _, v1 = control(daemon, key, "POST", "/sandboxes", {"templateID": "base", "timeout": 60})
    assert status == 201 and v1["envdAccessToken"] and v1["sandboxID"].startswith("sb_"), v1
    sid = v1["sandboxID"]
    try:
        status, _, got = control(daemon, key, "POST", f"/sandboxes/{sid}/connect", {"timeout": 30})
        assert status == 200 and got["sandboxID"] == sid and got["envdAccessToken"], got
        status, _, got = control(daemon, key, "POST", f"/v2/sandboxes/{sid}/connect", {"timeout": 30})
        assert status == 200 and got["sandboxID"] == sid, got
        status, _, _ = control(daemon, key, "POST", f"/sandboxes/{sid}/pause")
        assert status == 204
        # 2.0's connect: set_timeout, and resume when that fails (a paused sandbox).
        status, _, got = control(daemon, key, "POST", f"/sandboxes/{sid}/resume", {"timeout": 60})
        assert status == 201 and got["sandboxID"] == sid, got
        status, _, got = control(daemon, key, "POST", f"/sandboxes/{sid}/resume", {"timeout": 60})
        assert status == 409, got
        status, _, _ = control(daemon, key, "POST", f"/sandboxes/{sid}/refreshes", {"duration": 60})
        assert status == 204
        status, _, got = control(daemon, key, "GET", "/sandboxes")
        assert status == 200 and sid in [x["sandboxID"] for x in got], got
    finally:
        control(daemon, key, "DELETE", f"/sandboxes/{sid}")


def test_e2b_format_keys(daemon, api, monkeypatch):
    k = new_key(api)
    monkeypatch.setenv("E2B_API_URL", daemon.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", daemon.url)
    monkeypatch.delenv("E2B_VALIDATE_API_KEY", raising=False)
    monkeypatch.setenv("E2B_API_KEY", k["e2b_key"])
    s = Sandbox.create(timeout=60)
    try:
        assert s.commands.run("echo via-e2b-key").stdout == "via-e2b-key\n"
        # The same key, either form, same tenant.
        status, _, body = control(daemon, k["key"], "GET", f"/sandboxes/{s.sandbox_id}")
        assert status == 200, body
        # A forged e2b_ key (well formed, unknown) is refused by the daemon.
        with pytest.raises(AuthenticationException):
            Sandbox.create(api_key="e2b_" + "0" * 40, timeout=30)
        # Revoking the key ends its e2b_ form too.
        assert api.delete(f"/v1/keys/{k['id']}").status in (200, 204)
        with pytest.raises(AuthenticationException):
            Sandbox.list().next_items()
    finally:
        api.delete(f"/v1/sandboxes/{s.sandbox_id}")


def test_cli_prints_the_e2b_form(daemon):
    from .support import cli
    r = cli(daemon, "keys", "create", "--tenant", f"t-{uuid.uuid4().hex[:8]}", "--json")
    assert r.rc == 0, r
    k = r.json()
    assert k["e2b_key"].startswith("e2b_") and bytes.fromhex(k["e2b_key"][4:]).decode() == k["key"], k


# ------------------------------------------------------------ gzip, signed URLs


def test_gzip_uploads(daemon, sbx):
    h = dict(envd_headers(sbx.sandbox_id, sbx._envd_access_token), **{
        "Content-Type": "application/octet-stream", "Content-Encoding": "gzip"})
    status, _, body = raw(daemon, "POST", "/files?path=/tmp/gz.txt", gzip.compress(b"unzipped" * 1000), h)
    assert status == 200, (status, body)
    assert sbx.files.read("/tmp/gz.txt") == "unzipped" * 1000
    status, _, body = raw(daemon, "POST", "/files?path=/tmp/gz2.txt", b"not gzip at all", h)
    assert status == 400 and b"gzip" in body, (status, body)
    assert not sbx.files.exists("/tmp/gz2.txt")  # a failed upload leaves no partial file
    # Cut short: valid gzip whose stream ends early is refused, and leaves nothing either.
    status, _, body = raw(daemon, "POST", "/files?path=/tmp/gz5.txt", gzip.compress(b"y" * 100000)[:-12], h)
    assert status == 400 and b"gzip" in body, (status, body)
    assert not sbx.files.exists("/tmp/gz5.txt")
    h["Content-Encoding"] = "br"
    status, _, body = raw(daemon, "POST", "/files?path=/tmp/br.txt", b"x", h)
    assert status in (400, 415) and b"br" in body, (status, body)
    import inspect
    if "gzip" in inspect.signature(sbx.files.write).parameters:
        sbx.files.write("/tmp/gz3.bin", b"\x00\x01" * 50000, gzip=True)
        assert bytes(sbx.files.read("/tmp/gz3.bin", format="bytes")) == b"\x00\x01" * 50000

        async def scenario():
            a = await AsyncSandbox.connect(sbx.sandbox_id)
            await a.files.write("/tmp/gz4.txt", "async-gz", gzip=True)
            return await a.files.read("/tmp/gz4.txt")
        assert arun(scenario()) == "async-gz"


def envelope(flag, payload):
    return struct.pack(">BI", flag, len(payload)) + payload


def test_gzip_connect_envelopes(daemon, sbx):
    h = dict(envd_headers(sbx.sandbox_id, sbx._envd_access_token), **{
        "Content-Type": "application/connect+json", "Connect-Content-Encoding": "gzip",
        "Connect-Accept-Encoding": "gzip"})
    msg = json.dumps({"process": {"cmd": "/bin/sh", "args": ["-c", "echo zipped"]}}).encode()
    status, headers, body = raw(daemon, "POST", "/process.Process/Start", envelope(1, gzip.compress(msg)), h)
    assert status == 200, (status, body)
    out, i = [], 0
    while i < len(body):
        flag, n = struct.unpack(">BI", body[i:i + 5])
        payload = body[i + 5:i + 5 + n]
        i += 5 + n
        if flag & 1:
            payload = gzip.decompress(payload)
        out.append((flag, json.loads(payload)))
    assert out[-1][0] & 2 and "error" not in out[-1][1], out
    stdout = b"".join(base64.b64decode(m["event"]["data"].get("stdout", ""))
                      for f, m in out if not f & 2 and "data" in m.get("event", {}))
    assert stdout == b"zipped\n", out
    # A compressed envelope without the header naming the codec is an error, not garbage.
    h.pop("Connect-Content-Encoding")
    status, _, body = raw(daemon, "POST", "/process.Process/Start", envelope(1, gzip.compress(msg)), h)
    assert b"invalid_argument" in body or b"internal" in body, body


def fetch_url(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def multipart(name, content):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_signed_file_urls(api, e2b_key, sbx):
    sbx.files.write("/tmp/signed.txt", "signed content")
    url = sbx.download_url("/tmp/signed.txt", use_signature_expiration=60)
    assert "signature=" in url, url
    assert fetch_url(url) == (200, b"signed content")
    # Tampered: another path with the same signature, a changed signature.
    assert fetch_url(url.replace("signed.txt", "other.txt"))[0] in (401, 403)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    bad = url.replace(urllib.parse.quote(q["signature"][0], safe=""), "v1_" + "A" * 43)
    assert fetch_url(bad)[0] in (401, 403)
    # Unsigned and without the sandbox header: refused, never served.
    assert fetch_url(url.split("?")[0] + "?path=/tmp/signed.txt")[0] in (400, 401, 403)
    # Upload through a signed URL (multipart, as the SDK documents).
    up = sbx.upload_url("/tmp/uploaded.txt", use_signature_expiration=60)
    body, headers = multipart("uploaded.txt", b"via signed url")
    status, resp = fetch_url(up, body, headers)
    assert status == 200, (status, resp)
    assert sbx.files.read("/tmp/uploaded.txt") == "via signed url"
    # A download signature does not upload.
    status, _ = fetch_url(sbx.download_url("/tmp/uploaded.txt", use_signature_expiration=60), body, headers)
    assert status in (401, 403)
    # Expired.
    from e2b.sandbox.signature import get_signature
    sig = get_signature("/tmp/signed.txt", "read", None, sbx._envd_access_token, -5)
    base = url.split("?")[0]
    expired = (f"{base}?path=/tmp/signed.txt&signature={urllib.parse.quote(sig['signature'])}"
               f"&signature_expiration={sig['expiration']}")
    status, body = fetch_url(expired)
    assert status in (401, 403) and b"expired" in body.lower(), (status, body)
    # Without an expiration a signature lasts as long as its token...
    lasting = sbx.download_url("/tmp/signed.txt")
    assert fetch_url(lasting) == (200, b"signed content")
    # ...which ends with its key: revoked, the URL is refused.
    assert api.delete(f"/v1/keys/{e2b_key['id']}").status in (200, 204)
    status, body = fetch_url(lasting)
    assert status == 401, (status, body)
    assert api.delete(f"/v1/sandboxes/{sbx.sandbox_id}").status in (200, 204)  # its key cannot kill it now


# ------------------------------------------------------------ metrics across sandboxes, logs


def test_metrics_of_many_sandboxes_and_by_id(daemon, e2b_key, e2b_env):
    a, b = Sandbox.create(timeout=60), Sandbox.create(timeout=60)
    try:
        a.commands.run("sleep 1.5")
        wait_for(lambda: Sandbox.get_metrics(b.sandbox_id), timeout=10)
        m = Sandbox.get_metrics(a.sandbox_id)
        assert m and m[-1].mem_used > 0, m
        status, _, body = control(daemon, e2b_key["e2b_key"], "GET",
                                  f"/sandboxes/metrics?sandbox_ids={a.sandbox_id},{b.sandbox_id},sb_{'a' * 26}")
        assert status == 200, body
        from e2b.api.client.models.sandboxes_with_metrics import SandboxesWithMetrics
        parsed = SandboxesWithMetrics.from_dict(body)
        assert set(parsed.sandboxes) == {a.sandbox_id, b.sandbox_id}, body
        assert body["sandboxes"][a.sandbox_id]["memUsed"] > 0, body

        async def by_id():
            return await AsyncSandbox.get_metrics(b.sandbox_id)
        assert arun(by_id())
    finally:
        kill_all([a, b])


def test_logs_route(daemon, e2b_key, sbx):
    sbx.commands.run("echo for-the-log")
    key = e2b_key["e2b_key"]
    status, _, body = control(daemon, key, "GET", f"/sandboxes/{sbx.sandbox_id}/logs?limit=50")
    assert status == 200, body
    from e2b.api.client.models.sandbox_logs import SandboxLogs
    logs = SandboxLogs.from_dict(body)
    assert logs.logs and any("process" in x.line for x in logs.logs), body
    assert any("process" in x.message for x in logs.log_entries), body
    status, _, body = control(daemon, key, "GET", f"/v2/sandboxes/{sbx.sandbox_id}/logs?limit=2")
    assert status == 200 and len(body["logs"]) <= 2, body
    status, _, body = control(daemon, key, "GET", f"/sandboxes/sb_{'a' * 26}/logs")
    assert_e2b_error(status, body, 404)


# ------------------------------------------------------------ sudo


def test_sudo_fails_clearly(sbx):
    """E2B's sandboxes have a passwordless sudo; safehouse's have one unprivileged user and
    no sudo (docs/e2b.md): code that uses it gets the shell's "not found" (127), never a
    quiet success."""
    # Whether the sandbox's root filesystem has a sudo binary (the host's root here; CI
    # machines often have one) decides which clear failure it is.
    has_sudo = sbx.commands.run("command -v sudo || true").stdout.strip() != ""
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("sudo touch /root-was-here")
    if has_sudo:
        # The binary is there but cannot gain root: no_new_privs is set (and the root is
        # mounted nosuid), so sudo refuses with its own message and status 1.
        assert e.value.exit_code == 1 and e.value.stderr.startswith("sudo:"), e.value
        assert "no new privileges" in e.value.stderr or "effective uid is not 0" in e.value.stderr, e.value
    else:
        assert e.value.exit_code == 127 and "sudo" in e.value.stderr and "not found" in e.value.stderr, e.value
    assert not sbx.files.exists("/root-was-here")
