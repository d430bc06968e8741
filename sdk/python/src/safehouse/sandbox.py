"""The synchronous client: `Sandbox`, its `commands` and `files`."""
from __future__ import annotations

import base64
import codecs
import io
import json
import os
import threading
import time
from typing import (IO, Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple,
                    Union, overload)
from urllib.parse import quote

import httpx

from ._config import (CHUNK, HTTP_GRACE_S, Cmd, ConnectionConfig, code_argv, create_body, daemon_refusal,
                      exec_body, explain_params, list_params, port_path, process_body, sb_path, to_bytes, translate)
from ._either import either
from ._http import _Http
from ._streams import EventStream, WatchHandle, attach_closed_error
from ._tls import cert_failure
from .admin import Admin, KillAllResult
from .code import (ONE_SHOT_LANGUAGES, Context, Execution, code_body, contexts_of, execution_of_command,
                   parse_line)
from .exceptions import (CommandExitException, NotFoundError, SafehouseError, SafehouseTimeoutError,
                         error_from_response)
from .models import (CommandResult, EntryInfo, FilesystemEvent, Metrics, ProcessInfo, PtySize, SandboxInfo,
                     WriteEntry, describe_failure)
from .policy import Policy

OutputHandler = Callable[[str], Any]
PtyHandler = Callable[[bytes], Any]
Signal = Union[int, str]
#: One chunk of a handle's output: `(stdout, stderr, pty)`, exactly one of them set (E2B's shape).
Chunk = Tuple[Optional[str], Optional[str], Optional[bytes]]


def _timeout_s(timeout: Optional[float]) -> Optional[float]:
    """E2B's convention: 0 (or None) means no limit; the daemon's maximum is a day."""
    if timeout is None or timeout == 0:
        return 86400.0
    return float(timeout)


# ---------------------------------------------------------------- commands


class CommandHandle:
    """A background process (or a PTY). Iterate for output chunks `(stdout, stderr, pty)` (one
    of them set; a PTY's output is bytes in the third), or `wait()` for the CommandResult.
    Output produced before attaching is replayed by the daemon (up to 2 MiB)."""

    def __init__(self, commands: "Commands", pid: int, on_stdout: Optional[OutputHandler] = None,
                 on_stderr: Optional[OutputHandler] = None, on_pty: Optional[PtyHandler] = None,
                 pty: bool = False) -> None:
        self._commands = commands
        self.pid = pid
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._on_pty = on_pty
        self._pty = pty
        self._ws: Any = None
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._dec_out = codecs.getincrementaldecoder("utf-8")("replace")
        self._dec_err = codecs.getincrementaldecoder("utf-8")("replace")
        self._exit: Optional[Dict[str, Any]] = None
        self.dropped_bytes = 0
        #: Refusals of frames sent over the attach socket (e.g. a resize of a non-PTY process).
        self.errors: List[str] = []
        self._timer: Optional[threading.Timer] = None

    # -- output
    def _connect(self) -> Any:
        if self._ws is None:
            from websockets.exceptions import InvalidStatus
            from websockets.sync.client import connect

            cfg = self._commands._http.config
            url = cfg.ws_url(sb_path(self._commands._sandbox_id, f"/processes/{self.pid}/attach"))
            try:
                self._ws = connect(url, additional_headers=cfg.headers(), **cfg.ws_kwargs(), open_timeout=15, max_size=None,
                                   compression=None)
                # websockets >= 17 warns unless used as a context manager; the handle closes it.
                if hasattr(self._ws, "pending_legacy_warning"):
                    self._ws.pending_legacy_warning = False
            except InvalidStatus as e:
                raise error_from_response(e.response.status_code, bytes(e.response.body or b"")) from e
            except (OSError, TimeoutError) as e:
                raise SafehouseError(f"cannot attach to process {self.pid}: {cert_failure(e) or e}") from e
        return self._ws

    def _next(self, deadline: Optional[float]) -> Optional[Chunk]:
        """The next output chunk; None once the exit frame arrived."""
        from websockets.exceptions import ConnectionClosed

        ws = self._connect()
        while self._exit is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise SafehouseTimeoutError(f"process {self.pid} did not exit in time")
            try:
                msg = ws.recv(timeout=left)
            except TimeoutError as e:
                raise SafehouseTimeoutError(f"process {self.pid} did not exit in time") from e
            except ConnectionClosed as e:
                raise attach_closed_error(self.pid, e, "closed before its exit") from e
            if isinstance(msg, bytes):
                frame: Dict[str, Any] = {"type": "stdout", "raw": msg}
            else:
                frame = json.loads(msg)
            t = frame.get("type")
            if t in ("stdout", "stderr"):
                data = frame["raw"] if "raw" in frame else base64.b64decode(frame.get("data", ""))
                if t == "stdout" and self._pty:
                    self._stdout += data
                    if self._on_pty:
                        self._on_pty(bytes(data))
                    if data:
                        return None, None, bytes(data)
                elif t == "stdout":
                    self._stdout += data
                    text = self._dec_out.decode(data)
                    if text and self._on_stdout:
                        self._on_stdout(text)
                    if text:
                        return text, None, None
                else:
                    self._stderr += data
                    text = self._dec_err.decode(data)
                    if text and self._on_stderr:
                        self._on_stderr(text)
                    if text:
                        return None, text, None
            elif t == "truncated":
                self.dropped_bytes += int(frame.get("dropped_bytes", 0))
            elif t == "exit":
                self._exit = frame
                if self._timer is not None:
                    self._timer.cancel()
                self._close_ws()
            elif t == "error":  # the daemon refused a frame we sent (stdin, resize, signal)
                self.errors.append(f"{frame.get('code')}: {frame.get('message')}")
        return None

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            chunk = self._next(None)
            if chunk is None:
                return
            yield chunk

    def _result(self) -> CommandResult:
        assert self._exit is not None
        r = CommandResult(stdout=self._stdout.decode(errors="replace"),
                          stderr=self._stderr.decode(errors="replace"),
                          exit_code=self._exit.get("exit_code"), signal=self._exit.get("signal"),
                          wall_ms=self._exit.get("wall_ms"), cpu_ms=self._exit.get("cpu_ms"),
                          peak_memory_bytes=self._exit.get("peak_memory_bytes"))
        r.error = describe_failure(r)
        return r

    def wait(self, timeout: Optional[float] = None, on_stdout: Optional[OutputHandler] = None,
             on_stderr: Optional[OutputHandler] = None, raise_on_error: bool = True,
             on_pty: Optional[PtyHandler] = None) -> CommandResult:
        """Streams the output (to the callbacks) until the process exits; raises
        CommandExitException on a non-zero exit like E2B, SafehouseTimeoutError after TIMEOUT s."""
        if on_stdout:
            self._on_stdout = on_stdout
        if on_stderr:
            self._on_stderr = on_stderr
        if on_pty:
            self._on_pty = on_pty
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._next(deadline) is not None:
            pass
        result = self._result()
        if raise_on_error and result.exit_code != 0:
            raise CommandExitException(result)
        return result

    @property
    def exit_code(self) -> Optional[int]:
        return None if self._exit is None else self._exit.get("exit_code")

    # -- control
    def send_stdin(self, data: Union[str, bytes]) -> None:
        self._commands.send_stdin(self.pid, data)

    def close_stdin(self) -> None:
        self._commands.close_stdin(self.pid)

    def signal(self, sig: Signal) -> bool:
        return self._commands.signal(self.pid, sig)

    def kill(self) -> bool:
        return self._commands.kill(self.pid)

    def resize(self, size: PtySize) -> None:
        """Sets a PTY's terminal size (SIGWINCH inside)."""
        self._send_frame({"type": "resize", "rows": int(size.rows), "cols": int(size.cols)})

    def _send_frame(self, frame: Dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self._connect().send(json.dumps(frame))
        except ConnectionClosed as e:
            raise attach_closed_error(self.pid, e, "closed") from e

    def _close_ws(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None

    def disconnect(self) -> None:
        """Stops receiving output; the process keeps running."""
        self._close_ws()


class Commands:
    def __init__(self, http: _Http, sandbox_id: str) -> None:
        self._http = http
        self._sandbox_id = sandbox_id

    def _p(self, rest: str) -> str:
        return sb_path(self._sandbox_id, rest)

    @overload
    def run(self, cmd: Cmd, envs: Optional[Mapping[str, str]] = ..., cwd: Optional[str] = ...,
            timeout: Optional[float] = ..., stdin: Optional[Union[str, bytes]] = ...,
            memory: Optional[Union[str, int]] = ..., background: Literal[False] = ...,
            on_stdout: Optional[OutputHandler] = ..., on_stderr: Optional[OutputHandler] = ...,
            raise_on_error: bool = ...) -> CommandResult: ...

    @overload
    def run(self, cmd: Cmd, envs: Optional[Mapping[str, str]] = ..., cwd: Optional[str] = ...,
            timeout: Optional[float] = ..., stdin: Optional[Union[str, bytes]] = ...,
            memory: Optional[Union[str, int]] = ..., *, background: Literal[True],
            on_stdout: Optional[OutputHandler] = ..., on_stderr: Optional[OutputHandler] = ...,
            raise_on_error: bool = ...) -> CommandHandle: ...

    def run(self, cmd: Cmd, envs: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            timeout: Optional[float] = 60, stdin: Optional[Union[str, bytes]] = None,
            memory: Optional[Union[str, int]] = None, background: bool = False,
            on_stdout: Optional[OutputHandler] = None, on_stderr: Optional[OutputHandler] = None,
            raise_on_error: bool = True) -> Union[CommandResult, CommandHandle]:
        """Runs CMD (a shell string, run by /bin/sh -c, or an argv list).

        Foreground (default): returns the CommandResult with the resource envelope; a non-zero
        exit raises CommandExitException (pass raise_on_error=False to get the result instead).
        background=True: starts a process and returns its CommandHandle. With on_stdout /
        on_stderr and no background, the output is streamed to them as it is produced and the
        result is returned when the command ends (no resource envelope then)."""
        if background or on_stdout or on_stderr:
            if memory is not None:
                raise ValueError("memory= applies to foreground commands only")
            handle = self._start(cmd, envs, cwd, on_stdout, on_stderr)
            if stdin is not None:
                self.send_stdin(handle.pid, stdin)
                self.close_stdin(handle.pid)
            if background:
                return handle
            try:
                return handle.wait(timeout=_timeout_s(timeout), raise_on_error=raise_on_error)
            except SafehouseTimeoutError:
                handle.kill()
                handle.disconnect()
                raise
        t = _timeout_s(timeout)
        resp = self._http.request("POST", self._p("/exec"), json=exec_body(cmd, envs, cwd, t, stdin, memory),
                                  timeout=(t or 60) + HTTP_GRACE_S)
        result = CommandResult.from_json(resp.json())
        if raise_on_error and (result.exit_code != 0 or result.timed_out):
            raise CommandExitException(result)
        return result

    def _start(self, cmd: Cmd, envs: Optional[Mapping[str, str]], cwd: Optional[str],
               on_stdout: Optional[OutputHandler], on_stderr: Optional[OutputHandler]) -> CommandHandle:
        resp = self._http.request("POST", self._p("/processes"), json=process_body(cmd, envs, cwd))
        return CommandHandle(self, int(resp.json()["pid"]), on_stdout, on_stderr)

    def connect(self, pid: int, on_stdout: Optional[OutputHandler] = None,
                on_stderr: Optional[OutputHandler] = None) -> CommandHandle:
        """A handle to a running (or exited, still listed) process."""
        if not any(p.pid == pid for p in self.list()):
            raise NotFoundError(f"no process {pid} in sandbox {self._sandbox_id}", status=404, code="not_found")
        return CommandHandle(self, pid, on_stdout, on_stderr)

    def list(self) -> List[ProcessInfo]:
        resp = self._http.request("GET", self._p("/processes"))
        return [ProcessInfo.from_json(p) for p in resp.json().get("processes", [])]

    def signal(self, pid: int, sig: Signal) -> bool:
        """Sends SIG (a number or a name such as "SIGTERM"); False if no such process."""
        try:
            self._http.request("POST", self._p(f"/processes/{pid}/signal"), json={"signal": sig})
            return True
        except NotFoundError:
            return False

    def kill(self, pid: int) -> bool:
        """SIGKILL; False if there is no such process (E2B's contract)."""
        return self.signal(pid, "SIGKILL")

    def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        self._http.request("POST", self._p(f"/processes/{pid}/stdin"), content=to_bytes(data),
                           headers={"Content-Type": "application/octet-stream"})

    def close_stdin(self, pid: int) -> None:
        self._http.request("POST", self._p(f"/processes/{pid}/stdin"), params={"eof": "1"}, content=b"",
                           headers={"Content-Type": "application/octet-stream"})


class Pty:
    """Interactive terminals (E2B's `sbx.pty`): a process on a pseudo-terminal, its output
    as bytes (`on_data`), input with `send_stdin`, `resize`, `kill`, `wait`."""

    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    def create(self, size: PtySize = PtySize(), on_data: Optional[PtyHandler] = None,
               cwd: Optional[str] = None, envs: Optional[Mapping[str, str]] = None,
               cmd: Cmd = ("/bin/bash", "-i", "-l"), timeout: Optional[float] = None) -> CommandHandle:
        """Starts CMD (an interactive login bash by default) on a SIZE terminal; the handle's
        `wait()` streams its output to ON_DATA. TIMEOUT (seconds) kills it; None: no limit."""
        env = {"TERM": "xterm-256color", **dict(envs or {})}
        body = process_body(cmd, env, cwd)
        body["pty"] = {"rows": int(size.rows), "cols": int(size.cols)}
        resp = self._commands._http.request("POST", self._commands._p("/processes"), json=body)
        handle = CommandHandle(self._commands, int(resp.json()["pid"]), on_pty=on_data, pty=True)
        handle._connect()
        if timeout:
            _kill_after(handle, timeout)
        return handle

    def connect(self, pid: int, on_data: Optional[PtyHandler] = None) -> CommandHandle:
        """A handle to a running PTY (its recent output is replayed)."""
        self._commands.connect(pid)
        return CommandHandle(self._commands, pid, on_pty=on_data, pty=True)

    def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        """Types DATA into the terminal (b"\x03" is Ctrl-C)."""
        self._commands.send_stdin(pid, data)

    def resize(self, pid: int, size: PtySize) -> None:
        handle = CommandHandle(self._commands, pid, pty=True)
        try:
            handle.resize(size)
        finally:
            handle.disconnect()

    def kill(self, pid: int) -> bool:
        return self._commands.kill(pid)


def _kill_after(handle: CommandHandle, seconds: float) -> None:
    """Kills HANDLE's process after SECONDS unless its exit was seen first."""
    timer = threading.Timer(seconds, handle.kill)
    timer.daemon = True
    handle._timer = timer
    timer.start()


# ---------------------------------------------------------------- files


def _file_chunks(f: IO[Any]) -> Iterator[bytes]:
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return
        yield chunk.encode() if isinstance(chunk, str) else chunk


def _length_of(f: IO[Any]) -> Optional[int]:
    try:
        if isinstance(f, io.TextIOBase) or not f.seekable():
            return None
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


def upload_content(data: Union[str, bytes, IO[Any]]) -> Tuple[Any, Dict[str, str]]:
    headers = {"Content-Type": "application/octet-stream"}
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        return to_bytes(data) if not isinstance(data, (bytearray, memoryview)) else bytes(data), headers
    n = _length_of(data)
    if n is not None:
        headers["Content-Length"] = str(n)
    return _file_chunks(data), headers


class Filesystem:
    def __init__(self, http: _Http, sandbox_id: str) -> None:
        self._http = http
        self._sandbox_id = sandbox_id

    def _p(self, rest: str) -> str:
        return sb_path(self._sandbox_id, rest)

    @overload
    def read(self, path: str, format: Literal["text"] = ...) -> str: ...

    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytearray: ...

    @overload
    def read(self, path: str, format: Literal["stream"]) -> Iterator[bytes]: ...

    def read(self, path: str, format: Literal["text", "bytes", "stream"] = "text"
             ) -> Union[str, bytearray, Iterator[bytes]]:
        """The file's content: text (default), `format="bytes"`, or `format="stream"` (an
        iterator of chunks, never holding the whole file)."""
        if format == "stream":
            resp = self._http.stream("GET", self._p("/files"), params={"path": path}, timeout=httpx.Timeout(
                60.0, connect=10.0))
            return self._iter(resp)
        resp = self._http.request("GET", self._p("/files"), params={"path": path})
        if format == "bytes":
            return bytearray(resp.content)
        if format == "text":
            return resp.content.decode("utf-8", errors="replace")
        raise ValueError(f"format must be 'text', 'bytes' or 'stream', not {format!r}")

    @staticmethod
    def _iter(resp: httpx.Response) -> Iterator[bytes]:
        try:
            try:
                yield from resp.iter_bytes(CHUNK)
            except httpx.HTTPError as e:
                raise translate(e) from e
        finally:
            resp.close()

    def write(self, path: str, data: Union[str, bytes, IO[Any]]) -> EntryInfo:
        """Writes DATA (str, bytes, or a file object, streamed) to PATH; parents are created."""
        content, headers = upload_content(data)
        resp = self._http.request("PUT", self._p("/files"), params={"path": path}, content=content,
                                  headers=headers, timeout=httpx.Timeout(120.0, connect=10.0))
        return EntryInfo.from_json(resp.json())

    def write_files(self, files: Sequence[WriteEntry]) -> List[EntryInfo]:
        """Writes several files, one after the other (E2B's write_files); stops at the first error."""
        return [self.write(f.path, f.data) for f in files]

    def list(self, path: str, depth: int = 1) -> List[EntryInfo]:
        resp = self._http.request("GET", self._p("/fs/list"), params={"path": path, "depth": str(depth)})
        return [EntryInfo.from_json(e) for e in resp.json().get("entries", [])]

    def get_info(self, path: str) -> EntryInfo:
        resp = self._http.request("GET", self._p("/fs/stat"), params={"path": path})
        return EntryInfo.from_json(resp.json())

    stat = get_info

    def exists(self, path: str) -> bool:
        try:
            self.get_info(path)
            return True
        except NotFoundError:
            return False

    def remove(self, path: str) -> None:
        """Removes a file or a directory with its content."""
        self._http.request("DELETE", self._p("/fs"), params={"path": path, "recursive": "1"})

    def rename(self, old_path: str, new_path: str) -> EntryInfo:
        resp = self._http.request("POST", self._p("/fs/move"), json={"from": old_path, "to": new_path})
        return EntryInfo.from_json(resp.json())

    def watch_dir(self, path: str, on_event: Optional[Callable[[FilesystemEvent], Any]] = None,
                  on_exit: Optional[Callable[[Optional[Exception]], Any]] = None,
                  recursive: bool = False) -> "WatchHandle":
        """Watches PATH (a directory) for changes, made through the API or by commands inside.
        With ON_EVENT, events are delivered to it from a background thread; without, iterate
        the handle (`for ev in handle`) or poll `handle.get_new_events()`. `handle.stop()` ends
        it. The watch is in place when this returns."""
        return WatchHandle(self._http.config, self._p("/fs/watch"), path, recursive, on_event, on_exit)

    def make_dir(self, path: str) -> bool:
        """Creates PATH with its parents; False if it already existed (E2B's contract)."""
        try:
            self._http.request("POST", self._p("/fs/mkdir"), json={"path": path, "parents": False})
            return True
        except NotFoundError:  # a parent is missing: create them all
            self._http.request("POST", self._p("/fs/mkdir"), json={"path": path, "parents": True})
            return True
        except SafehouseError as e:
            if e.code == "already_exists":
                return False
            raise


# ---------------------------------------------------------------- sandbox


def _kill_request(http: _Http, sandbox_id: str) -> bool:
    try:
        http.request("DELETE", sb_path(sandbox_id))
        return True
    except NotFoundError:
        return False


def _kill_by_id(sandbox_id: str, api_key: Optional[str] = None, url: Optional[str] = None) -> bool:
    http = _Http(ConnectionConfig.resolve(url, api_key))
    try:
        return _kill_request(http, sandbox_id)
    finally:
        http.close()


def _info_by_id(sandbox_id: str, api_key: Optional[str] = None, url: Optional[str] = None) -> SandboxInfo:
    http = _Http(ConnectionConfig.resolve(url, api_key))
    try:
        return SandboxInfo.from_json(http.request("GET", sb_path(sandbox_id)).json())
    finally:
        http.close()


def _set_timeout_by_id(sandbox_id: str, timeout: int, api_key: Optional[str] = None,
                       url: Optional[str] = None) -> SandboxInfo:
    http = _Http(ConnectionConfig.resolve(url, api_key))
    try:
        resp = http.request("POST", sb_path(sandbox_id, "/timeout"), json={"timeout_s": int(timeout)})
        return SandboxInfo.from_json(resp.json())
    finally:
        http.close()


class Sandbox:
    """A live sandbox on a safehouse daemon.

        with Sandbox.create() as sbx:
            print(sbx.commands.run("python3 -c 'print(1+1)'").stdout)
    """

    def __init__(self, info: SandboxInfo, http: _Http) -> None:
        self._info = info
        self._http = http
        self.commands = Commands(http, info.id)
        self.files = Filesystem(http, info.id)
        self.pty = Pty(self.commands)

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def sandbox_id(self) -> str:  # E2B's name
        return self._info.id

    @classmethod
    def create(cls, policy: Optional[Union[Policy, Dict[str, Any]]] = None, preset: Optional[str] = None,
               timeout: Optional[int] = 300, env: Optional[Mapping[str, str]] = None,
               metadata: Optional[Mapping[str, str]] = None, api_key: Optional[str] = None,
               url: Optional[str] = None, request_timeout: Optional[float] = None,
               storage: Optional[str] = None, lifecycle: Optional[Mapping[str, Any]] = None,
               snapshot: Optional[str] = None,
               volumes: Optional[Sequence[Mapping[str, Any]]] = None,
               template: Optional[str] = None) -> "Sandbox":
        """Creates a sandbox that lives TIMEOUT seconds (unless killed or extended).
        STORAGE "disk" keeps its files on disk (needed to pause); LIFECYCLE
        `{"on_timeout": "pause", "auto_resume": True, "idle_timeout_s": 600}`; SNAPSHOT starts
        from a snapshot's files; VOLUMES `[{"name": ..., "path": ..., "read_only": False}]`;
        TEMPLATE a template or image of the daemon's image store as the root filesystem
        (`Sandbox.list_templates()` lists them)."""
        http = _Http(ConnectionConfig.resolve(url, api_key, request_timeout))
        persistence = {"storage": storage, "lifecycle": dict(lifecycle) if lifecycle else None,
                       "snapshot": snapshot, "volumes": [dict(v) for v in volumes] if volumes else None,
                       "template": template}
        try:
            resp = http.request("POST", "/v1/sandboxes",
                                json=create_body(policy, preset, timeout, env, metadata, persistence))
        except BaseException:
            http.close()
            raise
        return cls(SandboxInfo.from_json(resp.json()), http)

    @classmethod
    def connect(cls, sandbox_id: str, api_key: Optional[str] = None, url: Optional[str] = None,
                request_timeout: Optional[float] = None) -> "Sandbox":
        http = _Http(ConnectionConfig.resolve(url, api_key, request_timeout))
        try:
            resp = http.request("GET", sb_path(sandbox_id))
        except BaseException:
            http.close()
            raise
        return cls(SandboxInfo.from_json(resp.json()), http)

    @staticmethod
    def list(metadata: Optional[Mapping[str, str]] = None, state: Optional[str] = None,
             api_key: Optional[str] = None, url: Optional[str] = None) -> List[SandboxInfo]:
        """The tenant's sandboxes, filtered by metadata (all pairs must match) and state."""
        http = _Http(ConnectionConfig.resolve(url, api_key))
        try:
            resp = http.request("GET", "/v1/sandboxes", params=list_params(metadata, state))
            return [SandboxInfo.from_json(s) for s in resp.json().get("sandboxes", [])]
        finally:
            http.close()

    def _get_info(self) -> SandboxInfo:
        """The sandbox's state, deadline and metadata (also `Sandbox.get_info(sandbox_id)`)."""
        self._info = SandboxInfo.from_json(self._http.request("GET", sb_path(self.id)).json())
        return self._info

    def _set_timeout(self, timeout: int) -> SandboxInfo:
        """The sandbox now expires TIMEOUT seconds from now (also `Sandbox.set_timeout(sandbox_id, timeout)`)."""
        resp = self._http.request("POST", sb_path(self.id, "/timeout"), json={"timeout_s": int(timeout)})
        self._info = SandboxInfo.from_json(resp.json())
        return self._info

    def is_running(self) -> bool:
        try:
            return self.get_info().state == "running"
        except NotFoundError:
            return False

    def _kill(self) -> bool:
        """Kills the sandbox (idempotent); False if the daemon does not know it. Also
        `Sandbox.kill(sandbox_id)`, as in E2B."""
        return _kill_request(self._http, self.id)

    get_info = either(_info_by_id, _get_info)
    set_timeout = either(_set_timeout_by_id, _set_timeout)
    kill = either(_kill_by_id, _kill)

    def run_code(self, code: str, language: Optional[str] = None, context: Optional[Any] = None,
                 envs: Optional[Mapping[str, str]] = None, timeout: Optional[float] = 60,
                 on_stdout: Optional[OutputHandler] = None, on_stderr: Optional[OutputHandler] = None,
                 on_result: Optional[OutputHandler] = None, on_error: Optional[OutputHandler] = None) -> Execution:
        """Runs CODE in the sandbox's code interpreter and returns an Execution (E2B's shape):
        `.results` (the last expression's value and every display: text, html, png, chart,
        ...), `.logs`, `.error` (`name`, `value`, `traceback`), `.text`. State persists between
        calls in the same context (the language's default one unless CONTEXT is given).
        LANGUAGE: python (default) or bash; javascript runs as a fresh `node -e` per call.
        TIMEOUT: seconds before the kernel is interrupted (its state is kept); None for no
        limit. An error in the code is a result, not an exception."""
        if language and language.lower() in ONE_SHOT_LANGUAGES:
            r = self.commands.run(code_argv(code, language), envs=envs, timeout=timeout, on_stdout=on_stdout,
                                  on_stderr=on_stderr, raise_on_error=False)
            return execution_of_command(r)
        body = code_body(code, language, context, dict(envs) if envs else None, timeout)
        handlers = {"on_stdout": on_stdout, "on_stderr": on_stderr, "on_result": on_result, "on_error": on_error}
        read = None if timeout is None else timeout + HTTP_GRACE_S
        resp = self._http.stream("POST", sb_path(self.id, "/code"), json=body,
                                 timeout=httpx.Timeout(read, connect=HTTP_GRACE_S))
        execution = Execution()
        try:
            for line in resp.iter_lines():
                call = parse_line(execution, line)
                if call and handlers[call[0]] is not None:
                    handlers[call[0]](call[1])
        except httpx.HTTPError as e:
            raise translate(e) from e
        finally:
            resp.close()
        return execution

    def create_code_context(self, cwd: Optional[str] = None, language: Optional[str] = None,
                            envs: Optional[Mapping[str, str]] = None) -> Context:
        """A new context: its own kernel and state (LANGUAGE python or bash; CWD and ENVS its
        working directory and environment)."""
        body: Dict[str, Any] = {}
        if cwd:
            body["cwd"] = cwd
        if language:
            body["language"] = language
        if envs:
            body["env"] = dict(envs)
        return Context.from_json(self._http.request("POST", sb_path(self.id, "/contexts"), json=body).json())

    def list_code_contexts(self) -> List[Context]:
        return contexts_of(self._http.request("GET", sb_path(self.id, "/contexts")).json())

    def restart_code_context(self, context: Any) -> Context:
        """A fresh kernel for CONTEXT (a Context or its id): its state is gone, its id stays."""
        cid = context.id if isinstance(context, Context) else str(context)
        return Context.from_json(self._http.request("POST", sb_path(self.id, f"/contexts/{cid}/restart")).json())

    def remove_code_context(self, context: Any) -> None:
        cid = context.id if isinstance(context, Context) else str(context)
        self._http.request("DELETE", sb_path(self.id, f"/contexts/{cid}"))

    def port_url(self, port: int, path: str = "/") -> str:
        """The daemon URL that reaches PORT inside the sandbox (the port proxy). Requests to
        it need this client's `Authorization` header; `request_port` adds it."""
        return self._http.config.url + port_path(self.id, port, path)

    def request_port(self, port: int, method: str = "GET", path: str = "/", **kw: Any) -> httpx.Response:
        """Sends an HTTP request to the service listening on PORT inside the sandbox and returns
        its response as the service sent it, whatever its status (httpx keyword arguments:
        `json=`, `content=`, `headers=`, `params=`, `timeout=`). The daemon's own refusals
        raise: PortError when nothing listens there, SandboxNotRunningError, ..."""
        client = self._http._client()
        try:
            resp = client.request(method, port_path(self.id, port, path), **kw)
        except httpx.HTTPError as e:
            raise translate(e) from e
        refusal = daemon_refusal(resp)
        if refusal is not None:
            raise refusal
        return resp

    def get_policy(self) -> Optional[Dict[str, Any]]:
        """The policy this sandbox was created with (None when it was made without one)."""
        return (self._http.request("GET", sb_path(self.id, "/policy"))).json().get("policy")

    def explain(self, net: Optional[str] = None, exec: Optional[str] = None, read: Optional[str] = None,
                write: Optional[str] = None) -> Dict[str, Any]:
        """Would this sandbox's policy allow it? Exactly one of NET (`host:port`), EXEC, READ or
        WRITE (a sandbox path). The answer: `allowed`, the `rule` that decides, `reason`, `hint`."""
        params = explain_params(net=net, exec=exec, read=read, write=write)
        return (self._http.request("GET", sb_path(self.id, "/policy/explain"), params=params)).json()

    def get_metrics(self) -> Metrics:
        """Resource use now and the last five minutes, one sample a second (`.history`)."""
        return Metrics.from_json(self._http.request("GET", sb_path(self.id, "/metrics")).json())

    def events(self, follow: bool = True, since_seq: int = 0, timeout: Optional[float] = None) -> EventStream:
        """This sandbox's events: the replay, then (FOLLOW) live ones until it ends. TIMEOUT:
        seconds without a byte (keep-alives come every 15 s) before SafehouseTimeoutError."""
        params = {"follow": "1" if follow else "0", "since_seq": str(int(since_seq))}
        return EventStream(self._http.config, sb_path(self.id, "/events"), params, timeout)

    @staticmethod
    def all_events(follow: bool = True, replay: bool = True, timeout: Optional[float] = None,
                   api_key: Optional[str] = None, url: Optional[str] = None) -> EventStream:
        """Every sandbox's events of the key's tenant (an admin key: all of them)."""
        params = {"follow": "1" if follow else "0", "replay": "1" if replay else "0"}
        return EventStream(ConnectionConfig.resolve(url, api_key), "/v1/events", params, timeout)

    def freeze(self) -> SandboxInfo:
        """Stops every process with the cgroup freezer (state `frozen`; the deadline keeps
        counting); commands answer SandboxFrozenError until `thaw()`."""
        self._info = SandboxInfo.from_json(self._http.request("POST", sb_path(self.id, "/freeze")).json())
        return self._info

    def thaw(self) -> SandboxInfo:
        self._info = SandboxInfo.from_json(self._http.request("POST", sb_path(self.id, "/thaw")).json())
        return self._info


    def pause(self) -> Dict[str, Any]:
        """Pauses the sandbox: every process stopped and its memory freed, its files kept on
        disk (state `paused`; needs `storage="disk"`). Returns what was kept: on this tier
        `{"filesystem": True, "memory": False, "note": ...}` (processes start afresh on
        resume). `freeze()` keeps processes in memory instead."""
        resp = self._http.request("POST", sb_path(self.id, "/pause"))
        self._info = SandboxInfo.from_json({**self._info.raw, "state": "paused"})
        return resp.json()

    def resume(self) -> SandboxInfo:
        """Starts a paused sandbox again: same id, files, environment and policy."""
        self._info = SandboxInfo.from_json(self._http.request("POST", sb_path(self.id, "/resume")).json())
        return self._info

    def snapshot(self) -> Dict[str, Any]:
        """Freezes the sandbox's files into a snapshot (`{"id": "snap_...", ...}`); create
        sandboxes from it with `Sandbox.create(snapshot=ID)`."""
        return self._http.request("POST", sb_path(self.id, "/snapshots")).json()

    def fork(self, count: int = 1) -> List[SandboxInfo]:
        """COUNT new sandboxes that start with this sandbox's files as they are now."""
        resp = self._http.request("POST", sb_path(self.id, "/fork"), json={"count": int(count)})
        return [SandboxInfo.from_json(s) for s in resp.json().get("sandboxes", [])]

    @staticmethod
    def list_templates(api_key: Optional[str] = None, url: Optional[str] = None) -> List[Dict[str, Any]]:
        """The templates and images of the daemon's image store a sandbox can start from
        (`name`, `kind`, `digest`, `size`, `layers`, `sandboxes`, `created_at`, `source`)."""
        http = _Http(ConnectionConfig.resolve(url, api_key))
        try:
            return list(http.request("GET", "/v1/templates").json().get("templates", []))
        finally:
            http.close()

    @staticmethod
    def list_snapshots(api_key: Optional[str] = None, url: Optional[str] = None) -> List[Dict[str, Any]]:
        """The tenant's snapshots (`id`, `sandbox_id`, `created_at`)."""
        http = _Http(ConnectionConfig.resolve(url, api_key))
        try:
            return list(http.request("GET", "/v1/snapshots").json().get("snapshots", []))
        finally:
            http.close()

    @staticmethod
    def delete_snapshot(snapshot_id: str, api_key: Optional[str] = None, url: Optional[str] = None) -> bool:
        """Deletes a snapshot (sandboxes made from it keep their files); False if none."""
        http = _Http(ConnectionConfig.resolve(url, api_key))
        try:
            http.request("DELETE", f"/v1/snapshots/{quote(snapshot_id, safe='')}")
            return True
        except NotFoundError:
            return False
        finally:
            http.close()

    @staticmethod
    def kill_all(api_key: Optional[str] = None, url: Optional[str] = None) -> KillAllResult:
        """The emergency stop (see Admin.kill_all)."""
        with Admin(api_key, url) as admin:
            return admin.kill_all()

    def close(self) -> None:
        """Closes the HTTP connections (the sandbox keeps running)."""
        self._http.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.kill()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, state={self._info.state!r})"
