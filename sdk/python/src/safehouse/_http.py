"""The HTTP transport of both clients: one pooled httpx client per sandbox handle, transport
errors and error statuses turned into the SDK's exceptions, and a helper for callbacks that
may be coroutine functions."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import httpx

from ._config import ConnectionConfig, acheck, check, translate
from .exceptions import error_from_response


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


class _AsyncHttp:
    """One httpx.AsyncClient per sandbox, as _Http."""

    def __init__(self, config: ConnectionConfig, timeout: Optional[httpx.Timeout] = None) -> None:
        self.config = config
        kw = config.client_kwargs()
        if timeout is not None:
            kw["timeout"] = timeout
        self._kw = kw
        self.client = httpx.AsyncClient(**kw)

    def _client(self) -> httpx.AsyncClient:
        if self.client.is_closed:  # reopened on use after close()
            self.client = httpx.AsyncClient(**self._kw)
        return self.client

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self._client()
        try:
            return await acheck(await self.client.request(method, path, **kw))
        except httpx.HTTPError as e:
            raise translate(e) from e

    async def stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self._client()
        try:
            resp = await self.client.send(self.client.build_request(method, path, **kw), stream=True)
        except httpx.HTTPError as e:
            raise translate(e) from e
        if resp.status_code >= 400:
            try:
                body = await resp.aread()
            finally:
                await resp.aclose()
            raise error_from_response(resp.status_code, body)
        return resp

    async def close(self) -> None:
        await self.client.aclose()


async def _call(cb: Optional[Callable[[Any], Any]], arg: Any) -> None:
    """Calls CB with ARG, awaiting the result when CB is a coroutine function."""
    if cb is not None:
        r = cb(arg)
        if asyncio.iscoroutine(r):
            await r
