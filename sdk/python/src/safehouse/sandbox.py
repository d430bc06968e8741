"""The synchronous client: `Sandbox`, its `commands` and `files`."""
from __future__ import annotations

import base64
import codecs
import io
import json
import os
import time
from typing import (IO, Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Tuple, Union,
                    overload)

import httpx

from ._config import (CHUNK, HTTP_GRACE_S, Cmd, ConnectionConfig, check, create_body, exec_body,
                      list_params, process_body, sb_path, to_bytes, translate)
from .exceptions import (CommandExitException, NotFoundError, SafehouseError, SafehouseTimeoutError,
                         error_from_response)
from .models import CommandResult, EntryInfo, ProcessInfo, SandboxInfo, describe_failure
from .policy import Policy

OutputHandler = Callable[[str], Any]
Signal = Union[int, str]


class _Http:
    """One httpx.Client per sandbox; translates transport errors and error statuses."""

    def __init__(self, config: ConnectionConfig, client: Optional[httpx.Client] = None) -> None:
        self.config = config
        self.client = client or httpx.Client(**config.client_kwargs())

    def _client(self) -> httpx.Client:
        if self.client.is_closed:  # reopened on use after close()
            self.client = httpx.Client(**self.config.client_kwargs())
        return self.client

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self._client()
        try:
            return check(self.client.request(method, path, **kw))
        except httpx.HTTPError as e:
            raise translate(e) from e

    def stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self._client()
        try:
            req = self.client.build_request(method, path, **kw)
            resp = self.client.send(req, stream=True)
        except httpx.HTTPError as e:
            raise translate(e) from e
        if resp.status_code >= 400:
            try:
                body = resp.read()
            finally:
                resp.close()
            raise error_from_response(resp.status_code, body)
        return resp

    def close(self) -> None:
        self.client.close()


def _timeout_s(timeout: Optional[float]) -> Optional[float]:
    """E2B's convention: 0 (or None) means no limit; the daemon's maximum is a day."""
    if timeout is None or timeout == 0:
        return 86400.0
    return float(timeout)


# ---------------------------------------------------------------- commands


class CommandHandle:
    """A background process. Iterate for output chunks `(stdout, stderr, pty)` (one of them
    set), or `wait()` for the CommandResult. Output produced before attaching is replayed by
    the daemon (up to 1 MiB per stream)."""

    def __init__(self, commands: "Commands", pid: int, on_stdout: Optional[OutputHandler] = None,
                 on_stderr: Optional[OutputHandler] = None) -> None:
        self._commands = commands
        self.pid = pid
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._ws: Any = None
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._dec_out = codecs.getincrementaldecoder("utf-8")("replace")
        self._dec_err = codecs.getincrementaldecoder("utf-8")("replace")
        self._exit: Optional[Dict[str, Any]] = None
        self.dropped_bytes = 0

    # -- output
    def _connect(self) -> Any:
        if self._ws is None:
            from websockets.exceptions import InvalidStatus
            from websockets.sync.client import connect

            cfg = self._commands._http.config
            url = cfg.ws_url(sb_path(self._commands._sandbox_id, f"/processes/{self.pid}/attach"))
            try:
                self._ws = connect(url, additional_headers=cfg.headers(), open_timeout=15, max_size=None,
                                   compression=None)
                # websockets >= 17 warns unless used as a context manager; the handle closes it.
                if hasattr(self._ws, "pending_legacy_warning"):
                    self._ws.pending_legacy_warning = False
            except InvalidStatus as e:
                raise error_from_response(e.response.status_code, bytes(e.response.body or b"")) from e
            except (OSError, TimeoutError) as e:
                raise SafehouseError(f"cannot attach to process {self.pid}: {e}") from e
        return self._ws

    def _next(self, deadline: Optional[float]) -> Optional[Tuple[Optional[str], Optional[str], None]]:
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
                raise SafehouseError(f"attach connection to process {self.pid} closed before its exit: {e}") from e
            if isinstance(msg, bytes):
                frame: Dict[str, Any] = {"type": "stdout", "raw": msg}
            else:
                frame = json.loads(msg)
            t = frame.get("type")
            if t in ("stdout", "stderr"):
                data = frame["raw"] if "raw" in frame else base64.b64decode(frame.get("data", ""))
                if t == "stdout":
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
                self._close_ws()
        return None

    def __iter__(self) -> Iterator[Tuple[Optional[str], Optional[str], None]]:
        while True:
            chunk = self._next(None)
            if chunk is None:
                return
            yield chunk

    def _result(self) -> CommandResult:
        assert self._exit is not None
        r = CommandResult(stdout=self._stdout.decode(errors="replace"),
                          stderr=self._stderr.decode(errors="replace"),
                          exit_code=self._exit.get("exit_code"), signal=self._exit.get("signal"))
        r.error = describe_failure(r)
        return r

    def wait(self, timeout: Optional[float] = None, on_stdout: Optional[OutputHandler] = None,
             on_stderr: Optional[OutputHandler] = None, raise_on_error: bool = True) -> CommandResult:
        """Streams the output (to the callbacks) until the process exits; raises
        CommandExitException on a non-zero exit like E2B, SafehouseTimeoutError after TIMEOUT s."""
        if on_stdout:
            self._on_stdout = on_stdout
        if on_stderr:
            self._on_stderr = on_stderr
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
               url: Optional[str] = None, request_timeout: Optional[float] = None) -> "Sandbox":
        """Creates a sandbox that lives TIMEOUT seconds (unless killed or extended)."""
        http = _Http(ConnectionConfig.resolve(url, api_key, request_timeout))
        try:
            resp = http.request("POST", "/v1/sandboxes", json=create_body(policy, preset, timeout, env, metadata))
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

    def get_info(self) -> SandboxInfo:
        self._info = SandboxInfo.from_json(self._http.request("GET", sb_path(self.id)).json())
        return self._info

    def set_timeout(self, timeout: int) -> SandboxInfo:
        """The sandbox now expires TIMEOUT seconds from now."""
        resp = self._http.request("POST", sb_path(self.id, "/timeout"), json={"timeout_s": int(timeout)})
        self._info = SandboxInfo.from_json(resp.json())
        return self._info

    def is_running(self) -> bool:
        try:
            return self.get_info().state == "running"
        except NotFoundError:
            return False

    def kill(self) -> bool:
        """Kills the sandbox (idempotent); False if the daemon does not know it."""
        try:
            self._http.request("DELETE", sb_path(self.id))
            return True
        except NotFoundError:
            return False

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
