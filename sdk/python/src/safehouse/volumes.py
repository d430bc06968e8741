"""Volumes (docs/persistence.md): named, size-capped persistent directories of the key's
tenant, mounted into sandboxes with `Sandbox.create(volumes=[{"name", "path", "read_only"}])`
and usable without a sandbox through `volume.files` (the sandbox filesystem's calls, rooted
at the volume)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Union
from urllib.parse import quote

from ._config import ConnectionConfig
from ._http import _AsyncHttp, _Http
from .async_sandbox import AsyncFilesystem
from .exceptions import NotFoundError
from .sandbox import Filesystem


def volume_path(name: str, rest: str = "") -> str:
    return f"/v1/volumes/{quote(name, safe='')}{rest}"


def _size(size: Union[int, str]) -> Union[int, str]:
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"size must be a number of bytes or a size such as '1GiB', not {size!r}")
    return size


@dataclasses.dataclass
class VolumeInfo:
    name: str
    size: int
    created_at: str

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "VolumeInfo":
        return cls(name=d["name"], size=int(d["size"]), created_at=d.get("created_at", ""))


class VolumeFilesystem(Filesystem):
    """A volume's files without a sandbox: read, write, list, get_info, exists, remove,
    rename, make_dir (no watch_dir: a volume has no live sandbox to watch)."""

    def __init__(self, http: _Http, name: str) -> None:
        super().__init__(http, name)
        self._name = name

    def _p(self, rest: str) -> str:
        return volume_path(self._name, rest)

    def watch_dir(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("watch_dir needs a sandbox: watch the volume's path in a sandbox that mounts it")


class AsyncVolumeFilesystem(AsyncFilesystem):
    def __init__(self, http: _AsyncHttp, name: str) -> None:
        super().__init__(http, name)
        self._name = name

    def _p(self, rest: str) -> str:
        return volume_path(self._name, rest)

    async def watch_dir(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("watch_dir needs a sandbox: watch the volume's path in a sandbox that mounts it")


class Volume:
    """A volume of the key's tenant. `Volume.create(name, size)`, `Volume.connect(name)`,
    `Volume.list()`, `Volume.delete(name)`; `volume.files` works on its files."""

    def __init__(self, info: VolumeInfo, http: _Http) -> None:
        self.info = info
        self.name = info.name
        self._http = http
        self.files = VolumeFilesystem(http, info.name)

    @classmethod
    def create(cls, name: str, size: Union[int, str], api_key: Optional[str] = None,
               url: Optional[str] = None) -> "Volume":
        """A new volume capped at SIZE (bytes, or "1GiB"); ConflictError if the name is taken."""
        http = _Http(ConnectionConfig.resolve(url, api_key))
        resp = http.request("POST", "/v1/volumes", json={"name": name, "size": _size(size)})
        return cls(VolumeInfo.from_json(resp.json()), http)

    @classmethod
    def connect(cls, name: str, api_key: Optional[str] = None, url: Optional[str] = None) -> "Volume":
        """An existing volume; NotFoundError if the tenant has none of that name."""
        http = _Http(ConnectionConfig.resolve(url, api_key))
        for v in http.request("GET", "/v1/volumes").json().get("volumes", []):
            if v["name"] == name:
                return cls(VolumeInfo.from_json(v), http)
        http.close()
        raise NotFoundError(f"no volume named {name!r}", status=404, code="not_found")

    @staticmethod
    def list(api_key: Optional[str] = None, url: Optional[str] = None) -> List[VolumeInfo]:
        http = _Http(ConnectionConfig.resolve(url, api_key))
        try:
            return [VolumeInfo.from_json(v) for v in http.request("GET", "/v1/volumes").json().get("volumes", [])]
        finally:
            http.close()

    @staticmethod
    def delete(name: str, api_key: Optional[str] = None, url: Optional[str] = None) -> bool:
        """Deletes the volume and its files; False if there was none; ConflictError while a
        sandbox (paused ones included) mounts it."""
        http = _Http(ConnectionConfig.resolve(url, api_key))
        try:
            http.request("DELETE", volume_path(name))
            return True
        except NotFoundError:
            return False
        finally:
            http.close()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Volume":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncVolume:
    """The async twin of Volume."""

    def __init__(self, info: VolumeInfo, http: _AsyncHttp) -> None:
        self.info = info
        self.name = info.name
        self._http = http
        self.files = AsyncVolumeFilesystem(http, info.name)

    @classmethod
    async def create(cls, name: str, size: Union[int, str], api_key: Optional[str] = None,
                     url: Optional[str] = None) -> "AsyncVolume":
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        resp = await http.request("POST", "/v1/volumes", json={"name": name, "size": _size(size)})
        return cls(VolumeInfo.from_json(resp.json()), http)

    @classmethod
    async def connect(cls, name: str, api_key: Optional[str] = None, url: Optional[str] = None) -> "AsyncVolume":
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        for v in (await http.request("GET", "/v1/volumes")).json().get("volumes", []):
            if v["name"] == name:
                return cls(VolumeInfo.from_json(v), http)
        await http.close()
        raise NotFoundError(f"no volume named {name!r}", status=404, code="not_found")

    @staticmethod
    async def list(api_key: Optional[str] = None, url: Optional[str] = None) -> List[VolumeInfo]:
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        try:
            resp = await http.request("GET", "/v1/volumes")
            return [VolumeInfo.from_json(v) for v in resp.json().get("volumes", [])]
        finally:
            await http.close()

    @staticmethod
    async def delete(name: str, api_key: Optional[str] = None, url: Optional[str] = None) -> bool:
        http = _AsyncHttp(ConnectionConfig.resolve(url, api_key))
        try:
            await http.request("DELETE", volume_path(name))
            return True
        except NotFoundError:
            return False
        finally:
            await http.close()

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> "AsyncVolume":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
