"""Local mode of the binary (`safehouse local`, and every client command when neither
SAFEHOUSE_URL nor SAFEHOUSE_API_KEY is set): one per-user daemon however many clients
start at once, a stale one replaced, a pid that is not ours left alone."""
import json
import os
import signal
import subprocess
import time

import pytest

from e2e.support import BIN, free_port

from .support import clean_env, local_state, pid_alive, rmtree, run, shared_tmpdir, stop_local, wait_gone

STARTED = "safehouse: started a local daemon at http://127.0.0.1:"


@pytest.fixture
def local():
    """(env naming a fresh data dir, the data dir); the daemon is stopped afterwards."""
    if not BIN:
        pytest.skip("safehouse binary not built")
    data = shared_tmpdir("safehouse-local-")
    env = clean_env(SAFEHOUSE_DATA_DIR=str(data))
    try:
        yield env, data
    finally:
        stop_local(BIN, env, data)
        rmtree(data)


def start(env):
    r = run([BIN, "local", "start", "--json"], env)
    assert r.returncode == 0, r
    return json.loads(r.stdout), r.stderr


def test_concurrent_first_calls_start_one_daemon(local):
    env, data = local
    procs = [subprocess.Popen([BIN, "local", "start", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pids = {json.loads(out)["pid"] for out, _ in outs}
    assert len(pids) == 1, outs
    assert sum(err.count(STARTED) for _, err in outs) == 1, [err for _, err in outs]
    assert [json.loads(out)["started"] for out, _ in outs].count(True) == 1, outs
    assert local_state(data)["pid"] == pids.pop()


def test_client_commands_use_the_local_daemon(local):
    env, data = local
    r = run([BIN, "sandbox", "create"], env)
    assert r.returncode == 0 and r.stderr.count(STARTED) == 1, r
    sid = r.stdout.strip()
    r = run([BIN, "exec", sid, "--", "sh", "-c", "echo hi from $(hostname)"], env)
    assert r.returncode == 0 and r.stdout == "hi from safehouse\n" and STARTED not in r.stderr, r
    r = run([BIN, "local", "status", "--json"], env)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == local_state(data)["pid"], r
    r = run([BIN, "sandbox", "kill", sid], env)
    assert r.returncode == 0, r


def test_a_key_without_a_url_means_a_daemon_you_run(local):
    """SAFEHOUSE_API_KEY alone keeps the documented default URL: no local daemon appears."""
    env, data = local
    r = run([BIN, "sandbox", "ls"], {**env, "SAFEHOUSE_API_KEY": "sh_" + "x" * 32,
                                     "SAFEHOUSE_URL": f"http://127.0.0.1:{free_port()}"})
    assert r.returncode == 1 and "cannot reach the daemon" in r.stderr and STARTED not in r.stderr, r
    assert local_state(data) is None


def test_a_dead_daemon_is_replaced(local):
    env, data = local
    first, _ = start(env)
    os.kill(first["pid"], signal.SIGKILL)
    assert wait_gone(first["pid"])
    second, err = start(env)
    assert second["pid"] != first["pid"] and second["started"] and err.count(STARTED) == 1, (first, second, err)


def test_a_wedged_daemon_is_replaced(local):
    """Its pid lives but it no longer answers: stopped (SIGTERM, then SIGKILL), replaced."""
    env, data = local
    first, _ = start(env)
    os.kill(first["pid"], signal.SIGSTOP)
    try:
        second, err = start(env)
        assert second["pid"] != first["pid"] and err.count(STARTED) == 1, err
        assert wait_gone(first["pid"]), "the wedged daemon was stopped"
    finally:
        if pid_alive(first["pid"]):
            os.kill(first["pid"], signal.SIGKILL)


def test_a_recorded_pid_that_is_not_ours_is_left_alone(local):
    env, data = local
    other = subprocess.Popen(["sleep", "60"])
    try:
        (data / "local").mkdir(mode=0o700, exist_ok=True)
        (data / "local" / "daemon.json").write_text(json.dumps({
            "pid": other.pid, "url": f"http://127.0.0.1:{free_port()}", "data_dir": str(data),
            "key_file": str(data / "admin.key"), "log": str(data / "local" / "daemon.log")}))
        d, err = start(env)
        assert d["pid"] != other.pid and err.count(STARTED) == 1, (d, err)
        time.sleep(0.2)
        assert other.poll() is None, "an unrelated process with the recorded pid was not signalled"
    finally:
        other.kill()
        other.wait()


def test_a_daemon_that_cannot_start_is_reported_with_its_log(local):
    env, data = local
    (data / "audit").write_text("not a directory")  # the daemon cannot make its audit dir
    r = run([BIN, "local", "start"], env)
    assert r.returncode == 1 and "could not start the local daemon" in r.stderr, r
    assert str(data / "local" / "daemon.log") in r.stderr, r


def test_a_data_dir_too_long_for_socket_paths_is_refused_with_the_fix(local):
    env, data = local
    deep = data / ("d" * 70)
    r = run([BIN, "local", "start"], {**env, "SAFEHOUSE_DATA_DIR": str(deep)})
    assert r.returncode == 1 and "set SAFEHOUSE_DATA_DIR to a shorter path" in r.stderr, r
    assert not (deep / "local" / "daemon.json").exists()


def test_serve_refuses_a_data_dir_too_long_for_socket_paths(tmp_path):
    """The daemon itself (not only local mode) refuses at start, naming the flag, instead of
    answering every create with an internal error."""
    deep = tmp_path / ("d" * 70)
    r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(deep)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "pass a shorter --data-dir" in r.stderr, r
    assert f"{len(str(deep))} bytes long" in r.stderr and "at most 56 bytes" in r.stderr, r
    assert not deep.exists()
