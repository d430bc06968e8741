"""Background processes: start, list, signal, stdin, and the attach WebSocket (replay of
earlier output, stdin frames, eof, signal and resize frames, PTYs)."""
import json
import os
import time

import pytest

from .support import WsRejected, wait_for


def find(api, sid, pid):
    return next((p for p in api.processes(sid) if p["pid"] == pid), None)


def test_background_list_signal_attach_replay(api, sandbox):
    sid = sandbox["id"]
    pid = api.start(sid, ["sh", "-c", "echo before; echo warn >&2; exec sleep 30"])
    p = wait_for(lambda: find(api, sid, pid), 5)
    assert p and p["running"] is True and p["pty"] is False, api.processes(sid)
    assert p["cmd"] == ["sh", "-c", "echo before; echo warn >&2; exec sleep 30"], p
    time.sleep(0.5)  # the output is produced before anyone attaches
    with api.attach(sid, pid) as ws:
        got = ws.read_until(b"before\n")
        r = api.post(f"/v1/sandboxes/{sid}/processes/{pid}/signal", {"signal": "SIGTERM"})
        assert r.status == 204, r
        rest = ws.collect(timeout=10)
    assert got.stdout + rest.stdout == b"before\n", (got, rest)
    assert b"warn\n" in got.stderr + rest.stderr, (got, rest)
    envelope = {k: rest.exit.pop(k) for k in ("wall_ms", "cpu_ms", "peak_memory_bytes")}
    assert rest.exit == {"type": "exit", "exit_code": None, "signal": 15}, rest
    assert envelope["wall_ms"] > 0 and envelope["peak_memory_bytes"] > 0, envelope


def test_exited_processes_stay_listed(api, sandbox):
    """The list reports `running: false` with `exit_code`/`signal`: exited processes stay in it."""
    sid = sandbox["id"]
    pid = api.start(sid, ["sh", "-c", "exit 4"])
    killed = api.start(sid, ["sleep", "30"])
    assert api.post(f"/v1/sandboxes/{sid}/processes/{killed}/signal", {"signal": 9}).status == 204
    time.sleep(1)
    procs = {p["pid"]: p for p in api.processes(sid)}
    assert pid in procs and killed in procs, procs
    assert (procs[pid]["running"], procs[pid]["exit_code"], procs[pid].get("signal")) == (False, 4, None), procs
    assert (procs[killed]["running"], procs[killed].get("exit_code"), procs[killed]["signal"]) == (False, None, 9)


def test_attach_after_exit_replays_and_reports_exit(api, sandbox):
    sid = sandbox["id"]
    pid = api.start(sid, ["sh", "-c", "echo done; exit 7"])
    time.sleep(1)  # long exited by then
    with api.attach(sid, pid) as ws:
        out = ws.collect(timeout=10)
    assert out.stdout == b"done\n" and out.exit["exit_code"] == 7, out


def test_attach_stdin_eof(api, sandbox):
    sid = sandbox["id"]
    pid = api.start(sid, ["cat"])
    with api.attach(sid, pid) as ws:
        ws.send_stdin(b"ping\n")
        ws.read_until(b"ping\n")
        ws.send_stdin(b"\x00\xffbinary\n")
        ws.send_json({"type": "eof"})
        out = ws.collect(timeout=10)
    assert out.stdout == b"\x00\xffbinary\n" and out.exit["exit_code"] == 0, out


def test_stdin_route(api, sandbox):
    sid = sandbox["id"]
    pid = api.start(sid, ["sh", "-c", "cat; echo end"])
    base = f"/v1/sandboxes/{sid}/processes/{pid}"
    r = api.request("POST", f"{base}/stdin", b"one\n", raw=True)
    assert r.status == 204, r
    r = api.request("POST", f"{base}/stdin", b"two\n", raw=True, query={"eof": "1"})
    assert r.status == 204, r
    with api.attach(sid, pid) as ws:
        out = ws.collect(timeout=10)
    assert out.stdout == b"one\ntwo\nend\n" and out.exit["exit_code"] == 0, out


def test_attach_signal_frame(api, sandbox):
    sid = sandbox["id"]
    pid = api.start(sid, ["sh", "-c", "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 0.1; done"])
    with api.attach(sid, pid) as ws:
        ws.read_until(b"ready\n")
        ws.send_json({"type": "signal", "signal": 2})
        out = ws.collect(timeout=10)
    assert b"got-int" in out.stdout and out.exit["exit_code"] == 9, out


def test_pty_size_and_resize(api, sandbox):
    sid = sandbox["id"]
    pid = api.start(sid, ["sh", "-c", "tty; stty size; read x; stty size"], pty={"rows": 33, "cols": 101})
    assert find(api, sid, pid)["pty"] is True
    with api.attach(sid, pid) as ws:
        got = ws.read_until(b"33 101")
        ws.send_json({"type": "resize", "rows": 40, "cols": 120})
        time.sleep(0.2)
        ws.send_stdin(b"\n")
        out = ws.collect(timeout=10)
    text = (got.stdout + out.stdout).decode(errors="replace")
    assert "/dev/pts/" in text and "40 120" in text, text
    assert out.exit["exit_code"] == 0, out


def test_resize_without_a_terminal_is_refused_by_name(api, sandbox):
    sid = sandbox["id"]
    pid = api.start(sid, ["sh", "-c", "echo ready; read x; echo done"])
    with api.attach(sid, pid) as ws:
        ws.read_until(b"ready\n")
        ws.send_json({"type": "resize", "rows": 40, "cols": 120})
        kind, data = ws.recv(timeout=10)
        frame = json.loads(data)
        assert kind == "text" and frame["type"] == "error" and frame["code"] == "invalid_request", frame
        assert "no terminal" in frame["message"] and "pty" in frame["message"], frame
        # The refusal leaves the process and the connection as they were.
        ws.send_stdin(b"\n")
        out = ws.collect(timeout=10)
    assert b"done" in out.stdout and out.exit["exit_code"] == 0, out


def test_bad_process_requests(api, sandbox):
    sid = sandbox["id"]
    r = api.post(f"/v1/sandboxes/{sid}/processes", {"cmd": ["true"], "pty": {"rows": 0, "cols": 80}})
    assert r.status == 400, r
    r = api.post(f"/v1/sandboxes/{sid}/processes/999999/signal", {"signal": "SIGTERM"})
    assert r.status == 404, r
    pid = api.start(sid, ["sleep", "5"])
    r = api.post(f"/v1/sandboxes/{sid}/processes/{pid}/signal", {"signal": "SIGNOPE"})
    assert r.status == 400, r
    r = api.post(f"/v1/sandboxes/{sid}/processes/{pid}/signal", {"signal": 0})
    assert r.status == 400, r
    # attach without the upgrade is refused, not hung.
    r = api.get(f"/v1/sandboxes/{sid}/processes/{pid}/attach", timeout=10)
    assert 400 <= r.status < 500, r
    with pytest.raises(WsRejected) as e:
        api.attach(sid, 999999)
    assert e.value.status == 404
    api.post(f"/v1/sandboxes/{sid}/processes/{pid}/signal", {"signal": 9})



def test_a_stopped_agent_costs_its_caller_a_deadline_and_the_sandbox_still_dies(api):
    """Every daemon→agent request has a deadline: with the sandbox's agent stopped (SIGSTOP
    from the host), a request that needs it answers 504 `agent_timeout` after the deadline
    instead of hanging, other sandboxes answer at once, the stall is reported as one
    `sandbox.stalled` event and its end as `sandbox.recovered`, and kill still works."""
    from .test_events import read_sse

    import signal as sig
    import time as t

    sb, other = api.create(timeout_s=120), api.create(timeout_s=120)
    try:
        sid = sb["id"]
        assert api.get(f"/v1/sandboxes/{sid}/processes").status == 200  # outside control: answers
        pid = api.info(sid)["pid"]
        os.kill(pid, sig.SIGSTOP)
        try:
            t0 = t.monotonic()
            r = api.get(f"/v1/sandboxes/{sid}/processes", timeout=60)
            took = t.monotonic() - t0
            assert r.status == 504 and r.error_code == "agent_timeout", r
            message = r.json()["error"]["message"]
            assert "did not answer within 10 s" in message and "kill" in message, r
            assert 9 <= took < 30, took
            assert api.get(f"/v1/sandboxes/{other['id']}/processes").status == 200
            os.kill(pid, sig.SIGCONT)
            assert api.get(f"/v1/sandboxes/{sid}/processes").status == 200
            _, events = read_sse(api, f"/v1/sandboxes/{sid}/events", timeout=20,
                                 on_event=lambda e: e.get("event") == "sandbox.recovered")
            kinds = [e["event"] for e in events if e["event"] in ("sandbox.stalled", "sandbox.recovered")]
            assert kinds == ["sandbox.stalled", "sandbox.recovered"], kinds
            os.kill(pid, sig.SIGSTOP)
        finally:
            api.kill(sid)  # the stopped agent dies too: kill does not need it
        assert api.info(sid)["state"] == "killed"
    finally:
        api.kill(other["id"])
