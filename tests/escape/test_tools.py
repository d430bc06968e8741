"""`[tools]` against `safehouse run`: the exec allowlist (Landlock EXECUTE on the listed
files only) and per-tool limits (a nested cgroup and a timer per limited tool run).

Each attempt also runs outside (where it must succeed), so a denial inside proves the
sandbox did it. The allowlist holds in both modes; per-tool limits need cgroups, so in
rootless mode here (cgroup v1) they must be refused with 125, never silently dropped.
"""
import errno
import os
import shutil
import subprocess

import pytest

from conftest import PYTHON, limits_unenforceable, run_inside, run_outside, world_tmpdir  # noqa: F401

ALLOW = '[tools]\nallow = ["/usr/bin/python3*", "/bin/sh"]\n'
LIMITS = ALLOW + '[tools.limits."/usr/bin/python3*"]\ntimeout = "1s"\nmemory = "64MiB"\n'


@pytest.fixture
def policy_file():
    d = world_tmpdir("safehouse-tools-")
    made = []

    def write(text):
        path = os.path.join(d, f"p{len(made)}.toml")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        made.append(path)
        return path

    yield write
    shutil.rmtree(d, ignore_errors=True)


def inside(mode, policy, cmd, **kw):
    return run_inside(cmd, ["--policy", policy], mode=mode, json_record=True, **kw)


def test_allowed_tool_runs(mode, policy_file):
    res = inside(mode, policy_file(ALLOW), [PYTHON, "-c", "print('py ok')"])
    assert (res.rc, res.stdout) == (0, "py ok\n"), res.stderr


def test_two_patterns_naming_one_file_both_match(mode, policy_file):
    """Merged /usr: /bin/sh and /usr/bin/sh name one file. Each pattern matches it (it was
    refused as "matches no file" when the second pattern found the file already granted)."""
    policy = policy_file('[tools]\nallow = ["/bin/sh", "/usr/bin/sh", "/bin/true"]\n')
    res = inside(mode, policy, ["/bin/sh", "-c", "/bin/true && echo ok"])
    assert (res.rc, res.stdout) == (0, "ok\n"), res.stderr


def test_unlisted_command_is_refused_with_eacces(mode, policy_file):
    assert run_outside(["/bin/ls", "/"]).rc == 0
    res = inside(mode, policy_file(ALLOW), ["/bin/ls", "/"])
    assert res.rc == 126, res.stderr
    assert res.record and res.record["exit_code"] == 126
    assert "Permission denied" in res.record["exec_error"], res.record
    assert res.record["exec_error"].startswith("/bin/ls"), res.record


def test_shell_cannot_start_an_unlisted_tool(mode, policy_file):
    script = "ls /; echo ls-rc=$?"
    out = run_outside(["/bin/sh", "-c", script])
    assert "ls-rc=0" in out.stdout
    res = inside(mode, policy_file(ALLOW), ["/bin/sh", "-c", script])
    assert res.rc == 0, res.stderr
    assert "ls-rc=126" in res.stdout, res.stdout
    assert "Permission denied" in res.stderr, res.stderr


def test_copied_binary_in_a_writable_dir_does_not_run(mode, policy_file):
    code = ("import os, shutil\n"
            "d = os.environ.get('TMPDIR_FOR_TEST', '/tmp')\n"
            "p = shutil.copy('/bin/ls', os.path.join(d, 'myls'))\n"
            "os.chmod(p, 0o755)\n"
            "try:\n"
            "    os.execv(p, [p, '/'])\n"
            "except OSError as e:\n"
            "    print('errno', e.errno)\n")
    outside_dir = world_tmpdir("safehouse-tools-copy-")
    try:
        out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                             env={"TMPDIR_FOR_TEST": outside_dir})
        assert out.returncode == 0 and "errno" not in out.stdout, out
    finally:
        shutil.rmtree(outside_dir, ignore_errors=True)
    for where in ["/tmp", "/workspace", "/dev/shm"]:
        res = inside(mode, policy_file(ALLOW), [PYTHON, "-c", code.replace("'/tmp'", repr(where))])
        assert res.stdout.strip() == f"errno {errno.EACCES}", (where, res.stdout, res.stderr)


def test_execv_from_python_is_permission_error(mode, policy_file):
    code = ("import os\n"
            "try:\n"
            "    os.execv('/bin/ls', ['ls'])\n"
            "except PermissionError as e:\n"
            "    print('PermissionError', e.errno)\n")
    out = run_outside([PYTHON, "-c", code.replace("['ls']", "['ls', '/']")])
    assert out.rc == 0 and "PermissionError" not in out.stdout
    res = inside(mode, policy_file(ALLOW), [PYTHON, "-c", code])
    assert res.stdout.strip() == f"PermissionError {errno.EACCES}", (res.stdout, res.stderr)


def test_symlinked_tool_is_granted_by_its_target(mode, policy_file):
    # /usr/bin/python3 is usually a symlink to python3.X: granting the pattern grants the
    # file; a new link to it in /tmp runs it too (same file), a link to ls does not.
    links = "import os; os.symlink('/usr/bin/python3', '/tmp/py'); os.symlink('/bin/ls', '/tmp/l')"
    script = f'{PYTHON} -c "{links}" && /tmp/py -c "print(7)"; /tmp/l /; echo l-rc=$?'
    res = inside(mode, policy_file(ALLOW), ["/bin/sh", "-c", script])
    assert "7\n" in res.stdout and "l-rc=126" in res.stdout, (res.stdout, res.stderr)


def test_pattern_matching_nothing_is_refused(mode, policy_file):
    for pattern in ["/usr/bin/no-such-tool*", "/usr/bin/no-such-tool", "/usr/bin"]:
        res = inside(mode, policy_file(f'[tools]\nallow = ["{pattern}"]\n'), ["/bin/true"])
        assert res.rc == 125, (pattern, res.rc, res.stderr)
        assert "tools.allow" in res.stderr and pattern.rstrip("*") in res.stderr, res.stderr


def test_malformed_pattern_is_refused_with_a_hint(mode, policy_file):
    res = inside(mode, policy_file('[tools]\nallow = ["/usr/*/python3"]\n'), ["/bin/true"])
    assert res.rc == 125 and "last component" in res.stderr, res.stderr


# ---------------------------------------------------------------- per-tool limits

def test_tool_timeout_kills_the_tool_not_the_shell(mode, policy_file):
    script = f'{PYTHON} -c "import time; time.sleep(30)"; echo rc=$?; echo shell-continues'
    res = inside(mode, policy_file(LIMITS), ["/bin/sh", "-c", script], timeout=30)
    if limits_unenforceable(mode):
        assert res.rc == 125 and "tools.limits" in res.stderr, res.stderr
        return
    assert res.rc == 0, res.stderr
    assert res.stdout.split() == ["rc=137", "shell-continues"], res.stdout
    assert 0.9 < res.wall < 5, res.wall
    runs = res.record["tool_runs"]
    assert [(r["tool"], r["timed_out"]) for r in runs] == [("/usr/bin/python3*", True)], runs
    assert res.record["timed_out"] is False


def test_tool_timeout_survives_a_nested_start(mode, policy_file):
    # python starting python: the inner run is nested in the outer one's cgroup, so the
    # outer timeout still ends both.
    code = "import subprocess; subprocess.run(['/usr/bin/python3', '-c', 'import time; time.sleep(30)'])"
    res = inside(mode, policy_file(LIMITS), ["/bin/sh", "-c", f'{PYTHON} -c "{code}"; echo rc=$?'],
                 timeout=30)
    if limits_unenforceable(mode):
        assert res.rc == 125
        return
    assert res.stdout.split() == ["rc=137"], (res.stdout, res.stderr)
    assert res.wall < 5, res.wall


def test_tool_memory_cap_is_below_the_sandbox_limit(mode, policy_file):
    alloc = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); print('allocated')"
    assert "allocated" in run_outside([PYTHON, "-c", alloc]).stdout
    script = f'{PYTHON} -c "{alloc}"; echo rc=$?'
    res = inside(mode, policy_file(LIMITS), ["/bin/sh", "-c", script], timeout=30)
    if limits_unenforceable(mode):
        assert res.rc == 125 and "tools.limits" in res.stderr, res.stderr
        return
    assert res.rc == 0, res.stderr
    assert "allocated" not in res.stdout and "rc=137" in res.stdout, res.stdout
    assert [r["oom_killed"] for r in res.record["tool_runs"]] == [True], res.record
    # The same allocation without the tool limit fits the sandbox's (1GiB default).
    res = inside(mode, policy_file(ALLOW), ["/bin/sh", "-c", script], timeout=30)
    assert "allocated" in res.stdout and "rc=0" in res.stdout, (res.stdout, res.stderr)


def test_limited_tool_as_the_command_and_unlimited_tools_untouched(mode, policy_file):
    res = inside(mode, policy_file(LIMITS), ["/bin/sh", "-c", f"{PYTHON} -c 'print(1)'; echo done"])
    if limits_unenforceable(mode):
        assert res.rc == 125
        return
    assert res.stdout.split() == ["1", "done"], (res.stdout, res.stderr)
    res = inside(mode, policy_file(LIMITS), [PYTHON, "-c", "import time; time.sleep(30)"], timeout=30)
    assert res.rc == 137 and res.wall < 5, (res.rc, res.wall, res.stderr)
    # Denied execs still fail with EACCES under the exec supervisor.
    res = inside(mode, policy_file(LIMITS), ["/bin/sh", "-c", "ls; echo rc=$?"])
    assert "rc=126" in res.stdout, (res.stdout, res.stderr)


def test_tool_cgroups_are_removed(mode, policy_file):
    if limits_unenforceable(mode):
        pytest.skip("no cgroups in this mode")
    from conftest import leftover_cgroups, safehouse_cgroup_dirs
    before = safehouse_cgroup_dirs()
    res = inside(mode, policy_file(LIMITS),
                 ["/bin/sh", "-c", f'{PYTHON} -c "import time; time.sleep(30)" & {PYTHON} -c 1; echo ok'])
    assert "ok" in res.stdout, res.stderr
    assert not leftover_cgroups(before), "tool cgroups left behind"
