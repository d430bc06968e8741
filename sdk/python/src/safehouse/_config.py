"""Where the daemon is and which key to use; shared request helpers of the sync and async
clients."""
from __future__ import annotations

import dataclasses
import os
import ssl
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import httpx

from . import _tls
from ._local import local_daemon
from .exceptions import SafehouseError, SafehouseTimeoutError, error_from_response

DEFAULT_URL = "http://127.0.0.1:8700"
#: Extra seconds the HTTP client waits beyond a command's own timeout.
HTTP_GRACE_S = 30.0
CHUNK = 1 << 20
#: The most stdin a foreground run carries: it rides in the JSON request, which the daemon
#: caps at 1 MiB; the rest of the body (command, env) gets the margin.
STDIN_CAP = (1 << 20) - (64 << 10)


@dataclasses.dataclass(frozen=True)
class ConnectionConfig:
    url: str
    api_key: Optional[str] = dataclasses.field(repr=False)  # never in a repr or a log line
    request_timeout: float = 60.0
    #: How an https:// daemon's certificate is verified (SAFEHOUSE_CA_CERT,
    #: SAFEHOUSE_TLS_FINGERPRINT: docs/tls.md); None: the default trust store, or plain http.
    ssl_context: Optional[ssl.SSLContext] = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def resolve(cls, url: Optional[str] = None, api_key: Optional[str] = None,
                request_timeout: Optional[float] = None) -> "ConnectionConfig":
        env_url, env_key = os.environ.get("SAFEHOUSE_URL"), os.environ.get("SAFEHOUSE_API_KEY")
        if not (url or env_url or api_key or env_key):
            url, api_key = local_daemon()
        u = (url or env_url or DEFAULT_URL).rstrip("/")
        k = api_key if api_key is not None else env_key
        return cls(u, k or None, request_timeout if request_timeout is not None else 60.0, _tls.ssl_context(u))

    def headers(self) -> Dict[str, str]:
        h = {"User-Agent": "safehouse-python/0.1.0"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def ws_url(self, path: str) -> str:
        if self.url.startswith("https://"):
            return "wss://" + self.url[len("https://"):] + path
        if self.url.startswith("http://"):
            return "ws://" + self.url[len("http://"):] + path
        return self.url + path

    def client_kwargs(self) -> Dict[str, Any]:
        kw: Dict[str, Any] = {"base_url": self.url, "headers": self.headers(),
                              "timeout": httpx.Timeout(self.request_timeout, connect=10.0)}
        if self.ssl_context is not None:
            kw["verify"] = self.ssl_context
        return kw

    def ws_kwargs(self) -> Dict[str, Any]:
        """The TLS part of a `websockets` connect() to a wss:// URL."""
        return {"ssl": self.ssl_context} if self.ssl_context is not None else {}


def sb_path(sandbox_id: str, rest: str = "") -> str:
    return f"/v1/sandboxes/{quote(sandbox_id, safe='')}{rest}"


def explain_params(**questions: Optional[str]) -> Dict[str, str]:
    """The query of `GET .../policy/explain`: exactly one question."""
    asked = {k: v for k, v in questions.items() if v is not None}
    if len(asked) != 1:
        raise ValueError("ask exactly one question: net='host:port', exec=PATH, read=PATH or write=PATH")
    return asked


def port_path(sandbox_id: str, port: int, path: str = "/") -> str:
    """The port proxy's path for PATH (with its query) on PORT inside the sandbox."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, not {port!r}")
    return sb_path(sandbox_id, f"/ports/{port}/{path.lstrip('/')}")


#: Codes with which the daemon itself (not the service behind the port proxy) answers.
_PROXY_CODES = {"port_closed", "port_unreachable", "port_timeout", "bad_gateway", "unsupported", "capacity",
                "not_running", "frozen", "unauthorized", "invalid_request"}


def daemon_refusal(resp: httpx.Response) -> Optional[SafehouseError]:
    """The error when a port-proxy response is the daemon's own refusal (nothing listens, the
    sandbox is gone or frozen, a bad key) rather than the service's answer; else None."""
    if resp.status_code < 400 or not resp.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(err, dict):
        return None
    code, message = err.get("code"), str(err.get("message", ""))
    if code in _PROXY_CODES or (code == "not_found" and message.startswith("no such sandbox")) or (
            code == "forbidden" and "gateway" in message):
        return error_from_response(resp.status_code, resp.content)
    return None


def check(resp: httpx.Response) -> httpx.Response:
    """Raises the typed exception for an error status (reads the body of a streamed response)."""
    if resp.status_code >= 400:
        try:
            body = resp.content
        except httpx.ResponseNotRead:
            body = resp.read()
        raise error_from_response(resp.status_code, body)
    return resp


async def acheck(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 400:
        body = await resp.aread()
        raise error_from_response(resp.status_code, body)
    return resp


def translate(exc: httpx.HTTPError) -> SafehouseError:
    if isinstance(exc, httpx.TimeoutException):
        return SafehouseTimeoutError(f"request timed out: {exc}")
    try:
        where = f" at {exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
    except RuntimeError:  # no request attached
        where = ""
    tls = _tls.cert_failure(exc)
    if tls:
        return SafehouseError(f"cannot talk to the safehouse daemon{where}: {tls}")
    return SafehouseError(f"cannot reach the safehouse daemon{where}: {exc}; start it (`safehouse serve`) or set "
                          "SAFEHOUSE_URL to where it listens (with neither SAFEHOUSE_URL nor SAFEHOUSE_API_KEY set, "
                          "the SDK starts a local daemon itself)")


def create_body(policy: Any, preset: Optional[str], timeout: Optional[int],
                env: Optional[Mapping[str, str]], metadata: Optional[Mapping[str, str]],
                persistence: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """PERSISTENCE: `storage`, `lifecycle`, `snapshot`, `volumes`, `template` as the API takes them
    (None values left out)."""
    body: Dict[str, Any] = {k: v for k, v in (persistence or {}).items() if v is not None}
    if isinstance(policy, str):
        # TOML text, as in a policy file (a path is not read: pass open(path).read()).
        from .policy import Policy
        policy = Policy.from_toml(policy)
    if policy is not None:
        if not (hasattr(policy, "to_dict") or isinstance(policy, Mapping)):
            raise TypeError(f"policy= takes a Policy, a dict or TOML text, not {type(policy).__name__}")
        body["policy"] = policy.to_dict() if hasattr(policy, "to_dict") else dict(policy)
    if preset is not None:
        body["preset"] = preset
    if timeout is not None:
        body["timeout_s"] = int(timeout)
    if env:
        body["env"] = dict(env)
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def list_params(metadata: Optional[Mapping[str, str]], state: Optional[str]) -> Dict[str, str]:
    q = {f"metadata.{k}": v for k, v in (metadata or {}).items()}
    if state:
        q["state"] = state
    return q


Cmd = Union[str, Sequence[str]]


def cmd_json(cmd: Cmd) -> Union[str, List[str]]:
    return cmd if isinstance(cmd, str) else [str(a) for a in cmd]


def exec_body(cmd: Cmd, envs: Optional[Mapping[str, str]], cwd: Optional[str], timeout: Optional[float],
              stdin: Optional[Union[str, bytes]], memory: Optional[Union[str, int]]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"cmd": cmd_json(cmd)}
    if envs:
        body["env"] = dict(envs)
    if cwd is not None:
        body["cwd"] = cwd
    if timeout is not None:
        body["timeout_s"] = timeout
    if stdin is not None:
        text = stdin.decode() if isinstance(stdin, bytes) else stdin
        if len(text.encode()) > STDIN_CAP:
            raise ValueError(f"stdin of {len(text.encode())} bytes is over what a foreground run carries "
                             f"({STDIN_CAP} bytes: the daemon takes JSON bodies up to 1 MiB); write it to a file with "
                             "files.write() and redirect it (\"cmd < /workspace/input\"), or run in the background "
                             "and send_stdin()")
        body["stdin"] = text
    if memory is not None:
        body["limits"] = {"memory": memory}
    return body


def process_body(cmd: Cmd, envs: Optional[Mapping[str, str]], cwd: Optional[str]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"cmd": cmd_json(cmd)}
    if envs:
        body["env"] = dict(envs)
    if cwd is not None:
        body["cwd"] = cwd
    return body


def to_bytes(data: Union[str, bytes]) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


#: Languages of `run_code` and the argv that runs a snippet.
CODE_RUNNERS: Dict[str, Tuple[str, ...]] = {
    "python": ("python3", "-c"),
    "python3": ("python3", "-c"),
    "bash": ("bash", "-c"),
    "sh": ("/bin/sh", "-c"),
    "javascript": ("node", "-e"),
    "js": ("node", "-e"),
    "node": ("node", "-e"),
}


def code_argv(code: str, language: str) -> List[str]:
    try:
        return [*CODE_RUNNERS[language.lower()], code]
    except KeyError:
        raise ValueError(f"run_code: unknown language {language!r}; use one of "
                         f"{', '.join(sorted(CODE_RUNNERS))}") from None
