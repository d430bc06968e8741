"""The client commands of the `safehouse` binary against the real daemon."""
import hashlib
import os
import re
import tempfile
import time

import pytest

from .support import ID_RE, cli, free_port


@pytest.fixture
def sid(daemon):
    r = cli(daemon, "sandbox", "create", "--timeout", "120", "--metadata", "suite=cli", "--env", "CLIVAR=yes")
    assert r.rc == 0, r
    sid = r.stdout.strip()
    assert ID_RE.match(sid), r
    daemon.created.append((daemon.admin_key, sid))
    yield sid
    cli(daemon, "sandbox", "kill", sid)


def test_exec_streams_and_exits_with_status(daemon, sid):
    r = cli(daemon, "exec", sid, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n"), r
    r = cli(daemon, "exec", sid, "--", "true")
    assert (r.rc, r.stdout, r.stderr) == (0, "", ""), r
    r = cli(daemon, "exec", sid, "--", "sh", "-c", "kill -KILL $$")
    assert r.rc == 137, r
    r = cli(daemon, "exec", sid, "--", "printenv", "CLIVAR")
    assert (r.rc, r.stdout) == (0, "yes\n"), r


def test_exec_options_and_stdin(daemon, sid):
    r = cli(daemon, "exec", "--env", "A=b c", "--cwd", "/tmp", sid, "--", "sh", "-c", 'echo "$A"; pwd')
    assert (r.rc, r.stdout) == (0, "b c\n/tmp\n"), r
    data = os.urandom(300_000)
    r = cli(daemon, "exec", sid, "--", "sha256sum", input=data)
    assert r.rc == 0 and r.stdout.split()[0] == hashlib.sha256(data).hexdigest(), r
    r = cli(daemon, "exec", sid, "--", "sh", "-c", "echo 'a;b' '$X' | cat")
    assert r.stdout == "a;b $X\n", r
    t0 = time.monotonic()
    r = cli(daemon, "exec", "--timeout", "1", sid, "--", "sleep", "30", timeout=20)
    assert r.rc == 124 and time.monotonic() - t0 < 10, (r, "killed at its timeout: 124, like run")


def test_exec_memory_caps_the_command_and_its_cgroup_goes_with_it(daemon, sid):
    """`exec --memory`: the command gets a cgroup of its own with the cap (the same rule as
    the API's run-to-completion `limits.memory`); past it the kernel kills it and the
    process's exit event says so. The same command without the cap runs (the probe is real)."""
    from pathlib import Path

    from .test_events import read_sse

    hog = ["python3", "-c", "b = b'x' * (96 << 20); print(len(b))"]
    r = cli(daemon, "exec", sid, "--", *hog, timeout=60)
    assert (r.rc, r.stdout) == (0, f"{96 << 20}\n"), r
    r = cli(daemon, "exec", "--memory", "32MiB", sid, "--", *hog, timeout=60)
    assert r.rc == 137, r
    r = cli(daemon, "exec", "--memory", "lots", sid, "--", "true")
    assert r.rc == 125 and "--memory" in r.stderr, r
    api = daemon.admin()
    for _ in range(50):
        status, got = read_sse(api, f"/v1/sandboxes/{sid}/events", {"follow": "false"})
        exited = [e["data"]["data"] for e in got if e["event"] == "process.exited"]
        if len(exited) >= 2:
            break
        time.sleep(0.1)
    assert [(x["signal"], x["oom_killed"]) for x in exited[-2:]] == [(None, False), (9, True)], exited
    started = [e["data"]["data"] for e in got if e["event"] == "process.started"]
    assert started[-1]["memory"] == 32 << 20, started
    v1 = Path("/sys/fs/cgroup/memory/safehouse") / sid
    if v1.exists():
        assert not list(v1.glob("cmd-*")), "the process's cgroup goes when it ends"


def test_exec_binary_stdout_round_trip(daemon, sid):
    """8 MB through `cat`: both directions at once, binary-clean, no deadlock."""
    import subprocess
    data = os.urandom(8_000_000)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SAFEHOUSE_URL": daemon.url,
           "SAFEHOUSE_API_KEY": daemon.admin_key}
    from .support import BIN
    p = subprocess.run([BIN, "exec", sid, "--", "cat"], input=data, capture_output=True, timeout=60, env=env)
    assert p.returncode == 0 and p.stdout == data, (p.returncode, len(p.stdout), p.stderr[-500:])


def test_exec_errors(daemon, sid):
    r = cli(daemon, "exec", "sb_" + "a" * 26, "--", "true")
    assert r.rc == 125 and r.stderr.startswith("safehouse: "), r
    r = cli(daemon, "exec", sid, "--", "true", key=None)
    assert r.rc == 125 and "SAFEHOUSE_API_KEY" in r.stderr, r
    r = cli(daemon, "sandbox", "ls", url=f"http://127.0.0.1:{free_port()}")
    assert r.rc == 1 and "cannot reach the daemon" in r.stderr and "safehouse serve" in r.stderr, r
    r = cli(daemon, "sandbox", "ls", key="sh_" + "x" * 32)
    assert r.rc == 1 and re.match(r"^safehouse: \S", r.stderr), r


def test_sandbox_commands(daemon, sid):
    r = cli(daemon, "sandbox", "ls", "--json")
    assert r.rc == 0, r
    assert sid in [s["id"] for s in r.json()["sandboxes"]], r
    r = cli(daemon, "sandbox", "ls", "--metadata", "suite=cli", "--state", "running", "--json")
    assert sid in [s["id"] for s in r.json()["sandboxes"]], r
    r = cli(daemon, "sandbox", "ls", "--metadata", "suite=nothing-like-this", "--json")
    assert r.json()["sandboxes"] == [], r
    r = cli(daemon, "sandbox", "ls")
    assert r.rc == 0 and r.stdout.splitlines()[0].split()[:2] == ["ID", "STATE"], r
    assert any(line.startswith(sid) and "running" in line for line in r.stdout.splitlines()), r
    r = cli(daemon, "sandbox", "info", sid, "--json")
    assert r.rc == 0 and r.json()["id"] == sid and r.json()["metadata"] == {"suite": "cli"}, r
    r = cli(daemon, "sandbox", "info", sid)
    assert r.rc == 0 and sid in r.stdout and "running" in r.stdout, r
    r = cli(daemon, "sandbox", "timeout", sid, "600", "--json")
    assert r.rc == 0 and r.json()["id"] == sid, r
    r = cli(daemon, "sandbox", "info", "sb_" + "z" * 26)
    assert r.rc == 1 and r.stderr.startswith("safehouse: ") and "\n" == r.stderr[-1], r
    assert r.stderr == "safehouse: no such sandbox; check the id with `safehouse sandbox ls`\n", r


def test_sandbox_create_json_policy_and_kill(daemon):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write('version = 1\n[limits]\npids = 64\nmemory = "256MiB"\n')
        policy = f.name
    try:
        r = cli(daemon, "sandbox", "create", "--policy", policy, "--timeout", "60", "--json")
        assert r.rc == 0, r
        sb = r.json()
        daemon.created.append((daemon.admin_key, sb["id"]))
        assert sb["state"] == "running", sb
        assert cli(daemon, "sandbox", "kill", sb["id"]).rc == 0
        assert cli(daemon, "sandbox", "kill", sb["id"]).rc == 0, "kill is idempotent"
        r = cli(daemon, "sandbox", "info", sb["id"], "--json")
        assert r.json()["state"] == "killed", r
        with open(policy, "w") as f:
            f.write("version = 1\n[limits]\nmemroy = '1GiB'\n")
        r = cli(daemon, "sandbox", "create", "--policy", policy)
        assert r.rc == 1 and "memroy" in r.stderr, r
    finally:
        os.unlink(policy)


def test_files_put_get_ls_rm(daemon, sid, tmp_path):
    src = tmp_path / "in.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    src.write_bytes(data)
    r = cli(daemon, "files", "put", sid, str(src), "/workspace/up/in.bin")
    assert r.rc == 0, r
    r = cli(daemon, "files", "put", sid, str(src), "/workspace/up/", "--json")
    assert r.rc == 0 and r.json()["path"] == "/workspace/up/in.bin" and r.json()["size"] == len(data), r
    r = cli(daemon, "files", "put", sid, "-", "/workspace/up/stdin.txt", input=b"from stdin\n")
    assert r.rc == 0, r
    out = tmp_path / "out.bin"
    r = cli(daemon, "files", "get", sid, "/workspace/up/in.bin", str(out))
    assert r.rc == 0 and out.read_bytes() == data, r
    r = cli(daemon, "files", "get", sid, "/workspace/up/stdin.txt", str(tmp_path))
    assert r.rc == 0 and (tmp_path / "stdin.txt").read_bytes() == b"from stdin\n", r
    r = cli(daemon, "files", "get", sid, "/workspace/up/stdin.txt", "-")
    assert (r.rc, r.stdout) == (0, "from stdin\n"), r
    r = cli(daemon, "files", "get", sid, "/workspace/nope", str(tmp_path / "nope"))
    assert r.rc == 1 and r.stderr.startswith("safehouse: "), r
    assert not (tmp_path / "nope").exists() and not list(tmp_path.glob(".nope*")), list(tmp_path.iterdir())
    r = cli(daemon, "files", "ls", sid, "/workspace/up", "--json")
    assert r.rc == 0, r
    assert sorted(e["name"] for e in r.json()["entries"]) == ["in.bin", "stdin.txt"], r
    r = cli(daemon, "files", "ls", sid, "/workspace", "--depth", "2")
    assert r.rc == 0 and "/workspace/up/in.bin" in r.stdout and r.stdout.startswith("TYPE"), r
    r = cli(daemon, "files", "rm", sid, "/workspace/up")
    assert r.rc == 1, "rm of a non-empty dir without -r must fail"
    r = cli(daemon, "files", "rm", sid, "-r", "/workspace/up")
    assert r.rc == 0, r
    r = cli(daemon, "exec", sid, "--", "ls", "/workspace")
    assert (r.rc, r.stdout) == (0, ""), r


def test_keys_commands(daemon):
    r = cli(daemon, "keys", "create", "--tenant", "cli-tenant", "--name", "n1", "--json")
    assert r.rc == 0, r
    k = r.json()
    r = cli(daemon, "keys", "ls", "--json")
    assert r.rc == 0 and k["id"] in [e["id"] for e in r.json()["keys"]], r
    r = cli(daemon, "keys", "ls")
    assert r.rc == 0 and k["id"] in r.stdout and "cli-tenant" in r.stdout, r
    r = cli(daemon, "sandbox", "ls", "--json", key=k["key"])
    assert r.rc == 0 and r.json()["sandboxes"] == [], r
    r = cli(daemon, "keys", "ls", key=k["key"])
    assert r.rc == 1, "a tenant key cannot list keys"
    r = cli(daemon, "keys", "revoke", k["id"])
    assert r.rc == 0, r
    r = cli(daemon, "sandbox", "ls", key=k["key"])
    assert r.rc == 1, r
    r = cli(daemon, "keys", "create", "--tenant", "plain")
    assert r.rc == 0 and r.stdout.strip().startswith("sh_") and len(r.stdout.strip()) == 35, r


def test_help_everywhere(daemon):
    for args in (["sandbox"], ["sandbox", "create"], ["sandbox", "ls"], ["sandbox", "info"], ["sandbox", "kill"],
                 ["sandbox", "timeout"], ["exec"], ["shell"], ["files"], ["files", "put"], ["files", "get"],
                 ["files", "ls"], ["files", "rm"], ["keys"], ["keys", "create"], ["keys", "ls"], ["keys", "revoke"]):
        r = cli(daemon, *args, "--help", key=None)
        assert r.rc == 0 and "Usage:" in r.stdout, (args, r)


def test_shell_needs_a_terminal(daemon, sid):
    r = cli(daemon, "shell", sid)
    assert r.rc == 125 and "terminal" in r.stderr, r


def test_shell_in_a_pty(daemon, sid):
    """`safehouse shell` on a real local terminal (a pty made here)."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import subprocess
    import termios
    from .support import BIN
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    before = termios.tcgetattr(slave)
    pty_name = os.ttyname(slave)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SAFEHOUSE_URL": daemon.url,
           "SAFEHOUSE_API_KEY": daemon.admin_key, "TERM": "xterm"}
    p = subprocess.Popen([BIN, "shell", sid], stdin=slave, stdout=slave, stderr=slave, env=env,
                         start_new_session=True)
    os.close(slave)
    buf = b""

    def read_until(needle, timeout=15):
        nonlocal buf
        deadline = time.monotonic() + timeout
        while needle not in buf and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    buf += os.read(master, 65536)
                except OSError:
                    break
        return needle in buf

    try:
        os.write(master, b"echo $((6*7))-marker\r")
        assert read_until(b"42-marker"), buf[-2000:]
        os.write(master, b"stty size | tr ' ' x\r")
        assert read_until(b"30x90"), buf[-2000:]
        # The window changes: the client hears SIGWINCH and resizes the remote terminal.
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        p.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"stty size | tr ' ' x\r")
        assert read_until(b"50x132"), buf[-2000:]
        os.write(master, b"exit 5\r")
        assert p.wait(timeout=15) == 5, buf[-2000:]
        slave = os.open(pty_name, os.O_RDWR | os.O_NOCTTY)
        assert termios.tcgetattr(slave) == before, "the local terminal was not restored"
        os.close(slave)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
        os.close(master)
