"""CLI rough edges a new user met in the first hour (issue 17), each reproduced first:
durations with several parts everywhere, `sandbox create` with the limit and network flags
`run` has, a bad policy file reported at its own line, connection errors ending their line."""
import time

import pytest

from .support import cli, free_port

CLIENT_COMMANDS = [["sandbox", "ls"], ["sandbox", "create"], ["exec", "sb_x", "--", "true"], ["events"],
                   ["files", "ls", "sb_x", "/"], ["kill-all"], ["keys", "ls"]]


@pytest.mark.parametrize("argv", CLIENT_COMMANDS, ids=" ".join)
def test_a_daemon_that_is_not_there_ends_its_line(daemon, argv):
    r = cli(daemon, *argv, url=f"http://127.0.0.1:{free_port()}")
    assert r.rc != 0 and r.stderr.startswith("safehouse: cannot reach the daemon at"), r
    assert r.stderr.endswith("\n") and r.stderr.count("\n") == 1, repr(r.stderr)


def test_sandbox_create_and_timeout_take_durations(daemon):
    r = cli(daemon, "sandbox", "create", "--timeout", "1h30m", "--json")
    assert r.rc == 0, r
    sb = r.json()
    try:
        left = time.mktime(time.strptime(sb["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - \
            time.mktime(time.strptime(sb["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert 5395 <= left <= 5405, sb
        r = cli(daemon, "sandbox", "timeout", sb["id"], "10m", "--json")
        assert r.rc == 0, r
        r = cli(daemon, "sandbox", "timeout", sb["id"], "1h30")
        assert r.rc == 1 and '"30" has no unit' in r.stderr, r
        t0 = time.monotonic()
        r = cli(daemon, "exec", "--timeout", "1.5s", sb["id"], "--", "sleep", "30", timeout=30)
        assert r.rc == 124 and time.monotonic() - t0 < 15, r
        r = cli(daemon, "exec", "--timeout", "1m", sb["id"], "--", "true")
        assert r.rc == 0, r
    finally:
        cli(daemon, "sandbox", "kill", sb["id"])


def test_sandbox_create_takes_memory_and_allow_net(daemon):
    r = cli(daemon, "sandbox", "create", "--memory", "64MiB", "--allow-net", "pypi.org:443", "--timeout", "60")
    assert r.rc == 0, r
    sid = r.stdout.strip()
    try:
        # The memory flag is enforced: 200 MiB does not fit.
        r = cli(daemon, "exec", sid, "--", "python3", "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])")
        assert r.rc == 137, r
        # The network flag gave the sandbox the gateway.
        r = cli(daemon, "exec", sid, "--", "sh", "-c", "echo $HTTPS_PROXY")
        assert r.rc == 0 and r.stdout.strip() == "http://127.0.0.1:3128", r
    finally:
        cli(daemon, "sandbox", "kill", sid)


def test_a_bad_policy_file_is_reported_at_its_own_line(daemon, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('version = 1\n\n[limits]\nmemory = "lots"\n')
    r = cli(daemon, "sandbox", "create", "--policy", str(f))
    assert r.rc == 1 and str(f) in r.stderr and "line 4" in r.stderr and '"lots" is not a size' in r.stderr, r


def run_cli(*argv):
    import subprocess
    from .support import BIN
    return subprocess.run([BIN, *argv], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_policy_explain_net_without_a_port_asks_about_443(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('version = 1\n[network]\nallow = ["pypi.org:443"]\n')
    r = run_cli("policy", "explain", str(f), "--net", "pypi.org", "--json")
    import json
    ans = json.loads(r.stdout)
    assert r.returncode == 0 and ans["allowed"] and ans["question"] == "net pypi.org:443", r
    r = run_cli("policy", "explain", str(f), "--net", "pypi.org:80")
    assert r.returncode == 1, r


def test_run_refuses_limits_past_the_host():
    for flags, says in ((["--memory", "1TB"], "more than this host's memory"),
                        (["--cpus", "1000"], "more than this host's")):
        r = run_cli("run", *flags, "--", "true")
        assert r.returncode == 125 and says in r.stderr, r
    r = run_cli("run", "--timeout", "1h30m", "--memory", "256MiB", "--", "true")
    assert r.returncode == 0, r


def test_rootless_run_warns_in_one_line_and_quiet_hides_it():
    import pwd
    import subprocess
    from .support import BIN, IS_ROOT
    if not IS_ROOT:
        pytest.skip("switching to an unprivileged user needs root")
    pw = pwd.getpwnam("nobody")
    as_nobody = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/tmp",
                 "env": {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}}
    r = subprocess.run([BIN, "run", "--", "true"], capture_output=True, text=True, timeout=60, **as_nobody)
    if "not enforced" not in r.stderr:
        pytest.skip(f"this host lets uid {pw.pw_uid} create cgroups: nothing to warn about")
    assert r.returncode == 0 and r.stderr.count("\n") == 1, r
    assert r.stderr.startswith("safehouse: warning: the memory and pids limits not enforced") and "--quiet" in r.stderr, r
    r = subprocess.run([BIN, "run", "--quiet", "--", "true"], capture_output=True, text=True, timeout=60, **as_nobody)
    assert r.returncode == 0 and r.stderr == "", r


def test_run_says_when_a_limit_killed_the_command():
    import json
    r = run_cli("run", "--timeout", "1s", "--", "sleep", "30")
    assert r.returncode == 124, r
    assert "timed out after 1s and was killed (exit 124)" in r.stderr and "--timeout" in r.stderr, r
    r = run_cli("run", "--memory", "32MiB", "--", "python3", "-c", "b = bytearray(200 << 20)")
    assert r.returncode == 137, r
    assert "the memory limit (32MiB) killed a process" in r.stderr, r
    # Filling the RAM-backed disk is a memory kill too (the kernel picks the shell or dd).
    r = run_cli("run", "--memory", "32MiB", "--json", "-", "--", "sh", "-c",
                "dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>/dev/null")
    record = json.loads(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 137 and record["oom_killed"] is True, (r, record)
    # A child killed by the limit counts even when the command itself goes on: the shell
    # survives (no signal of its own), and the record still says the limit killed something.
    r = run_cli("run", "--memory", "32MiB", "--json", "-", "--", "sh", "-c",
                "python3 -c 'b = bytearray(200 << 20)'; echo survived")
    record = json.loads(r.stderr.strip().splitlines()[-1])
    assert r.stdout.strip() == "survived" and r.returncode == 0, (r, record)
    assert record["oom_killed"] is True and record["signal"] is None, (r, record)
    # A command that ends on its own prints nothing extra.
    r = run_cli("run", "--timeout", "30s", "--memory", "64MiB", "--", "true")
    assert r.returncode == 0 and r.stderr == "", r


def test_run_with_a_terminal_has_its_own_under_dev_pts():
    # The terminal is the sandbox's own (from its devpts instance), so `tty` finds it.
    r = run_cli("run", "--tty", "--", "tty")
    assert r.returncode == 0, r
    assert r.stdout.strip().replace("\r", "") == "/dev/pts/0", r
    r = run_cli("run", "--tty", "--", "sh", "-c", "test -t 0 && test -t 1 && ls /dev/pts")
    assert r.returncode == 0 and r.stdout.split() == ["0", "ptmx"], r
    r = run_cli("run", "--", "tty")
    assert r.returncode == 1 and r.stdout.strip() == "not a tty", r


def test_run_path_flags_name_the_flag_and_the_problem(tmp_path):
    missing = str(tmp_path / "missing")
    for argv, says in ((["--workdir", missing], f"--workdir {missing}: no such file or directory on this host"),
                       (["--workdir", "/etc/hostname"], "--workdir /etc/hostname: not a directory"),
                       (["--mount", f"{missing}:/data"], f"--mount {missing}: no such file or directory on this host"),
                       (["--rootfs", missing], f"--rootfs {missing}: no such file or directory on this host"),
                       (["--rootfs", "/etc/hostname"], "--rootfs /etc/hostname: not a directory")):
        r = run_cli("run", *argv, "--", "true")
        assert r.returncode == 125 and says in r.stderr, (argv, r)
        assert "os error" not in r.stderr and r.stderr.count("\n") == 1, (argv, r)
