"""The in-sandbox driver on its own (crates/interp/driver/driver.py, started the way the
daemon starts it: `python3 -I -u -c BOOT` with its source on stdin), with real kernels:
the protocol's answers to bad input, a caller giving up mid-run (interrupt by request),
restart and removal while code runs, and that nothing the code prints reaches the
protocol stream."""
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().parents[2] / "crates/interp/driver/driver.py"
BOOT = ("import sys;b=sys.stdin.buffer;n=int(b.readline());"
        "exec(compile(b.read(n),'safehouse-interp','exec'),{'__name__':'__main__'})")


class Driver:
    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="interp-driver-")
        self.p = subprocess.Popen(["/usr/bin/python3", "-I", "-u", "-c", BOOT], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.home,
                                  env={"PATH": "/usr/bin:/bin", "HOME": self.home,
                                       "SAFEHOUSE_INTERP_DIR": os.path.join(self.home, "rt")})
        src = DRIVER.read_bytes()
        self.p.stdin.write(b"%d\n" % len(src) + src)
        self.p.stdin.flush()
        self.ready = json.loads(self.p.stdout.readline())
        self.n = 0
        self.pending = {}

    def send(self, req=None, raw=None):
        if raw is None:
            self.n += 1
            req["id"] = self.n
            raw = json.dumps(req).encode() + b"\n"
        self.p.stdin.write(raw)
        self.p.stdin.flush()
        return self.n

    def events(self, rid, timeout=120):
        """Every event of request RID up to its end (others are kept for later)."""
        out = self.pending.pop(rid, [])
        deadline = time.monotonic() + timeout
        while not out or out[-1]["type"] not in ("end", "fail"):
            assert time.monotonic() < deadline, f"no end for {rid}: {out}"
            e = json.loads(self.p.stdout.readline())
            if e.get("id") == rid:
                out.append(e)
            else:
                self.pending.setdefault(e.get("id"), []).append(e)
        return out

    def call(self, **req):
        return self.events(self.send(req))

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()


@pytest.fixture(scope="module")
def drv():
    d = Driver()
    yield d
    d.close()


def test_ready_and_bad_requests(drv):
    assert drv.ready["type"] == "ready" and drv.ready["languages"] == ["python", "bash"], drv.ready
    drv.send(raw=b"this is not json\n")
    drv.send(raw=b"[1, 2]\n")
    (e,) = drv.call(op="fly")
    assert e == {"id": drv.n, "type": "fail", "code": "invalid", "message": "unknown op 'fly'"}
    (e,) = drv.call(op="execute", code=7)
    assert e["code"] == "invalid" and "code must be a string" in e["message"], e
    (e,) = drv.call(op="execute", code="1", language="cobol")
    assert e["code"] == "invalid" and "cobol" in e["message"], e
    (e,) = drv.call(op="execute", code="1", context="nope")
    assert e["code"] == "not_found", e
    (e,) = drv.call(op="create", language="bash", cwd="/does/not/exist")
    assert e["code"] == "invalid" and "/does/not/exist" in e["message"], e
    # The two bad lines were answered without an id.
    assert [x["code"] for x in drv.pending.pop(None)] == ["invalid", "invalid"]


def test_what_code_writes_never_reaches_the_protocol(drv):
    """fd 1 of the driver and its kernels is /dev/null; the stream is a descriptor of its own."""
    evs = drv.call(op="execute", code="import os\nos.write(1, b'{\"id\": 999, \"type\": \"end\"}\\n')\nprint('ok')")
    kinds = [e["type"] for e in evs]
    assert kinds[-2:] == ["number_of_executions", "end"] and set(kinds[:-2]) == {"stdout"}, evs
    assert "ok\n" in "".join(e["text"] for e in evs if e["type"] == "stdout"), evs
    assert 999 not in drv.pending


def test_a_caller_giving_up_interrupts_its_run(drv):
    rid = drv.send({"op": "execute", "code": "import time\nkept = 5\nfor _ in range(600): time.sleep(0.1)"})
    time.sleep(1.5)
    (e,) = drv.call(op="interrupt", request=rid)
    assert e["type"] == "end", e
    evs = drv.events(rid, timeout=30)
    assert [x.get("name") for x in evs if x["type"] == "error"] == ["KeyboardInterrupt"], evs
    assert drv.call(op="execute", code="kept")[0]["text"] == "5"


def test_restart_and_remove_while_code_runs(drv):
    (ctx,) = [e["context"] for e in drv.call(op="create", language="python") if e["type"] == "context"]
    drv.call(op="execute", context=ctx["id"], code="v = 1")
    rid = drv.send({"op": "execute", "context": ctx["id"], "code": "import time\ntime.sleep(60)"})
    time.sleep(1)
    restarted = drv.call(op="restart", context=ctx["id"])
    assert restarted[0]["context"]["state"] == "running", restarted
    evs = drv.events(rid, timeout=30)
    assert evs[0]["name"] == "DeadKernelError", evs
    evs = drv.call(op="execute", context=ctx["id"], code="v")
    assert evs[0]["name"] == "NameError", evs
    sh = [e["context"] for e in drv.call(op="create", language="bash") if e["type"] == "context"][0]
    rid = drv.send({"op": "execute", "context": sh["id"], "code": "sleep 60"})
    time.sleep(0.5)
    assert drv.call(op="remove", context=sh["id"])[-1]["type"] == "end"
    evs = drv.events(rid, timeout=30)
    assert evs[0]["name"] == "DeadKernelError", evs
    ids = [c["id"] for c in drv.call(op="list")[0]["contexts"]]
    assert sh["id"] not in ids and ctx["id"] in ids


def test_bash_output_edges(drv):
    (sh,) = [e["context"] for e in drv.call(op="create", language="bash") if e["type"] == "context"]
    evs = drv.call(op="execute", context=sh["id"], code="printf 'no newline'")
    assert "".join(e["text"] for e in evs if e["type"] == "stdout") == "no newline", evs
    big = drv.call(op="execute", context=sh["id"], code="head -c 300000 /dev/zero | tr '\\0' x")
    assert sum(len(e["text"]) for e in big if e["type"] == "stdout") == 300000
    evs = drv.call(op="execute", context=sh["id"], code="cat")  # stdin is /dev/null, not the protocol
    assert evs[-1]["type"] == "end" and not [e for e in evs if e["type"] == "error"], evs
    evs = drv.call(op="execute", context=sh["id"], code="exit 4")
    assert evs[0]["name"] == "DeadKernelError" and evs[0]["exit_code"] == 4, evs
