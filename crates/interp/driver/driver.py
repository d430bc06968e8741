"""safehouse's code-interpreter driver.

Runs inside a sandbox as an ordinary sandboxed process and manages the sandbox's kernels:
Python contexts are real Jupyter kernels (ipykernel, spoken to with jupyter_client over
unix sockets), bash contexts are one long-lived bash each. It speaks JSON lines with the
daemon: requests on stdin, events on the descriptor that was stdout when it started (fd 1
itself is pointed at /dev/null, so nothing a library prints can corrupt the stream).

Every request carries an `id`; every event answering it carries the same `id`, and the
last one is `{"type": "end"}` or `{"type": "fail", "code", "message"}`. The events of an
execution are the ones the `e2b-code-interpreter` SDK reads (`stdout`, `stderr`, `result`,
`error`, `number_of_executions`), so the daemon forwards them as they are.

Everything this program says is untrusted on the host side: the code it runs shares its
uid and can write to its stdout.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

PROTOCOL = 1
MAX_REQUEST = 64 << 20
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

_out = os.fdopen(os.dup(1), "wb", buffering=0)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 1)
_out_lock = threading.Lock()
RUNTIME = os.environ.get("SAFEHOUSE_INTERP_DIR") or "/tmp/.safehouse-interp"
MPL_CACHE = "/var/cache/matplotlib"


def emit(obj):
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)
    data = line.encode("utf-8", "replace") + b"\n"
    with _out_lock:
        _out.write(data)


def now_ns():
    return time.time_ns()


class Fail(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def dead_error(ctx, detail):
    return {
        "type": "error",
        "name": "DeadKernelError",
        "value": f"the kernel of context {ctx.id} ({ctx.language}) {detail}; its state is lost: "
        "restart the context to get a fresh kernel",
        "traceback": "",
        **ctx.exit_info(),
    }


# ------------------------------------------------------------------ python (Jupyter)

# Run silently in every new Python kernel: matplotlib figures become PNG through the inline
# backend (set by MPLBACKEND), and also chart data a client can redraw, under our own MIME
# type; the driver turns it into E2B's `chart`.
KERNEL_SETUP = r'''
def _safehouse_setup():
    import math
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        return f if math.isfinite(f) else None

    def scale(axis):
        try:
            return axis.get_scale()
        except Exception:
            return "unknown"

    def ticks(ax, which):
        axis = ax.xaxis if which == "x" else ax.yaxis
        try:
            locs = [num(t) for t in axis.get_ticklocs()]
            labels = [t.get_text() for t in axis.get_ticklabels()]
        except Exception:
            locs, labels = [], []
        return locs, labels

    def axes_chart(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        base = {"title": ax.get_title() or None, "x_label": ax.get_xlabel() or None,
                "y_label": ax.get_ylabel() or None, "x_unit": None, "y_unit": None}
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        if bars:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            elements = []
            for c in bars:
                group = c.get_label() or ""
                if group.startswith("_"):
                    group = ""
                for i, rect in enumerate(c.patches):
                    x = rect.get_x() + rect.get_width() / 2
                    label = labels[i] if i < len(labels) and labels[i] else str(num(x))
                    elements.append({"label": label, "group": group, "value": num(rect.get_height())})
            return {"type": "bar", **base, "elements": elements}
        lines = [ln for ln in ax.get_lines() if ln.get_visible()]
        scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
        if not lines and not scatters:
            return None
        xt, xl = ticks(ax, "x")
        yt, yl = ticks(ax, "y")
        point = {**base, "x_ticks": xt, "x_tick_labels": xl, "x_scale": scale(ax.xaxis),
                 "y_ticks": yt, "y_tick_labels": yl, "y_scale": scale(ax.yaxis)}
        elements = []
        if lines:
            for ln in lines:
                xs, ys = ln.get_xdata(), ln.get_ydata()
                label = ln.get_label()
                elements.append({"label": "" if label.startswith("_") else label,
                                 "points": [[num(x), num(y)] for x, y in zip(xs, ys)]})
            return {"type": "line", **point, "elements": elements}
        for c in scatters:
            label = c.get_label()
            elements.append({"label": "" if label.startswith("_") else label,
                             "points": [[num(x), num(y)] for x, y in c.get_offsets()]})
        return {"type": "scatter", **point, "elements": elements}

    def chart_of(fig):
        try:
            charts = [c for c in (axes_chart(a) for a in fig.get_axes() if a.get_visible()) if c]
            if not charts:
                return None
            if len(charts) == 1:
                return charts[0]
            title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else None
            return {"type": "superchart", "title": title, "elements": charts}
        except Exception:
            return None

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("application/vnd.safehouse.chart+json")
        print_method = ObjectName("_repr_safehouse_chart_")
        _return_type = dict

        # Not a registered type printer: activating the inline backend pops every
        # formatter's printer for Figure.
        def lookup(self, obj):
            for cls in type(obj).__mro__:
                if (cls.__module__, cls.__name__) == ("matplotlib.figure", "Figure"):
                    return chart_of
            raise KeyError(type(obj))

    ip = get_ipython()
    f = ChartFormatter(parent=ip.display_formatter)
    ip.display_formatter.formatters[f.format_type] = f

_safehouse_setup()
del _safehouse_setup
'''

ENV_PUSH = (
    "__import__('IPython').get_ipython().__dict__.setdefault('_safehouse_env', []).append("
    "{{k: __import__('os').environ.get(k) for k in {keys!r}}});"
    "__import__('os').environ.update({env!r})"
)
ENV_POP = (
    "[(__import__('os').environ.pop(k, None) if v is None else __import__('os').environ.__setitem__(k, v))"
    " for k, v in __import__('IPython').get_ipython().__dict__['_safehouse_env'].pop().items()]"
)

MIME = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "application/vnd.safehouse.chart+json": "chart",
}


BASE64 = ("png", "jpeg", "pdf")


def result_of(data, main):
    out = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in data.items():
        key = MIME.get(mime)
        if key in BASE64 and isinstance(value, str):
            value = "".join(value.split())  # IPython's base64 ends with a newline
        if key:
            out[key] = value
        else:
            extra[mime] = value
    if extra:
        out["extra"] = extra
    return out


# How a Python kernel starts: ipykernel's launcher, with the IOPub pipe for forked
# children off. That pipe is a zmq TCP bind, and libzmq resolves a TCP bind address as a
# NIC name first, with getifaddrs, which needs a netlink socket the sandbox refuses
# (EAFNOSUPPORT, KS-02); libzmq aborts on that errno. Without the pipe the kernel binds
# nothing but its unix sockets; a forked child's sys.stdout is dropped (its fd-level
# output is still captured).
KERNEL_BOOT = r"""
import sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
import ipykernel.iostream as _io
_init = _io.IOPubThread.__init__
def _no_pipe(self, socket, pipe=False):
    _init(self, socket, pipe=False)
_io.IOPubThread.__init__ = _no_pipe
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


def kernel_specs():
    """A kernelspec directory with `safehouse-python`: this Python, KERNEL_BOOT."""
    from jupyter_client.kernelspec import KernelSpecManager

    base = os.path.join(RUNTIME, "kernels")
    spec = os.path.join(base, "safehouse-python")
    os.makedirs(spec, mode=0o700, exist_ok=True)
    with open(os.path.join(spec, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-c", KERNEL_BOOT, "-f", "{connection_file}"],
                   "display_name": "Python 3 (safehouse)", "language": "python",
                   "interrupt_mode": "signal"}, f)
    return KernelSpecManager(kernel_dirs=[base])


class PythonContext:
    language = "python"
    specs = None

    def __init__(self, cid, cwd, env, preload):
        self.id, self.cwd, self.env, self.preload = cid, cwd, env, preload
        self.lock = threading.Lock()
        self.km = self.shell = self.iopub = None
        self.dead = None
        self.timed_out = False
        self.start()

    def start(self):
        import zmq
        from jupyter_client import KernelManager
        from jupyter_client.session import Session

        os.makedirs(RUNTIME, mode=0o700, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        base = os.path.join(RUNTIME, "k" + tag)
        if PythonContext.specs is None:
            PythonContext.specs = kernel_specs()
        km = KernelManager(kernel_name="safehouse-python", kernel_spec_manager=PythonContext.specs,
                           transport="ipc", ip=base)
        km.connection_file = base + ".json"
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        # The template's prebuilt font cache (templates/code-interpreter), if it is there.
        if "MPLCONFIGDIR" not in env and os.access(MPL_CACHE, os.W_OK):
            env["MPLCONFIGDIR"] = MPL_CACHE
        env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        env.pop("SAFEHOUSE_INTERP_DIR", None)
        self.log = base + ".log"
        try:
            with open(self.log, "wb") as log:
                # No history database: its SQLite writes cost more than the rest of a small cell.
                km.start_kernel(cwd=self.cwd, env=env, stdout=log, stderr=log, stdin=_null,
                                extra_arguments=["--HistoryManager.enabled=False"])
        except FileNotFoundError as e:
            raise Fail("invalid", f"cannot start a python kernel in {self.cwd!r}: {e}") from None
        except Exception as e:
            raise Fail("unavailable", f"cannot start a python kernel: {e}") from None
        # jupyter_client launches the kernel and signs messages; the sockets are our own,
        # plain and synchronous (its blocking client runs an event loop per call).
        self.km = km
        self.session = Session(key=km.session.key, signature_scheme=km.session.signature_scheme,
                               username="safehouse")
        zctx = zmq.Context.instance()
        self.shell = zctx.socket(zmq.DEALER)
        self.iopub = zctx.socket(zmq.SUB)
        for sock in (self.shell, self.iopub):
            sock.linger = 0
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.shell.connect(f"ipc://{base}-{km.shell_port}")
        self.iopub.connect(f"ipc://{base}-{km.iopub_port}")
        self.poller = zmq.Poller()
        self.poller.register(self.iopub, zmq.POLLIN)
        self.poller.register(self.shell, zmq.POLLIN)
        if not self.wait_ready(60):
            info = self.exit_info()
            self.stop()
            why = f"exited ({info})" if info else "did not answer within 60s"
            raise Fail("unavailable", f"the python kernel {why}; its last words: {log_tail(self.log)!r}")
        self.dead = None
        setup = KERNEL_SETUP
        if self.preload:
            setup += "".join(f"\ntry:\n    import {m}\nexcept Exception:\n    pass" for m in self.preload)
            roots = sorted({m.split(".")[0] for m in self.preload})
            setup += "\nfor _n in " + repr(roots) + ":\n    globals().pop(_n, None)\ndel _n"
        self.silent(setup)

    def wait_ready(self, timeout):
        """A kernel_info reply on shell and any message on iopub (so the subscription is live)."""
        deadline = time.monotonic() + timeout
        shell_ok = iopub_ok = False
        while time.monotonic() < deadline and not (shell_ok and iopub_ok):
            # Again until iopub hears one too: a subscription that joins late misses
            # the status messages of the first request.
            self.session.send(self.shell, "kernel_info_request", {})
            until = time.monotonic() + 0.2
            while time.monotonic() < until and not (shell_ok and iopub_ok):
                ready = dict(self.poller.poll(50))
                if self.shell in ready:
                    self.recv(self.shell)
                    shell_ok = True
                if self.iopub in ready:
                    self.recv(self.iopub)
                    iopub_ok = True
            if not self.alive():
                return False
        return shell_ok and iopub_ok

    def recv(self, sock):
        import zmq

        try:
            _, msg = self.session.recv(sock, mode=zmq.NOBLOCK)
        except zmq.Again:
            return None
        except Exception:  # a message that does not verify or decode
            return None
        return msg

    def alive(self):
        return self.km is not None and self.km.is_alive()

    def exit_info(self):
        p = getattr(self.km, "provisioner", None)
        proc = getattr(p, "process", None)
        code = proc.poll() if proc is not None else None
        if code is None:
            return {}
        return {"signal": -code} if code < 0 else {"exit_code": code}

    def request(self, code, silent):
        msg = self.session.send(self.shell, "execute_request", {
            "code": code, "silent": silent, "store_history": not silent, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        return msg["header"]["msg_id"]

    def silent(self, code, timeout=60):
        msg_id = self.request(code, True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = dict(self.poller.poll(100))
            if self.iopub in ready:
                self.recv(self.iopub)
            if self.shell in ready:
                msg = self.recv(self.shell)
                if msg and msg["parent_header"].get("msg_id") == msg_id:
                    return msg["content"].get("status") == "ok"
            elif not ready and not self.alive():
                return False
        return False

    def stop(self):
        for name in ("shell", "iopub"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(0)
                setattr(self, name, None)
        if self.km is not None:
            try:
                self.km.shutdown_kernel(now=True)
            except Exception:
                pass
            for path in (self.km.connection_file,):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        self.km = None

    def interrupt(self):
        if self.alive():
            self.km.interrupt_kernel()

    def kill(self):
        """SIGKILL to the kernel only (safe from any thread): a run in progress sees it die."""
        proc = getattr(getattr(self.km, "provisioner", None), "process", None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def execute(self, rid, code, env, timeout):
        if not self.alive():
            emit({"id": rid, **dead_error(self, self.dead or "is not running")})
            return
        if env:
            self.silent(ENV_PUSH.format(keys=sorted(env), env=env))
        try:
            self.run(rid, code, timeout)
        finally:
            if env and self.alive():
                self.silent(ENV_POP)

    def run(self, rid, code, timeout):
        msg_id = self.request(code, False)
        idle = replied = False
        count = None
        deadline = time.monotonic() + timeout if timeout else None
        interrupted_at = None
        while not (idle and replied):
            wait = 100
            if deadline is not None and interrupted_at is None:
                wait = max(0, min(wait, int((deadline - time.monotonic()) * 1000) + 1))
            try:
                ready = dict(self.poller.poll(wait))
            except Exception:  # the sockets were closed under us: a restart or a removal
                emit({"id": rid, **dead_error(self, "was restarted or removed while running this code")})
                return
            if self.iopub in ready:
                msg = self.recv(self.iopub)
                if msg and msg["parent_header"].get("msg_id") == msg_id:
                    idle = self.on_iopub(rid, msg, interrupted_at is not None, timeout) or idle
            if self.shell in ready:
                msg = self.recv(self.shell)
                if msg and msg["parent_header"].get("msg_id") == msg_id:
                    replied = True
                    count = msg["content"].get("execution_count")
            if ready:
                continue
            if not self.alive():
                self.dead = "died while running code"
                emit({"id": rid, **dead_error(self, "died while running this code")})
                return
            now = time.monotonic()
            if deadline is not None and interrupted_at is None and now >= deadline:
                interrupted_at = now
                self.interrupt()
            elif interrupted_at is not None and now - interrupted_at > 3:
                # The code did not stop on SIGINT (a C loop ignoring it): a fresh kernel.
                self.stop()
                try:
                    self.start()
                    detail = "and was restarted: its state is lost"
                except Fail as e:
                    self.dead = f"did not stop on interrupt and could not be restarted ({e.message})"
                    detail = "and could not be restarted: restart the context"
                emit({"id": rid, "type": "error", "name": "TimeoutError",
                      "value": f"the code ran past its timeout of {timeout:g}s and did not stop when "
                      f"interrupted; the kernel was stopped {detail}", "traceback": ""})
                return
        if count is not None:  # last, as E2B's server sends it
            emit({"id": rid, "type": "number_of_executions", "execution_count": count})

    def on_iopub(self, rid, msg, interrupted, timeout):
        kind, c = msg["msg_type"], msg["content"]
        if kind == "stream":
            name = "stderr" if c.get("name") == "stderr" else "stdout"
            emit({"id": rid, "type": name, "text": c.get("text", ""), "timestamp": now_ns()})
        elif kind in ("execute_result", "display_data"):
            emit({"id": rid, **result_of(c.get("data", {}), kind == "execute_result")})
        elif kind == "error":
            tb = ANSI.sub("", "\n".join(c.get("traceback", [])))
            if interrupted and c.get("ename") == "KeyboardInterrupt":
                emit({"id": rid, "type": "error", "name": "TimeoutError",
                      "value": f"the code ran past its timeout of {timeout:g}s and was interrupted; "
                      "the context keeps its state", "traceback": tb})
            else:
                emit({"id": rid, "type": "error", "name": c.get("ename", ""), "value": c.get("evalue", ""),
                      "traceback": tb})
        elif kind == "status" and c.get("execution_state") == "idle":
            return True
        return False


# ------------------------------------------------------------------ bash

class BashContext:
    language = "bash"

    def __init__(self, cid, cwd, env, _preload):
        self.id, self.cwd, self.env = cid, cwd, env
        self.lock = threading.Lock()
        self.proc = None
        self.dead = None
        self.start()

    def start(self):
        os.makedirs(RUNTIME, mode=0o700, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env)
        env.pop("SAFEHOUSE_INTERP_DIR", None)
        try:
            self.proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=self.cwd, env=env, start_new_session=True)
        except FileNotFoundError as e:
            raise Fail("invalid", f"cannot start bash in {self.cwd!r}: {e}") from None
        self.dead = None
        self.chunks = []
        self.cond = threading.Condition()
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            threading.Thread(target=self.pump, args=(self.proc, stream, name), daemon=True).start()
        self.send("trap ':' INT\n")

    def pump(self, proc, stream, name):
        fd = stream.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            with self.cond:
                if proc is self.proc:
                    self.chunks.append((name, data))
                    self.cond.notify_all()
            if not data:
                return

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def exit_info(self):
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return {}
        return {"signal": -code} if code < 0 else {"exit_code": code}

    def stop(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()

    def interrupt(self):
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except OSError:
                pass

    def kill(self):
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def execute(self, rid, code, env, timeout):
        if not self.alive():
            emit({"id": rid, **dead_error(self, self.dead or "is not running")})
            return
        tok = uuid.uuid4().hex
        cell = os.path.join(RUNTIME, f"cell-{tok}.sh")
        with open(cell, "w") as f:
            f.write(code + "\n")
        exports = "".join(f"export {k}={shquote(v)}; " for k, v in (env or {}).items() if valid_name(k))
        saved = "".join(f"__sh_{k}=${{{k}-}}; " for k in (env or {}) if valid_name(k))
        restore = "".join(f"export {k}=\"$__sh_{k}\"; " for k in (env or {}) if valid_name(k))
        self.send(f"{saved}{exports}source {cell} < /dev/null; __sh_rc=$?; {restore}rm -f {cell}; "
                  f"printf '\\n{tok} %s\\n' \"$__sh_rc\"; printf '\\n{tok}\\n' >&2\n")
        marker = tok.encode()
        pending = {"stdout": b"", "stderr": b""}
        done = {"stdout": None, "stderr": None}
        deadline = time.monotonic() + timeout if timeout else None
        interrupted_at = None
        while done["stdout"] is None or done["stderr"] is None:
            with self.cond:
                if not self.chunks:
                    self.cond.wait(0.1)
                chunks, self.chunks = self.chunks, []
            for name, data in chunks:
                if not data:
                    done[name] = done[name] or b"eof"
                    continue
                buf = pending[name] + data
                at = buf.find(b"\n" + marker)
                if at >= 0:
                    rest = buf[at + 1 + len(marker):]
                    done[name] = rest.split(b"\n", 1)[0].strip() or b"0"
                    buf = buf[:at]
                    pending[name] = b""
                    if buf:
                        emit({"id": rid, "type": name, "text": buf.decode("utf-8", "replace"), "timestamp": now_ns()})
                    continue
                # Keep a tail that could be the start of the marker.
                keep = len(marker) + 1
                out, pending[name] = buf[:-keep] if len(buf) > keep else b"", buf[-keep:] if len(buf) > keep else buf
                if b"\n" in out:
                    cut = out.rfind(b"\n") + 1
                    out, pending[name] = out[:cut], out[cut:] + pending[name]
                if out:
                    emit({"id": rid, "type": name, "text": out.decode("utf-8", "replace"), "timestamp": now_ns()})
            if b"eof" in (done["stdout"], done["stderr"]) or not self.alive():
                self.proc.wait()
                self.dead = "exited"
                emit({"id": rid, **dead_error(self, "exited while running this code")})
                return
            now = time.monotonic()
            if deadline is not None and interrupted_at is None and now >= deadline:
                interrupted_at = now
                self.interrupt()
            elif interrupted_at is not None and now - interrupted_at > 3:
                self.stop()
                self.start()
                emit({"id": rid, "type": "error", "name": "TimeoutError",
                      "value": f"the code ran past its timeout of {timeout:g}s and did not stop when "
                      "interrupted; bash was restarted: its state is lost", "traceback": ""})
                return
        for name in ("stdout", "stderr"):
            if pending[name]:
                emit({"id": rid, "type": name, "text": pending[name].decode("utf-8", "replace"), "timestamp": now_ns()})
        rc = done["stdout"].decode(errors="replace")
        if interrupted_at is not None:
            emit({"id": rid, "type": "error", "name": "TimeoutError",
                  "value": f"the code ran past its timeout of {timeout:g}s and was interrupted; "
                  "the context keeps its state", "traceback": ""})
        elif rc != "0":
            emit({"id": rid, "type": "error", "name": "ExitStatus", "value": f"exit status {rc}", "traceback": ""})


def log_tail(path, limit=2000):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def shquote(v):
    return "'" + str(v).replace("'", "'\\''") + "'"


def valid_name(k):
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) is not None


# ------------------------------------------------------------------ the driver

KINDS = {"python": PythonContext, "bash": BashContext}
ALIASES = {"python3": "python", "py": "python", "sh": "bash", "shell": "bash"}


class Driver:
    def __init__(self, preload):
        self.lock = threading.Lock()
        self.contexts = {}
        self.defaults = {}
        self.running = {}
        self.cancelled = set()
        self.preload = preload
        self.available = languages()

    def describe(self, ctx):
        state = "running" if ctx.alive() else "dead"
        return {"id": ctx.id, "language": ctx.language, "cwd": ctx.cwd, "state": state,
                "default": self.defaults.get(ctx.language) == ctx.id}

    def language(self, name):
        lang = ALIASES.get((name or "python").lower(), (name or "python").lower())
        if lang not in KINDS:
            raise Fail("invalid", f"language {name!r} is not available here: use one of {', '.join(self.available)}")
        if lang not in self.available:
            raise Fail("unavailable", f"{lang} contexts need ipykernel and jupyter_client, which this sandbox's root "
                       "filesystem does not have: use the code-interpreter image (templates/code-interpreter) "
                       "or install them in the image")
        return lang

    def create(self, lang, cwd, env, default=False):
        cwd = cwd or os.getcwd()
        if not os.path.isdir(cwd):
            raise Fail("invalid", f"cwd {cwd!r} is not a directory in the sandbox")
        ctx = KINDS[lang](uuid.uuid4().hex, cwd, {str(k): str(v) for k, v in (env or {}).items()}, self.preload)
        with self.lock:
            self.contexts[ctx.id] = ctx
            if default:
                self.defaults[lang] = ctx.id
        return ctx

    def get(self, cid):
        with self.lock:
            ctx = self.contexts.get(cid)
        if ctx is None:
            raise Fail("not_found", f"no context {cid!r} in this sandbox: list them, or create one")
        return ctx

    def default(self, lang):
        with self.lock:
            cid = self.defaults.get(lang)
            if cid is not None:
                return self.contexts[cid]
            # The first caller creates it; the others wait on the same lock below.
            lock = self.__dict__.setdefault("_default_locks", {}).setdefault(lang, threading.Lock())
        with lock:
            with self.lock:
                cid = self.defaults.get(lang)
            if cid is not None:
                return self.get(cid)
            return self.create(lang, None, {}, default=True)

    def handle(self, req):
        rid, op = req.get("id"), req.get("op")
        try:
            if op == "execute":
                code = req.get("code")
                if not isinstance(code, str):
                    raise Fail("invalid", "code must be a string")
                timeout = req.get("timeout")
                if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
                    raise Fail("invalid", "timeout must be a number of seconds >= 0")
                if req.get("context"):
                    ctx = self.get(req["context"])
                else:
                    ctx = self.default(self.language(req.get("language")))
                with ctx.lock:
                    with self.lock:
                        cancelled = rid in self.cancelled
                        self.running[rid] = ctx
                    try:
                        if cancelled:
                            emit({"id": rid, "type": "error", "name": "Cancelled",
                                  "value": "the caller went away before the code started", "traceback": ""})
                        else:
                            ctx.execute(rid, code, req.get("env") or {}, timeout or None)
                    finally:
                        with self.lock:
                            self.running.pop(rid, None)
                            self.cancelled.discard(rid)
            elif op == "create":
                lang = self.language(req.get("language"))
                ctx = self.create(lang, req.get("cwd"), req.get("env"))
                emit({"id": rid, "type": "context", "context": self.describe(ctx)})
            elif op == "list":
                with self.lock:
                    ctxs = list(self.contexts.values())
                emit({"id": rid, "type": "contexts", "contexts": [self.describe(c) for c in ctxs]})
            elif op == "restart":
                ctx = self.get(req.get("context"))
                ctx.kill()  # ends a running execution, which reports the kernel's death
                with ctx.lock:
                    ctx.stop()
                    ctx.start()
                emit({"id": rid, "type": "context", "context": self.describe(ctx)})
            elif op == "remove":
                ctx = self.get(req.get("context"))
                with self.lock:
                    self.contexts.pop(ctx.id, None)
                    if self.defaults.get(ctx.language) == ctx.id:
                        del self.defaults[ctx.language]
                ctx.kill()
                with ctx.lock:
                    ctx.stop()
            elif op == "interrupt":
                # By context, or by the execution a caller gave up on (`request`).
                if req.get("context"):
                    self.get(req["context"]).interrupt()
                else:
                    with self.lock:
                        ctx = self.running.get(req.get("request"))
                        if ctx is None:
                            self.cancelled.add(req.get("request"))
                    if ctx is not None:
                        ctx.interrupt()
            elif op == "warm":
                self.default(self.language(req.get("language")))
            else:
                raise Fail("invalid", f"unknown op {op!r}")
        except Fail as e:
            emit({"id": rid, "type": "fail", "code": e.code, "message": e.message})
            return
        except Exception as e:  # a bug here must not take the driver down
            emit({"id": rid, "type": "fail", "code": "internal", "message": f"{type(e).__name__}: {e}"})
            return
        emit({"id": rid, "type": "end"})


def languages():
    out = ["bash"]
    try:
        import importlib.util

        if importlib.util.find_spec("ipykernel") and importlib.util.find_spec("jupyter_client"):
            out.insert(0, "python")
    except Exception:
        pass
    return out


def main(stdin):
    preload = [m for m in os.environ.get("SAFEHOUSE_INTERP_PRELOAD", "").split(",") if m]
    os.environ.pop("SAFEHOUSE_INTERP_PRELOAD", None)
    driver = Driver(preload)
    emit({"type": "ready", "protocol": PROTOCOL, "languages": languages(), "pid": os.getpid()})
    while True:
        line = stdin.readline(MAX_REQUEST)
        if not line:
            break
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as e:
            emit({"type": "fail", "code": "invalid", "message": f"bad request line: {e}"})
            continue
        threading.Thread(target=driver.handle, args=(req,), daemon=True).start()
    with driver.lock:
        ctxs = list(driver.contexts.values())
    for c in ctxs:
        c.stop()


if __name__ == "__main__":
    main(sys.stdin.buffer)
