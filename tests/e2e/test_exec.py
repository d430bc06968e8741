"""POST /v1/sandboxes/{id}/exec: run to completion, with the result record."""
import pytest

from .support import IS_ROOT, require_root

MiB = 1 << 20
RESULT_KEYS = {"exit_code", "signal", "stdout", "stderr", "stdout_truncated", "stderr_truncated",
               "timed_out", "oom_killed", "wall_ms", "cpu_ms", "peak_memory_bytes"}


def test_exit_codes_stdout_stderr(api, sandbox):
    sid = sandbox["id"]
    res = api.exec(sid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert RESULT_KEYS <= set(res), sorted(res)
    assert res["exit_code"] == 3 and res["signal"] is None, res
    assert (res["stdout"], res["stderr"]) == ("out\n", "err\n"), res
    assert res["timed_out"] is False and res["oom_killed"] is False, res
    assert res["stdout_truncated"] is False and res["stderr_truncated"] is False, res
    for code in (0, 1, 42, 255):
        assert api.exec(sid, ["sh", "-c", f"exit {code}"])["exit_code"] == code


def test_killed_by_signal(api, sandbox):
    res = api.exec(sandbox["id"], ["sh", "-c", "kill -TERM $$"])
    assert res["exit_code"] is None and res["signal"] == 15, res


def test_stdin(api, sandbox):
    res = api.exec(sandbox["id"], ["cat"], stdin="hello\nworld\n")
    assert (res["exit_code"], res["stdout"]) == (0, "hello\nworld\n"), res
    # No stdin: reads see EOF at once (no hang).
    res = api.exec(sandbox["id"], ["cat"], timeout_s=10)
    assert (res["exit_code"], res["stdout"], res["timed_out"]) == (0, "", False), res


def test_env_and_cwd(api, sandbox):
    sid = sandbox["id"]
    res = api.exec(sid, ["sh", "-c", 'printf "%s|%s" "$FOO" "$BAR"'], env={"FOO": "bar baz", "BAR": "$HOME;x"})
    assert res["stdout"] == "bar baz|$HOME;x", res
    assert api.exec(sid, ["pwd"])["stdout"] == "/workspace\n"
    r = api.post(f"/v1/sandboxes/{sid}/fs/mkdir", {"path": "/tmp/wd/deep", "parents": True})
    assert r.status == 201, r
    res = api.exec(sid, ["pwd"], cwd="/tmp/wd/deep")
    assert (res["exit_code"], res["stdout"]) == (0, "/tmp/wd/deep\n"), res
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["pwd"], "cwd": "/no/such/dir"})
    assert r.status == 400 or (r.status == 200 and r.json()["exit_code"] not in (0, None)), r


def test_timeout(api, sandbox):
    res = api.exec(sandbox["id"], ["sleep", "30"], timeout_s=1)
    assert res["timed_out"] is True, res
    assert res["exit_code"] != 0, res
    assert 900 <= res["wall_ms"] < 10_000, res
    # A timed-out shell's children go too: nothing keeps running.
    res = api.exec(sandbox["id"], ["sh", "-c", "pgrep -x sleep || echo none"])
    assert "none" in res["stdout"], res


def test_memory_limit_oom(api, sandbox):
    require_root("cgroup memory limits (cgroup v1 needs root)")
    hog = "b = bytearray(b'x') * (400 * 1024 * 1024); print(len(b))"
    res = api.exec(sandbox["id"], ["python3", "-c", hog], limits={"memory": "64MiB"}, timeout_s=30)
    assert res["oom_killed"] is True, res
    assert res["exit_code"] != 0 and "419430400" not in res["stdout"], res
    # The limit was for that command only: the sandbox lives on.
    res = api.exec(sandbox["id"], ["python3", "-c", hog], timeout_s=30)
    assert (res["exit_code"], res["oom_killed"]) == (0, False), res
    assert res["peak_memory_bytes"] >= 400 * MiB, res


def test_resource_envelope(api, sandbox):
    res = api.exec(sandbox["id"], ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo $i"])
    assert res["stdout"] == "200000\n", res
    assert isinstance(res["wall_ms"], int) and res["wall_ms"] > 0, res
    assert isinstance(res["cpu_ms"], int) and res["cpu_ms"] >= 0, res
    assert res["cpu_ms"] <= res["wall_ms"] * 4 + 50, res
    if IS_ROOT:
        assert isinstance(res["peak_memory_bytes"], int) and 0 < res["peak_memory_bytes"] < 1 << 34, res


def test_shell_string_vs_argv(api, sandbox):
    """API-08: a string goes through /bin/sh -c; an argv reaches the program verbatim."""
    sid = sandbox["id"]
    res = api.exec(sid, "echo $((1+2)) | tr 3 X; echo $0")
    assert res["stdout"] == "X\n/bin/sh\n", res
    nasty = ["$((1+2))", "a b", "*", "; id", "`id`", "$(id)", "|", "&&", "'\"", "\\n", ">x"]
    res = api.exec(sid, ["printf", "%s\\n", *nasty])
    assert res["exit_code"] == 0 and res["stdout"] == "".join(f"{a}\n" for a in nasty), res
    assert api.exec(sid, ["ls", "x"], cwd="/workspace")["exit_code"] != 0, "a '>x' argument must not redirect"


def test_exec_request_validation(api, sandbox):
    sid = sandbox["id"]
    for bad in ({"cmd": []}, {"cmd": ""}, {"cmd": 5}, {}, {"cmd": ["true"], "bogus": 1},
                {"cmd": ["true"], "env": {"A": 1}}, {"cmd": ["true"], "timeout_s": "1"},
                {"cmd": ["true"], "limits": {"memory": "lots"}}):
        r = api.post(f"/v1/sandboxes/{sid}/exec", bad)
        assert r.status == 400, (bad, r)
    r = api.post(f"/v1/sandboxes/{sid}/exec", {"cmd": ["/no/such/binary"]})
    assert r.status == 400 or (r.status == 200 and r.json()["exit_code"] == 127), r


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_large_output(api, sandbox, stream):
    redirect = "" if stream == "stdout" else " >&2"
    res = api.exec(sandbox["id"], ["sh", "-c", f"head -c 3000000 /dev/zero | tr '\\0' a{redirect}"])
    assert res["exit_code"] == 0 and len(res[stream]) == 3_000_000 and not res[f"{stream}_truncated"], \
        {k: (v if not isinstance(v, str) else len(v)) for k, v in res.items()}
