"""Daemon-wide calls, sync (`Admin`) and async (`AsyncAdmin`): API keys, the audit log
export, health, Prometheus metrics and the emergency stop."""
from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

import httpx

from ._config import ConnectionConfig
from ._http import _AsyncHttp, _Http
from .exceptions import SafehouseError
from .models import ApiKey


@dataclasses.dataclass
class KillAllResult:
    """What `POST /v1/kill-all` stopped: how many sandboxes, in how many milliseconds."""

    killed: int
    ms: int


#: Calls over the whole fleet wait for every sandbox (kill-all, freeze-all, thaw-all, verify).
_FLEET_TIMEOUT = httpx.Timeout(300.0, connect=10.0)


@dataclasses.dataclass
class FleetResult:
    """What freeze-all / thaw-all did: how many sandboxes, in how many milliseconds, and the
    ones that failed (`[{id, error}]`)."""

    count: int
    ms: int
    failed: List[Dict[str, Any]]

    @staticmethod
    def from_json(d: Dict[str, Any], key: str) -> "FleetResult":
        return FleetResult(count=int(d.get(key, 0)), ms=int(d.get("ms", 0)), failed=list(d.get("failed") or []))


def audit_params(sandbox: Optional[str], since: Optional[Union[str, datetime]],
                 until: Optional[Union[str, datetime]], kind: Optional[Union[str, Sequence[str]]],
                 limit: Optional[int]) -> Dict[str, str]:
    q: Dict[str, str] = {}
    if sandbox:
        q["sandbox"] = sandbox
    for name, t in (("since", since), ("until", until)):
        if t is not None:
            q[name] = t.isoformat() if isinstance(t, datetime) else t
    if kind:
        q["kind"] = kind if isinstance(kind, str) else ",".join(kind)
    if limit is not None:
        q["limit"] = str(int(limit))
    return q


def context_tar(context: Union[str, "os.PathLike[str]"]) -> bytes:
    """The directory CONTEXT as a gzip tar, as `docker build` sends a build context."""
    import io
    import tarfile
    if not os.path.isdir(context):
        raise ValueError(f"build context {context!r} is not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(os.fspath(context), arcname=".")
    return buf.getvalue()


def template_params(tag: str, dockerfile: str, build_args: Optional[Mapping[str, str]],
                    no_cache: bool) -> Dict[str, str]:
    params = {"tag": tag, "dockerfile": dockerfile, "wait": "1"}
    if no_cache:
        params["no_cache"] = "1"
    for k, v in (build_args or {}).items():
        params[f"build_arg.{k}"] = v
    return params


class Admin:
    """Daemon-wide calls: API keys (admin key only), the audit log export (admin only), and
    the emergency stop. Connection as for Sandbox (SAFEHOUSE_URL / SAFEHOUSE_API_KEY)."""

    def __init__(self, api_key: Optional[str] = None, url: Optional[str] = None,
                 request_timeout: Optional[float] = None) -> None:
        self._http = _Http(ConnectionConfig.resolve(url, api_key, request_timeout))

    def create_key(self, tenant: str, name: Optional[str] = None) -> ApiKey:
        """A new key for TENANT; its secret is in `.key`, shown only this once."""
        body: Dict[str, Any] = {"tenant": tenant}
        if name is not None:
            body["name"] = name
        return ApiKey.from_json(self._http.request("POST", "/v1/keys", json=body).json())

    def list_keys(self) -> List[ApiKey]:
        return [ApiKey.from_json(k) for k in self._http.request("GET", "/v1/keys").json().get("keys", [])]

    def revoke_key(self, key_id: str) -> None:
        """Revokes a key at once; NotFoundError for an unknown id."""
        self._http.request("DELETE", f"/v1/keys/{quote(key_id, safe='')}")

    def audit(self, sandbox: Optional[str] = None, since: Optional[Union[str, datetime]] = None,
              until: Optional[Union[str, datetime]] = None, kind: Optional[Union[str, Sequence[str]]] = None,
              limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Audit records matching every filter, oldest first (`kind`: api, event, policy,
        checkpoint, log). AuditOffError on a daemon without an audit log."""
        resp = self._http.request("GET", "/v1/audit", params=audit_params(sandbox, since, until, kind, limit))
        return [json.loads(line) for line in resp.text.splitlines() if line.strip()]

    def prometheus(self) -> str:
        """The daemon's Prometheus exposition (`GET /metrics`, admin key only)."""
        return self._http.request("GET", "/metrics").text

    def code_pool(self) -> Dict[str, Any]:
        """The code interpreter's warm pools (`GET /v1/code/pool`): `size`, and per pool its
        `ready` sandboxes, `warming`, `hits`, `misses`, `memory_bytes` (docs/interpreter.md)."""
        return self._http.request("GET", "/v1/code/pool").json()

    def health(self) -> bool:
        """True when the daemon answers `GET /healthz`."""
        try:
            return bool(self._http.request("GET", "/healthz", timeout=5.0).json().get("status") == "ok")
        except SafehouseError:
            return False

    def kill_all(self) -> KillAllResult:
        """The emergency stop: the admin key kills every sandbox on the daemon, other keys their
        tenant's; returns once nothing of them runs."""
        d = self._http.request("POST", "/v1/kill-all", timeout=_FLEET_TIMEOUT).json()
        return KillAllResult(killed=int(d.get("killed", 0)), ms=int(d.get("ms", 0)))

    def whoami(self) -> Dict[str, Any]:
        """Who this key is: `{tenant, key_id, admin}`."""
        return self._http.request("GET", "/v1/whoami").json()

    def freeze_all(self) -> FleetResult:
        """Freezes every running sandbox the key can see (the admin key: all), for investigation;
        `thaw_all` undoes it."""
        return FleetResult.from_json(self._http.request("POST", "/v1/freeze-all", timeout=_FLEET_TIMEOUT).json(),
                                     "frozen")

    def thaw_all(self) -> FleetResult:
        return FleetResult.from_json(self._http.request("POST", "/v1/thaw-all", timeout=_FLEET_TIMEOUT).json(),
                                     "thawed")

    def verify_audit(self) -> Dict[str, Any]:
        """Checks the audit log's hash chain and signatures now (admin key only): the report."""
        return self._http.request("GET", "/v1/audit/verify", timeout=_FLEET_TIMEOUT).json()

    def build_template(self, context: Union[str, "os.PathLike[str]"], tag: str, dockerfile: str = "Dockerfile",
                       build_args: Optional[Mapping[str, str]] = None, no_cache: bool = False,
                       timeout: float = 3600.0) -> Dict[str, Any]:
        """Builds the Dockerfile of the directory CONTEXT into the daemon's store as TAG
        (`POST /v1/templates`, admin key only) and waits for it: the template (`name`,
        `digest`, ...). A failed step raises with its Dockerfile line and output."""
        params = template_params(tag, dockerfile, build_args, no_cache)
        resp = self._http.request("POST", "/v1/templates", params=params, content=context_tar(context),
                                  headers={"Content-Type": "application/x-tar"}, timeout=timeout)
        return dict(resp.json()["template"])

    def quota(self, tenant: Optional[str] = None) -> Dict[str, Any]:
        """What a tenant holds against its quotas and the quotas (`GET /v1/quota`): the key's
        own tenant, or with the admin key any TENANT's (`usage`, `limits`; null: unlimited)."""
        params = {"tenant": tenant} if tenant is not None else None
        return dict(self._http.request("GET", "/v1/quota", params=params).json())

    def list_templates(self) -> List[Dict[str, Any]]:
        """The templates and images of the daemon's store (`GET /v1/templates`)."""
        return list(self._http.request("GET", "/v1/templates").json().get("templates", []))

    def delete_template(self, name: str) -> Dict[str, Any]:
        """Removes a template's name (ConflictError while a sandbox runs on it)."""
        return dict(self._http.request("DELETE", f"/v1/templates/{quote(name, safe='/:@')}").json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncAdmin:
    """Keys, audit export and the emergency stop, as Admin with async methods."""

    def __init__(self, api_key: Optional[str] = None, url: Optional[str] = None,
                 request_timeout: Optional[float] = None) -> None:
        self._http = _AsyncHttp(ConnectionConfig.resolve(url, api_key, request_timeout))

    async def create_key(self, tenant: str, name: Optional[str] = None) -> ApiKey:
        body: Dict[str, Any] = {"tenant": tenant}
        if name is not None:
            body["name"] = name
        return ApiKey.from_json((await self._http.request("POST", "/v1/keys", json=body)).json())

    async def list_keys(self) -> List[ApiKey]:
        resp = await self._http.request("GET", "/v1/keys")
        return [ApiKey.from_json(k) for k in resp.json().get("keys", [])]

    async def revoke_key(self, key_id: str) -> None:
        await self._http.request("DELETE", f"/v1/keys/{quote(key_id, safe='')}")

    async def audit(self, sandbox: Optional[str] = None, since: Optional[Union[str, datetime]] = None,
                    until: Optional[Union[str, datetime]] = None,
                    kind: Optional[Union[str, Sequence[str]]] = None,
                    limit: Optional[int] = None) -> List[Dict[str, Any]]:
        resp = await self._http.request("GET", "/v1/audit", params=audit_params(sandbox, since, until, kind, limit))
        return [json.loads(line) for line in resp.text.splitlines() if line.strip()]

    async def prometheus(self) -> str:
        return (await self._http.request("GET", "/metrics")).text

    async def code_pool(self) -> Dict[str, Any]:
        return (await self._http.request("GET", "/v1/code/pool")).json()

    async def health(self) -> bool:
        try:
            return bool((await self._http.request("GET", "/healthz", timeout=5.0)).json().get("status") == "ok")
        except SafehouseError:
            return False

    async def kill_all(self) -> KillAllResult:
        resp = await self._http.request("POST", "/v1/kill-all", timeout=_FLEET_TIMEOUT)
        d = resp.json()
        return KillAllResult(killed=int(d.get("killed", 0)), ms=int(d.get("ms", 0)))

    async def whoami(self) -> Dict[str, Any]:
        return (await self._http.request("GET", "/v1/whoami")).json()

    async def freeze_all(self) -> FleetResult:
        d = (await self._http.request("POST", "/v1/freeze-all", timeout=_FLEET_TIMEOUT)).json()
        return FleetResult.from_json(d, "frozen")

    async def thaw_all(self) -> FleetResult:
        d = (await self._http.request("POST", "/v1/thaw-all", timeout=_FLEET_TIMEOUT)).json()
        return FleetResult.from_json(d, "thawed")

    async def verify_audit(self) -> Dict[str, Any]:
        return (await self._http.request("GET", "/v1/audit/verify", timeout=_FLEET_TIMEOUT)).json()

    async def build_template(self, context: Union[str, "os.PathLike[str]"], tag: str,
                             dockerfile: str = "Dockerfile", build_args: Optional[Mapping[str, str]] = None,
                             no_cache: bool = False, timeout: float = 3600.0) -> Dict[str, Any]:
        """See `Admin.build_template`."""
        params = template_params(tag, dockerfile, build_args, no_cache)
        resp = await self._http.request("POST", "/v1/templates", params=params, content=context_tar(context),
                                        headers={"Content-Type": "application/x-tar"}, timeout=timeout)
        return dict(resp.json()["template"])

    async def quota(self, tenant: Optional[str] = None) -> Dict[str, Any]:
        """See `Admin.quota`."""
        params = {"tenant": tenant} if tenant is not None else None
        return dict((await self._http.request("GET", "/v1/quota", params=params)).json())

    async def list_templates(self) -> List[Dict[str, Any]]:
        """See `Admin.list_templates`."""
        return list((await self._http.request("GET", "/v1/templates")).json().get("templates", []))

    async def delete_template(self, name: str) -> Dict[str, Any]:
        """See `Admin.delete_template`."""
        return dict((await self._http.request("DELETE", f"/v1/templates/{quote(name, safe='/:@')}")).json())

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> "AsyncAdmin":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
