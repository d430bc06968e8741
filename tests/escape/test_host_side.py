"""Escape attempts whose proof is on the host side: what a sandbox leaves in a writable
bind, what a policy hides beneath a bind, what survives when `safehouse run` itself is
killed with SIGKILL."""
import os
import secrets
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import (BIN, IS_ROOT, PYTHON, child_env, require_binary, require_mode, run_inside,
                      safehouse_argv, safehouse_cgroup_dirs, wait_gone, world_tmpdir)

SETID_ATTEMPTS = r"""
import errno, json, os, stat
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode[e.errno]
open("plain", "w").write("#!/bin/sh\n")
attempt("chmod-4755", lambda: os.chmod("plain", 0o4755))
attempt("chmod-2755", lambda: os.chmod("plain", 0o2755))
attempt("open-creat-4755", lambda: os.close(os.open("c1", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("mknod-reg-4755", lambda: os.mknod("c2", stat.S_IFREG | 0o4755))
print(json.dumps(out))
"""


@pytest.mark.parametrize("owner", ["root", "nobody"])
def test_no_setid_file_reaches_the_host_through_a_writable_bind(owner):
    """FS-15 across a bind: in root mode writable binds are idmapped to the directory's
    owner, so a setuid bit set inside would be a live setuid binary on the host."""
    require_mode("root")
    work = tempfile.mkdtemp(prefix="safehouse-setid-")
    try:
        if owner == "nobody":
            os.chown(work, 65534, 65534)
        res = run_inside([PYTHON, "-c", SETID_ATTEMPTS], ["--workdir", work])
        assert res.rc == 0, res.stderr
        import json
        got = json.loads(res.stdout)
        assert got == {"chmod-4755": "EPERM", "chmod-2755": "EPERM", "open-creat-4755": "EPERM",
                       "mknod-reg-4755": "EPERM"}, got
        plain = os.path.join(work, "plain")
        st = os.stat(plain)
        # The file exists on the host, owned by the directory's owner, without setid bits.
        assert st.st_uid == (0 if owner == "root" else 65534)
        assert st.st_mode & (stat.S_ISUID | stat.S_ISGID) == 0
        for name in os.listdir(work):
            assert os.lstat(os.path.join(work, name)).st_mode & (stat.S_ISUID | stat.S_ISGID) == 0, name
        # Positive control: the same attempts succeed outside any sandbox.
        ctl = tempfile.mkdtemp(prefix="safehouse-setid-ctl-")
        out = subprocess.run([PYTHON, "-c", SETID_ATTEMPTS], cwd=ctl, capture_output=True, text=True,
                             timeout=30)
        assert json.loads(out.stdout) == {k: "ok" for k in got}, out.stdout
        subprocess.run(["rm", "-rf", ctl])
    finally:
        subprocess.run(["rm", "-rf", work])


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_hidden_path_beneath_a_bind_is_hidden(mode):
    require_mode(mode)
    data = world_tmpdir("safehouse-hide-")
    try:
        for name, text in [("secret", "s3cret"), ("public", "hello")]:
            with open(os.path.join(data, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(data, name), 0o644)
        os.mkdir(os.path.join(data, "keys"))
        os.chmod(os.path.join(data, "keys"), 0o755)
        policy = os.path.join(data, "policy.toml")
        with open(policy, "w") as f:
            f.write(f'version = 1\n[filesystem]\nread_only = [{{ host = "{data}", path = "/input" }}]\n'
                    f'hidden = ["/input/secret", "/input/keys", "/etc/hostname", "/no/such/path"]\n')
        os.chmod(policy, 0o644)
        script = ("import os\n"
                  "for p in ['/input/public', '/input/secret', '/etc/hostname']:\n"
                  "    try: print(p, open(p).read().strip())\n"
                  "    except OSError as e: print(p, e.errno)\n"
                  "try: print('/input/keys', os.listdir('/input/keys'))\n"
                  "except OSError as e: print('/input/keys', e.errno)\n")
        res = run_inside([PYTHON, "-c", script], ["--policy", policy], mode=mode)
        assert res.rc == 0, res.stderr
        import errno
        lines = dict(line.split(" ", 1) for line in res.stdout.splitlines())
        assert lines == {"/input/public": "hello", "/input/secret": str(errno.EACCES),
                         "/etc/hostname": str(errno.EACCES), "/input/keys": str(errno.EACCES)}, lines
    finally:
        subprocess.run(["rm", "-rf", data])


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_sigkill_of_run_leaves_nothing_running(mode):
    """PR-11 with the harshest stop: `safehouse run` itself SIGKILLed. The sandbox's init
    has a parent-death signal (re-armed after its credential change), so the namespace dies;
    the orphaned cgroup is swept by the next run."""
    require_mode(mode)
    require_binary()
    # The marker only exists once joined inside, so `safehouse run`'s own argv never matches.
    tag = secrets.token_hex(5)
    marker = f"sigkill-{tag}"
    p = subprocess.Popen(safehouse_argv([], ["sh", "-c", 'exec "$0" -c "import os, time; os.fork(); time.sleep(300)" "$1-$2"',
                                             PYTHON, "sigkill", tag], mode),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=child_env(mode))
    try:
        deadline = time.monotonic() + 10
        from conftest import procs_with_marker
        while time.monotonic() < deadline and not procs_with_marker(marker):
            time.sleep(0.05)
        assert procs_with_marker(marker), "the sandboxed command never started"
        # kill the `safehouse run` process (setpriv execs it in rootless mode: same pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=5)
        assert not wait_gone(marker, timeout=5), "sandboxed processes survived the SIGKILL of run"
        if mode == "root":
            leftovers = [d for d in safehouse_cgroup_dirs() if f"/run-{p.pid}-" in d]
            assert leftovers, "expected the killed run's cgroup to be left for the sweep"
            assert run_inside(["true"]).rc == 0
            leftovers = [d for d in safehouse_cgroup_dirs() if f"/run-{p.pid}-" in d]
            assert leftovers == [], f"the next run did not sweep {leftovers}"
    finally:
        if p.poll() is None:
            p.kill()
