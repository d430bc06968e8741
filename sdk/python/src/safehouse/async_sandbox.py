"""The asyncio client: `AsyncSandbox`, the same surface as `Sandbox` with async methods."""
from __future__ import annotations

import asyncio
import base64
import codecs
import json
from typing import (IO, Any, AsyncIterator, Awaitable, Callable, Dict, List, Literal, Mapping, Optional,
                    Sequence, Tuple, Union, overload)
from urllib.parse import quote

import httpx

from ._config import (CHUNK, HTTP_GRACE_S, Cmd, ConnectionConfig, code_argv, create_body, daemon_refusal,
                      exec_body, explain_params, list_params, port_path, process_body, sb_path, to_bytes, translate)
from ._either import either
from ._http import _AsyncHttp, _call
from ._streams import AsyncEventStream, AsyncWatchHandle, attach_closed_error
from ._tls import cert_failure
from .admin import AsyncAdmin, KillAllResult
from .code import (ONE_SHOT_LANGUAGES, Context, Execution, code_body, contexts_of, execution_of_command,
                   parse_line)
from .exceptions import (CommandExitException, NotFoundError, SafehouseError, SafehouseTimeoutError,
                         error_from_response)
from .models import (CommandResult, EntryInfo, FilesystemEvent, Metrics, ProcessInfo, PtySize, SandboxInfo,
                     WriteEntry, describe_failure)
from .policy import Policy
from .sandbox import _timeout_s

OutputHandler = Callable[[str], Union[Any, Awaitable[Any]]]
PtyHandler = Callable[[bytes], Union[Any, Awaitable[Any]]]
Signal = Union[int, str]
Chunk = Tuple[Optional[str], Optional[str], Optional[bytes]]


class AsyncCommandHandle:
    """A background process: `async for stdout, stderr, _ in handle`, or `await handle.wait()`."""

    def __init__(self, commands: "AsyncCommands", pid: int, on_stdout: Optional[OutputHandler] = None,
                 on_stderr: Optional[OutputHandler] = None, on_pty: Optional[PtyHandler] = None,
                 pty: bool = False) -> None:
        self._commands = commands
        self.pid = pid
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._on_pty = on_pty
        self._pty = pty
        #: Refusals of frames sent over the attach socket (e.g. a resize of a non-PTY process).
        self.errors: List[str] = []
        self._timer: Optional[asyncio.TimerHandle] = None
        self._ws: Any = None
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._dec_out = codecs.getincrementaldecoder("utf-8")("replace")
        self._dec_err = codecs.getincrementaldecoder("utf-8")("replace")
        self._exit: Optional[Dict[str, Any]] = None
        self.dropped_bytes = 0

    async def _connect(self) -> Any:
        if self._ws is None:
            from websockets.asyncio.client import connect
            from websockets.exceptions import InvalidStatus

            cfg = self._commands._http.config
            url = cfg.ws_url(sb_path(self._commands._sandbox_id, f"/processes/{self.pid}/attach"))
            try:
                self._ws = await connect(url, additional_headers=cfg.headers(), **cfg.ws_kwargs(), open_timeout=15,
                                         max_size=None, compression=None)
            except InvalidStatus as e:
                raise error_from_response(e.response.status_code, bytes(e.response.body or b"")) from e
            except (OSError, asyncio.TimeoutError) as e:
                raise SafehouseError(f"cannot attach to process {self.pid}: {cert_failure(e) or e}") from e
        return self._ws

    async def _next(self) -> Optional[Chunk]:
        from websockets.exceptions import ConnectionClosed

        ws = await self._connect()
        while self._exit is None:
            try:
                msg = await ws.recv()
            except ConnectionClosed as e:
                raise attach_closed_error(self.pid, e, "closed before its exit") from e
            frame: Dict[str, Any] = {"type": "stdout", "raw": msg} if isinstance(msg, bytes) else json.loads(msg)
            t = frame.get("type")
            if t in ("stdout", "stderr"):
                data = frame["raw"] if "raw" in frame else base64.b64decode(frame.get("data", ""))
                if t == "stdout" and self._pty:
                    self._stdout += data
                    await _call(self._on_pty, bytes(data))
                    if data:
                        return None, None, bytes(data)
                elif t == "stdout":
                    self._stdout += data
                    text = self._dec_out.decode(data)
                    if text:
                        await _call(self._on_stdout, text)
                        return text, None, None
                else:
                    self._stderr += data
                    text = self._dec_err.decode(data)
                    if text:
                        await _call(self._on_stderr, text)
                        return None, text, None
            elif t == "truncated":
                self.dropped_bytes += int(frame.get("dropped_bytes", 0))
            elif t == "exit":
                self._exit = frame
                if self._timer is not None:
                    self._timer.cancel()
                await self._close_ws()
            elif t == "error":  # the daemon refused a frame we sent
                self.errors.append(f"{frame.get('code')}: {frame.get('message')}")
        return None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Chunk]:
        while True:
            chunk = await self._next()
            if chunk is None:
                return
            yield chunk

    async def _drain(self) -> None:
        while await self._next() is not None:
            pass

    async def wait(self, timeout: Optional[float] = None, on_stdout: Optional[OutputHandler] = None,
                   on_stderr: Optional[OutputHandler] = None, raise_on_error: bool = True,
                   on_pty: Optional[PtyHandler] = None) -> CommandResult:
        if on_stdout:
            self._on_stdout = on_stdout
        if on_stderr:
            self._on_stderr = on_stderr
        if on_pty:
            self._on_pty = on_pty
        try:
            await asyncio.wait_for(self._drain(), timeout)
        except asyncio.TimeoutError as e:
            await self._close_ws()
            raise SafehouseTimeoutError(f"process {self.pid} did not exit in time") from e
        assert self._exit is not None
        r = CommandResult(stdout=self._stdout.decode(errors="replace"), stderr=self._stderr.decode(errors="replace"),
                          exit_code=self._exit.get("exit_code"), signal=self._exit.get("signal"),
                          wall_ms=self._exit.get("wall_ms"), cpu_ms=self._exit.get("cpu_ms"),
                          peak_memory_bytes=self._exit.get("peak_memory_bytes"))
        r.error = describe_failure(r)
        if raise_on_error and r.exit_code != 0:
            raise CommandExitException(r)
        return r

    @property
    def exit_code(self) -> Optional[int]:
        return None if self._exit is None else self._exit.get("exit_code")

    async def send_stdin(self, data: Union[str, bytes]) -> None:
        await self._commands.send_stdin(self.pid, data)

    async def close_stdin(self) -> None:
        await self._commands.close_stdin(self.pid)

    async def signal(self, sig: Signal) -> bool:
        return await self._commands.signal(self.pid, sig)

    async def kill(self) -> bool:
        return await self._commands.kill(self.pid)

    async def resize(self, size: PtySize) -> None:
        """Sets a PTY's terminal size."""
        from websockets.exceptions import ConnectionClosed

        ws = await self._connect()
        try:
            await ws.send(json.dumps({"type": "resize", "rows": int(size.rows), "cols": int(size.cols)}))
        except ConnectionClosed as e:
            raise attach_closed_error(self.pid, e, "closed") from e

    async def _close_ws(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            try:
                await ws.close()
            except Exception:
                pass

    async def disconnect(self) -> None:
        await self._close_ws()


class AsyncCommands:
    def __init__(self, http: _AsyncHttp, sandbox_id: str) -> None:
        self._http = http
        self._sandbox_id = sandbox_id

    def _p(self, rest: str) -> str:
        return sb_path(self._sandbox_id, rest)

    @overload
    async def run(self, cmd: Cmd, envs: Optional[Mapping[str, str]] = ..., cwd: Optional[str] = ...,
                  timeout: Optional[float] = ..., stdin: Optional[Union[str, bytes]] = ...,
                  memory: Optional[Union[str, int]] = ..., background: Literal[False] = ...,
                  on_stdout: Optional[OutputHandler] = ..., on_stderr: Optional[OutputHandler] = ...,
                  raise_on_error: bool = ...) -> CommandResult: ...

    @overload
    async def run(self, cmd: Cmd, envs: Optional[Mapping[str, str]] = ..., cwd: Optional[str] = ...,
                  timeout: Optional[float] = ..., stdin: Optional[Union[str, bytes]] = ...,
                  memory: Optional[Union[str, int]] = ..., *, background: Literal[True],
                  on_stdout: Optional[OutputHandler] = ..., on_stderr: Optional[OutputHandler] = ...,
                  raise_on_error: bool = ...) -> AsyncCommandHandle: ...

    async def run(self, cmd: Cmd, envs: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                  timeout: Optional[float] = 60, stdin: Optional[Union[str, bytes]] = None,
                  memory: Optional[Union[str, int]] = None, background: bool = False,
                  on_stdout: Optional[OutputHandler] = None, on_stderr: Optional[OutputHandler] = None,
                  raise_on_error: bool = True) -> Union[CommandResult, AsyncCommandHandle]:
        """See `Commands.run`; callbacks may be plain functions or coroutine functions."""
        if background or on_stdout or on_stderr:
            if memory is not None:
                raise ValueError("memory= applies to foreground commands only")
            resp = await self._http.request("POST", self._p("/processes"), json=process_body(cmd, envs, cwd))
            handle = AsyncCommandHandle(self, int(resp.json()["pid"]), on_stdout, on_stderr)
            if stdin is not None:
                await self.send_stdin(handle.pid, stdin)
                await self.close_stdin(handle.pid)
            if background:
                return handle
            try:
                return await handle.wait(timeout=_timeout_s(timeout), raise_on_error=raise_on_error)
            except SafehouseTimeoutError:
                await handle.kill()
                raise
        t = _timeout_s(timeout)
        resp = await self._http.request("POST", self._p("/exec"), json=exec_body(cmd, envs, cwd, t, stdin, memory),
                                        timeout=(t or 60) + HTTP_GRACE_S)
        result = CommandResult.from_json(resp.json())
        if raise_on_error and (result.exit_code != 0 or result.timed_out):
            raise CommandExitException(result)
        return result

    async def connect(self, pid: int, on_stdout: Optional[OutputHandler] = None,
                      on_stderr: Optional[OutputHandler] = None) -> AsyncCommandHandle:
        if not any(p.pid == pid for p in await self.list()):
            raise NotFoundError(f"no process {pid} in sandbox {self._sandbox_id}", status=404, code="not_found")
        return AsyncCommandHandle(self, pid, on_stdout, on_stderr)

    async def list(self) -> List[ProcessInfo]:
        resp = await self._http.request("GET", self._p("/processes"))
        return [ProcessInfo.from_json(p) for p in resp.json().get("processes", [])]

    async def signal(self, pid: int, sig: Signal) -> bool:
        try:
            await self._http.request("POST", self._p(f"/processes/{pid}/signal"), json={"signal": sig})
            return True
        except NotFoundError:
            return False

    async def kill(self, pid: int) -> bool:
        return await self.signal(pid, "SIGKILL")

    async def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        await self._http.request("POST", self._p(f"/processes/{pid}/stdin"), content=to_bytes(data),
                                 headers={"Content-Type": "application/octet-stream"})

    async def close_stdin(self, pid: int) -> None:
        await self._http.request("POST", self._p(f"/processes/{pid}/stdin"), params={"eof": "1"}, content=b"",
                                 headers={"Content-Type": "application/octet-stream"})


async def _afile_chunks(f: IO[Any]) -> AsyncIterator[bytes]:
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return
        yield chunk.encode() if isinstance(chunk, str) else chunk


class AsyncFilesystem:
    def __init__(self, http: _AsyncHttp, sandbox_id: str) -> None:
        self._http = http
        self._sandbox_id = sandbox_id

    def _p(self, rest: str) -> str:
        return sb_path(self._sandbox_id, rest)

    @overload
    async def read(self, path: str, format: Literal["text"] = ...) -> str: ...

    @overload
    async def read(self, path: str, format: Literal["bytes"]) -> bytearray: ...

    @overload
    async def read(self, path: str, format: Literal["stream"]) -> AsyncIterator[bytes]: ...

    async def read(self, path: str, format: Literal["text", "bytes", "stream"] = "text"
                   ) -> Union[str, bytearray, AsyncIterator[bytes]]:
        if format == "stream":
            resp = await self._http.stream("GET", self._p("/files"), params={"path": path})
            return self._iter(resp)
        resp = await self._http.request("GET", self._p("/files"), params={"path": path})
        if format == "bytes":
            return bytearray(resp.content)
        if format == "text":
            return resp.content.decode("utf-8", errors="replace")
        raise ValueError(f"format must be 'text', 'bytes' or 'stream', not {format!r}")

    @staticmethod
    async def _iter(resp: httpx.Response) -> AsyncIterator[bytes]:
        try:
            try:
                async for chunk in resp.aiter_bytes(CHUNK):
                    yield chunk
            except httpx.HTTPError as e:
                raise translate(e) from e
        finally:
            await resp.aclose()

    async def write(self, path: str, data: Union[str, bytes, IO[Any]]) -> EntryInfo:
        headers = {"Content-Type": "application/octet-stream"}
        content: Any
        if isinstance(data, (str, bytes, bytearray, memoryview)):
            content = to_bytes(data) if isinstance(data, (str, bytes)) else bytes(data)
        else:
            from .sandbox import _length_of

            n = _length_of(data)
            if n is not None:
                headers["Content-Length"] = str(n)
            content = _afile_chunks(data)
        resp = await self._http.request("PUT", self._p("/files"), params={"path": path}, content=content,
                                        headers=headers, timeout=httpx.Timeout(120.0, connect=10.0))
        return EntryInfo.from_json(resp.json())

    async def write_files(self, files: Sequence[WriteEntry]) -> List[EntryInfo]:
        """Writes several files, one after the other; stops at the first error."""
        return [await self.write(f.path, f.data) for f in files]

    async def list(self, path: str, depth: int = 1) -> List[EntryInfo]:
        resp = await self._http.request("GET", self._p("/fs/list"), params={"path": path, "depth": str(depth)})
        return [EntryInfo.from_json(e) for e in resp.json().get("entries", [])]

    async def get_info(self, path: str) -> EntryInfo:
        resp = await self._http.request("GET", self._p("/fs/stat"), params={"path": path})
        return EntryInfo.from_json(resp.json())

    stat = get_info

    async def exists(self, path: str) -> bool:
        try:
            await self.get_info(path)
            return True
        except NotFoundError:
            return False

    async def remove(self, path: str) -> None:
        await self._http.request("DELETE", self._p("/fs"), params={"path": path, "recursive": "1"})

    async def rename(self, old_path: str, new_path: str) -> EntryInfo:
        resp = await self._http.request("POST", self._p("/fs/move"), json={"from": old_path, "to": new_path})
        return EntryInfo.from_json(resp.json())

    async def watch_dir(self, path: str, on_event: Optional[Callable[[FilesystemEvent], Any]] = None,
                        on_exit: Optional[Callable[[Optional[Exception]], Any]] = None,
                        recursive: bool = False) -> AsyncWatchHandle:
        """Watches PATH; events go to ON_EVENT (sync or async) or `async for ev in handle`.
        The watch is in place when this returns; `await handle.stop()` ends it."""
        http = _AsyncHttp(self._http.config, httpx.Timeout(None, connect=10.0))
        try:
            resp = await http.stream("GET", self._p("/fs/watch"),
                                     params={"path": path, "recursive": "1" if recursive else "0"})
        except BaseException:
            await http.close()
            raise
        return AsyncWatchHandle(http, resp, path, on_event, on_exit)

    async def make_dir(self, path: str) -> bool:
        try:
            await self._http.request("POST", self._p("/fs/mkdir"), json={"path": path, "parents": False})
            return True
        except NotFoundError:
            await self._http.request("POST", self._p("/fs/mkdir"), json={"path": path, "parents": True})
            return True
        except SafehouseError as e:
            if e.code == "already_exists":
                return False
            raise


class AsyncPty:
    """Interactive terminals (`sbx.pty`), as Pty with async methods."""

    def __init__(self, commands: AsyncCommands) -> None:
        self._commands = commands

    async def create(self, size: PtySize = PtySize(), on_data: Optional[PtyHandler] = None,
                     cwd: Optional[str] = None, envs: Optional[Mapping[str, str]] = None,
                     cmd: Cmd = ("/bin/bash", "-i", "-l"), timeout: Optional[float] = None) -> AsyncCommandHandle:
        env = {"TERM": "xterm-256color", **dict(envs or {})}
        body = process_body(cmd, env, cwd)
        body["pty"] = {"rows": int(size.rows), "cols": int(size.cols)}
        resp = await self._commands._http.request("POST", self._commands._p("/processes"), json=body)
        handle = AsyncCommandHandle(self._commands, int(resp.json()["pid"]), on_pty=on_data, pty=True)
        await handle._connect()
        if timeout:
            handle._timer = asyncio.get_running_loop().call_later(
                timeout, lambda: asyncio.ensure_future(handle.kill()))
        return handle

    async def connect(self, pid: int, on_data: Optional[PtyHandler] = None) -> AsyncCommandHandle:
        await self._commands.connect(pid)
        return AsyncCommandHandle(self._commands, pid, on_pty=on_data, pty=True)

    async def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        await self._commands.send_stdin(pid, data)

    async def resize(self, pid: int, size: PtySize) -> None:
        handle = AsyncCommandHandle(self._commands, pid, pty=True)
        try:
            await handle.resize(size)
        finally:
            await handle.disconnect()

    async def kill(self, pid: int) -> bool:
        return await self._commands.kill(pid)


async def _kill_request(http: _AsyncHttp, sandbox_id: str) -> bool:
    try:
        await http.request("DELETE", sb_path(sandbox_id))
        return True
    except NotFoundError:
        return False


async def _kill_by_id(sandbox_id: str, api_key: Optional[str] = None, url: Optional[str] = None) -> bool:
    http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
    try:
        return await _kill_request(http, sandbox_id)
    finally:
        await http.close()


async def _info_by_id(sandbox_id: str, api_key: Optional[str] = None, url: Optional[str] = None) -> SandboxInfo:
    http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
    try:
        return SandboxInfo.from_json((await http.request("GET", sb_path(sandbox_id))).json())
    finally:
        await http.close()


async def _set_timeout_by_id(sandbox_id: str, timeout: int, api_key: Optional[str] = None,
                             url: Optional[str] = None) -> SandboxInfo:
    http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
    try:
        resp = await http.request("POST", sb_path(sandbox_id, "/timeout"), json={"timeout_s": int(timeout)})
        return SandboxInfo.from_json(resp.json())
    finally:
        await http.close()


class AsyncSandbox:
    """    async with await AsyncSandbox.create() as sbx:
            r = await sbx.commands.run("echo hi")"""

    def __init__(self, info: SandboxInfo, http: _AsyncHttp) -> None:
        self._info = info
        self._http = http
        self.commands = AsyncCommands(http, info.id)
        self.files = AsyncFilesystem(http, info.id)
        self.pty = AsyncPty(self.commands)

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def sandbox_id(self) -> str:
        return self._info.id

    @classmethod
    async def create(cls, policy: Optional[Union[Policy, Dict[str, Any]]] = None, preset: Optional[str] = None,
                     timeout: Optional[int] = 300, env: Optional[Mapping[str, str]] = None,
                     metadata: Optional[Mapping[str, str]] = None, api_key: Optional[str] = None,
                     url: Optional[str] = None, request_timeout: Optional[float] = None,
                     storage: Optional[str] = None, lifecycle: Optional[Mapping[str, Any]] = None,
                     snapshot: Optional[str] = None,
                     volumes: Optional[List[Mapping[str, Any]]] = None,
                     template: Optional[str] = None) -> "AsyncSandbox":
        """See `Sandbox.create`."""
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key, request_timeout))
        persistence = {"storage": storage, "lifecycle": dict(lifecycle) if lifecycle else None,
                       "snapshot": snapshot, "volumes": [dict(v) for v in volumes] if volumes else None,
                       "template": template}
        try:
            resp = await http.request("POST", "/v1/sandboxes",
                                      json=create_body(policy, preset, timeout, env, metadata, persistence))
        except BaseException:
            await http.close()
            raise
        return cls(SandboxInfo.from_json(resp.json()), http)

    @classmethod
    async def connect(cls, sandbox_id: str, api_key: Optional[str] = None, url: Optional[str] = None,
                      request_timeout: Optional[float] = None) -> "AsyncSandbox":
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key, request_timeout))
        try:
            resp = await http.request("GET", sb_path(sandbox_id))
        except BaseException:
            await http.close()
            raise
        return cls(SandboxInfo.from_json(resp.json()), http)

    @staticmethod
    async def list(metadata: Optional[Mapping[str, str]] = None, state: Optional[str] = None,
                   api_key: Optional[str] = None, url: Optional[str] = None) -> List[SandboxInfo]:
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        try:
            resp = await http.request("GET", "/v1/sandboxes", params=list_params(metadata, state))
            return [SandboxInfo.from_json(s) for s in resp.json().get("sandboxes", [])]
        finally:
            await http.close()

    async def _get_info(self) -> SandboxInfo:
        """The sandbox's state, deadline and metadata (also `await AsyncSandbox.get_info(sandbox_id)`)."""
        self._info = SandboxInfo.from_json((await self._http.request("GET", sb_path(self.id))).json())
        return self._info

    async def _set_timeout(self, timeout: int) -> SandboxInfo:
        """Expires TIMEOUT seconds from now (also `await AsyncSandbox.set_timeout(sandbox_id, timeout)`)."""
        resp = await self._http.request("POST", sb_path(self.id, "/timeout"), json={"timeout_s": int(timeout)})
        self._info = SandboxInfo.from_json(resp.json())
        return self._info

    async def is_running(self) -> bool:
        try:
            return (await self.get_info()).state == "running"
        except NotFoundError:
            return False

    async def _kill(self) -> bool:
        """Kills the sandbox (idempotent); False if unknown. Also `await AsyncSandbox.kill(sandbox_id)`."""
        return await _kill_request(self._http, self.id)

    get_info = either(_info_by_id, _get_info)
    set_timeout = either(_set_timeout_by_id, _set_timeout)
    kill = either(_kill_by_id, _kill)

    async def run_code(self, code: str, language: Optional[str] = None, context: Optional[Any] = None,
                       envs: Optional[Mapping[str, str]] = None, timeout: Optional[float] = 60,
                       on_stdout: Optional[OutputHandler] = None, on_stderr: Optional[OutputHandler] = None,
                       on_result: Optional[OutputHandler] = None,
                       on_error: Optional[OutputHandler] = None) -> Execution:
        """Runs CODE in the sandbox's code interpreter (see Sandbox.run_code); callbacks may
        be coroutine functions."""
        if language and language.lower() in ONE_SHOT_LANGUAGES:
            r = await self.commands.run(code_argv(code, language), envs=envs, timeout=timeout, on_stdout=on_stdout,
                                        on_stderr=on_stderr, raise_on_error=False)
            return execution_of_command(r)
        body = code_body(code, language, context, dict(envs) if envs else None, timeout)
        handlers = {"on_stdout": on_stdout, "on_stderr": on_stderr, "on_result": on_result, "on_error": on_error}
        read = None if timeout is None else timeout + HTTP_GRACE_S
        resp = await self._http.stream("POST", sb_path(self.id, "/code"), json=body,
                                       timeout=httpx.Timeout(read, connect=HTTP_GRACE_S))
        execution = Execution()
        try:
            async for line in resp.aiter_lines():
                call = parse_line(execution, line)
                if call:
                    await _call(handlers[call[0]], call[1])
        except httpx.HTTPError as e:
            raise translate(e) from e
        finally:
            await resp.aclose()
        return execution

    async def create_code_context(self, cwd: Optional[str] = None, language: Optional[str] = None,
                                  envs: Optional[Mapping[str, str]] = None) -> Context:
        body: Dict[str, Any] = {}
        if cwd:
            body["cwd"] = cwd
        if language:
            body["language"] = language
        if envs:
            body["env"] = dict(envs)
        return Context.from_json((await self._http.request("POST", sb_path(self.id, "/contexts"), json=body)).json())

    async def list_code_contexts(self) -> List[Context]:
        return contexts_of((await self._http.request("GET", sb_path(self.id, "/contexts"))).json())

    async def restart_code_context(self, context: Any) -> Context:
        cid = context.id if isinstance(context, Context) else str(context)
        resp = await self._http.request("POST", sb_path(self.id, f"/contexts/{cid}/restart"))
        return Context.from_json(resp.json())

    async def remove_code_context(self, context: Any) -> None:
        cid = context.id if isinstance(context, Context) else str(context)
        await self._http.request("DELETE", sb_path(self.id, f"/contexts/{cid}"))

    def port_url(self, port: int, path: str = "/") -> str:
        """The daemon URL that reaches PORT inside the sandbox (see Sandbox.port_url)."""
        return self._http.config.url + port_path(self.id, port, path)

    async def request_port(self, port: int, method: str = "GET", path: str = "/", **kw: Any) -> httpx.Response:
        """An HTTP request to the service on PORT inside the sandbox (see Sandbox.request_port)."""
        client = self._http._client()
        try:
            resp = await client.request(method, port_path(self.id, port, path), **kw)
        except httpx.HTTPError as e:
            raise translate(e) from e
        refusal = daemon_refusal(resp)
        if refusal is not None:
            raise refusal
        return resp

    async def get_policy(self) -> Optional[Dict[str, Any]]:
        """The policy this sandbox was created with (None when it was made without one)."""
        return (await self._http.request("GET", sb_path(self.id, "/policy"))).json().get("policy")

    async def explain(self, net: Optional[str] = None, exec: Optional[str] = None, read: Optional[str] = None,
                 write: Optional[str] = None) -> Dict[str, Any]:
        """Would this sandbox's policy allow it? Exactly one of NET (`host:port`), EXEC, READ or
        WRITE (a sandbox path). The answer: `allowed`, the `rule` that decides, `reason`, `hint`."""
        params = explain_params(net=net, exec=exec, read=read, write=write)
        return (await self._http.request("GET", sb_path(self.id, "/policy/explain"), params=params)).json()

    async def get_metrics(self) -> Metrics:
        return Metrics.from_json((await self._http.request("GET", sb_path(self.id, "/metrics"))).json())

    def events(self, follow: bool = True, since_seq: int = 0, timeout: Optional[float] = None) -> AsyncEventStream:
        """This sandbox's events (`async for ev in sbx.events()`); see Sandbox.events."""
        params = {"follow": "1" if follow else "0", "since_seq": str(int(since_seq))}
        return AsyncEventStream(self._http.config, sb_path(self.id, "/events"), params, timeout)

    @staticmethod
    def all_events(follow: bool = True, replay: bool = True, timeout: Optional[float] = None,
                   api_key: Optional[str] = None, url: Optional[str] = None) -> AsyncEventStream:
        params = {"follow": "1" if follow else "0", "replay": "1" if replay else "0"}
        return AsyncEventStream(ConnectionConfig.resolve(url, api_key), "/v1/events", params, timeout)

    async def freeze(self) -> SandboxInfo:
        resp = await self._http.request("POST", sb_path(self.id, "/freeze"))
        self._info = SandboxInfo.from_json(resp.json())
        return self._info

    async def thaw(self) -> SandboxInfo:
        resp = await self._http.request("POST", sb_path(self.id, "/thaw"))
        self._info = SandboxInfo.from_json(resp.json())
        return self._info


    async def pause(self) -> Dict[str, Any]:
        """See `Sandbox.pause`."""
        resp = await self._http.request("POST", sb_path(self.id, "/pause"))
        self._info = SandboxInfo.from_json({**self._info.raw, "state": "paused"})
        return resp.json()

    async def resume(self) -> SandboxInfo:
        """See `Sandbox.resume`."""
        resp = await self._http.request("POST", sb_path(self.id, "/resume"))
        self._info = SandboxInfo.from_json(resp.json())
        return self._info

    async def snapshot(self) -> Dict[str, Any]:
        """See `Sandbox.snapshot`."""
        return (await self._http.request("POST", sb_path(self.id, "/snapshots"))).json()

    async def fork(self, count: int = 1) -> List[SandboxInfo]:
        """See `Sandbox.fork`."""
        resp = await self._http.request("POST", sb_path(self.id, "/fork"), json={"count": int(count)})
        return [SandboxInfo.from_json(s) for s in resp.json().get("sandboxes", [])]

    @staticmethod
    async def list_templates(api_key: Optional[str] = None, url: Optional[str] = None) -> List[Dict[str, Any]]:
        """See `Sandbox.list_templates`."""
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        try:
            return list((await http.request("GET", "/v1/templates")).json().get("templates", []))
        finally:
            await http.close()

    @staticmethod
    async def list_snapshots(api_key: Optional[str] = None, url: Optional[str] = None) -> List[Dict[str, Any]]:
        """See `Sandbox.list_snapshots`."""
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        try:
            return list((await http.request("GET", "/v1/snapshots")).json().get("snapshots", []))
        finally:
            await http.close()

    @staticmethod
    async def delete_snapshot(snapshot_id: str, api_key: Optional[str] = None, url: Optional[str] = None) -> bool:
        """See `Sandbox.delete_snapshot`."""
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        try:
            await http.request("DELETE", f"/v1/snapshots/{quote(snapshot_id, safe='')}")
            return True
        except NotFoundError:
            return False
        finally:
            await http.close()

    @staticmethod
    async def kill_all(api_key: Optional[str] = None, url: Optional[str] = None) -> KillAllResult:
        async with AsyncAdmin(api_key, url) as admin:
            return await admin.kill_all()

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.kill()
        finally:
            await self.close()

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r}, state={self._info.state!r})"
