"""Long-lived streams of both clients: directory watches and the event stream (Server-Sent
Events), as iterators and with callbacks."""
from __future__ import annotations

import asyncio
import json
import queue
import socket
import threading
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Tuple

import httpx

from ._config import ConnectionConfig, translate
from ._http import _AsyncHttp, _call, _Http
from ._sse import aiter_sse, iter_sse
from .exceptions import AuthenticationError, SafehouseError
from .models import FilesystemEvent, SandboxEvent

_STOP = object()


def revoked_error(data: str) -> AuthenticationError:
    """The error a stream ends with when the daemon says its API key was revoked
    (`event: revoked`, docs/api.md "Revocation")."""
    try:
        message = str(json.loads(data).get("message") or "the API key was revoked")
    except (ValueError, AttributeError):
        message = "the API key was revoked"
    return AuthenticationError(message, status=401, code="unauthorized")


# The close code of an attach WebSocket whose API key was revoked (policy violation).
REVOKED_CLOSE_CODE = 1008


def attach_closed_error(pid: int, e: Exception, what: str) -> SafehouseError:
    """The error for an attach WebSocket that closed (`websockets`' ConnectionClosed):
    AuthenticationError when the daemon closed it because the key was revoked."""
    rcvd = getattr(e, "rcvd", None)
    if rcvd is not None and getattr(rcvd, "code", None) == REVOKED_CLOSE_CODE:
        return AuthenticationError(getattr(rcvd, "reason", "") or "the API key was revoked", status=401,
                                   code="unauthorized")
    return SafehouseError(f"attach connection to process {pid} {what}: {e}")


def _shutdown_socket(resp: httpx.Response) -> None:
    """Wakes a thread blocked reading RESP (closing alone does not interrupt a recv)."""
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class WatchHandle:
    """A running directory watch (E2B's WatchHandle): `stop()`, `get_new_events()`, or
    iterate it; also a context manager that stops on exit."""

    def __init__(self, config: ConnectionConfig, route: str, path: str, recursive: bool,
                 on_event: Optional[Callable[[FilesystemEvent], Any]],
                 on_exit: Optional[Callable[[Optional[Exception]], Any]]) -> None:
        self.path = path
        self._on_event = on_event
        self._on_exit = on_exit
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._stopped = False
        self._http = _Http(config, httpx.Client(**{**config.client_kwargs(),
                                                   "timeout": httpx.Timeout(None, connect=10.0)}))
        params = {"path": path, "recursive": "1" if recursive else "0"}
        try:
            self._resp = self._http.stream("GET", route, params=params)
        except BaseException:
            self._http.close()
            raise
        self._thread = threading.Thread(target=self._read, name=f"safehouse-watch {path}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        err: Optional[Exception] = None
        try:
            for event, data in iter_sse(self._resp.iter_lines()):
                if event == "revoked":
                    raise revoked_error(data)
                if event != "fs":
                    continue
                ev = FilesystemEvent.from_sse(data, self.path)
                if self._on_event is not None:
                    self._on_event(ev)
                else:
                    self._queue.put(ev)
        except Exception as e:  # a stop() closes the stream under us: not an error
            if not self._stopped:
                err = translate(e) if isinstance(e, httpx.HTTPError) else e
        finally:
            self._queue.put(_STOP)
            if self._on_exit is not None:
                self._on_exit(err)

    def get_new_events(self) -> List[FilesystemEvent]:
        """The events that arrived since the last call (without an on_event callback)."""
        out: List[FilesystemEvent] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is _STOP:
                self._queue.put(_STOP)
                return out
            out.append(item)

    def __iter__(self) -> Iterator[FilesystemEvent]:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._queue.put(_STOP)
                return
            yield item

    def stop(self) -> None:
        """Ends the watch (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        _shutdown_socket(self._resp)
        self._resp.close()
        self._thread.join(timeout=5)
        self._http.close()

    def __enter__(self) -> "WatchHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class EventStream:
    """The daemon's event stream as an iterator of SandboxEvent. Ends by itself after a
    sandbox's terminal event (per-sandbox stream) or after the replay (`follow=False`);
    `close()` (or leaving the `with` block) ends it early. Raises AuthenticationError when
    the API key it was opened with is revoked."""

    def __init__(self, config: ConnectionConfig, route: str, params: Dict[str, str],
                 timeout: Optional[float]) -> None:
        self._http = _Http(config, httpx.Client(**{**config.client_kwargs(),
                                                   "timeout": httpx.Timeout(timeout, connect=10.0)}))
        try:
            self._resp = self._http.stream("GET", route, params=params)
        except BaseException:
            self._http.close()
            raise
        self._events = iter_sse(self._resp.iter_lines())
        self._closing = False

    def __iter__(self) -> Iterator[SandboxEvent]:
        return self

    def __next__(self) -> SandboxEvent:
        try:
            event, data = next(self._events)
        except StopIteration:
            self.close()
            raise
        except (httpx.HTTPError, httpx.StreamError) as e:
            closing = self._closing
            self.close()
            if closing:  # close() from another thread: the end, not an error
                raise StopIteration from None
            if isinstance(e, httpx.HTTPError):
                raise translate(e) from e
            raise SafehouseError(f"event stream ended: {e}") from e
        if event == "revoked":
            self.close()
            raise revoked_error(data)
        return SandboxEvent.from_sse(event, data)

    def close(self) -> None:
        """Ends the stream; safe from another thread (a blocked `next` then ends)."""
        self._closing = True
        _shutdown_socket(self._resp)
        self._resp.close()
        self._http.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncWatchHandle:
    """A running directory watch: `await stop()`, `get_new_events()`, or `async for ev in handle`."""

    def __init__(self, http: _AsyncHttp, resp: httpx.Response, path: str,
                 on_event: Optional[Callable[[FilesystemEvent], Any]],
                 on_exit: Optional[Callable[[Optional[Exception]], Any]]) -> None:
        self.path = path
        self._http = http
        self._resp = resp
        self._on_event = on_event
        self._on_exit = on_exit
        self._queue: "asyncio.Queue[Any]" = asyncio.Queue()
        self._stopped = False
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        err: Optional[Exception] = None
        try:
            async for event, data in aiter_sse(self._resp.aiter_lines()):
                if event == "revoked":
                    raise revoked_error(data)
                if event != "fs":
                    continue
                ev = FilesystemEvent.from_sse(data, self.path)
                if self._on_event is not None:
                    await _call(self._on_event, ev)
                else:
                    self._queue.put_nowait(ev)
        except asyncio.CancelledError:
            pass
        except Exception as e:
            if not self._stopped:
                err = translate(e) if isinstance(e, httpx.HTTPError) else e
        finally:
            self._queue.put_nowait(_STOP)
            await _call(self._on_exit, err)

    def get_new_events(self) -> List[FilesystemEvent]:
        out: List[FilesystemEvent] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _STOP:
                self._queue.put_nowait(_STOP)
                break
            out.append(item)
        return out

    def __aiter__(self) -> AsyncIterator[FilesystemEvent]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[FilesystemEvent]:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                self._queue.put_nowait(_STOP)
                return
            yield item

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self._resp.aclose()
        await self._http.close()

    async def __aenter__(self) -> "AsyncWatchHandle":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class AsyncEventStream:
    """The event stream as an async iterator of SandboxEvent (`async with` closes it)."""

    def __init__(self, config: ConnectionConfig, route: str, params: Dict[str, str],
                 timeout: Optional[float]) -> None:
        self._http = _AsyncHttp(config, httpx.Timeout(timeout, connect=10.0))
        self._route = route
        self._params = params
        self._resp: Optional[httpx.Response] = None
        self._events: Optional[AsyncIterator[Tuple[str, str]]] = None

    async def _open(self) -> AsyncIterator[Tuple[str, str]]:
        if self._events is None:
            self._resp = await self._http.stream("GET", self._route, params=self._params)
            self._events = aiter_sse(self._resp.aiter_lines())
        return self._events

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> SandboxEvent:
        events = await self._open()
        try:
            event, data = await events.__anext__()
        except StopAsyncIteration:
            await self.close()
            raise
        except httpx.HTTPError as e:
            await self.close()
            raise translate(e) from e
        if event == "revoked":
            await self.close()
            raise revoked_error(data)
        return SandboxEvent.from_sse(event, data)

    async def close(self) -> None:
        if self._resp is not None:
            await self._resp.aclose()
        await self._http.close()

    async def __aenter__(self) -> "AsyncEventStream":
        await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
