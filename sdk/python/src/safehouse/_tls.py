"""How the SDK trusts an `https://` daemon (docs/tls.md), as the CLI does: the CA file in
`SAFEHOUSE_CA_CERT`, the leaf certificate's SHA-256 in `SAFEHOUSE_TLS_FINGERPRINT` (a pin:
the name and issuer then do not matter), both (chain and pin must hold), or else the default
trust store (`SSL_CERT_FILE` honoured). Verification is never skipped.

The pin is checked inside the TLS handshake (before any request, so before the API key is
sent), by the SSLSocket/SSLObject classes of the context: that covers httpx (sync and async)
and the attach WebSockets alike."""
from __future__ import annotations

import hashlib
import os
import ssl
from typing import Optional

ENV_CA = "SAFEHOUSE_CA_CERT"
ENV_FINGERPRINT = "SAFEHOUSE_TLS_FINGERPRINT"

FIX = ("set SAFEHOUSE_CA_CERT to the CA certificate that issued the daemon's certificate (DATA_DIR/tls/ca.crt "
       "for `safehouse serve --tls-self-signed`) or SAFEHOUSE_TLS_FINGERPRINT to the SHA-256 fingerprint "
       "`safehouse serve` printed")


def parse_fingerprint(value: str) -> bytes:
    """`AB:CD:...`, `abcd...` or `sha256:...`: 32 bytes."""
    t = value.strip()
    for prefix in ("sha256:", "SHA256:"):
        if t.startswith(prefix):
            t = t[len(prefix):]
    t = t.replace(":", "")
    try:
        digest = bytes.fromhex(t)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"{ENV_FINGERPRINT}={value!r}: write the 64 hex digits of a SHA-256 fingerprint "
                         "(AB:CD:... as `safehouse serve` prints it)")
    return digest


def colons(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def _check_pin(der: Optional[bytes], pin: bytes) -> None:
    got = hashlib.sha256(der or b"").digest()
    if got != pin:
        raise ssl.SSLCertVerificationError(
            f"the daemon's certificate fingerprint is {colons(got)}, not the pinned {ENV_FINGERPRINT} {colons(pin)}")


def _pinned_classes(pin: bytes):
    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, *a, **kw):  # type: ignore[override]
            super().do_handshake(*a, **kw)
            _check_pin(self.getpeercert(binary_form=True), pin)

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            _check_pin(self.getpeercert(binary_form=True), pin)

    return PinnedSocket, PinnedObject


def ssl_context(url: str) -> Optional[ssl.SSLContext]:
    """The context for `url` the environment asks for; None: the client's default (verifying
    against the default trust store) or plain http."""
    if not url.startswith("https://"):
        return None
    ca = os.environ.get(ENV_CA) or None
    fp = os.environ.get(ENV_FINGERPRINT, "").strip() or None
    if not ca and not fp:
        return None
    if ca:
        if not os.path.isfile(ca):
            raise ValueError(f"{ENV_CA}={ca}: no such file (the PEM CA certificate that issued the daemon's)")
        try:
            ctx = ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, OSError) as e:
            raise ValueError(f"{ENV_CA}={ca}: not a PEM certificate file ({e})") from e
    else:
        # Only the pin decides: the chain and the name are not checked, the certificate's hash is.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if fp:
        ctx.sslsocket_class, ctx.sslobject_class = _pinned_classes(parse_fingerprint(fp))
    return ctx


def cert_failure(exc: BaseException) -> Optional[str]:
    """The message for a refused certificate somewhere in `exc`'s causes, or None."""
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = getattr(e, "verify_message", None) or (e.args[0] if e.args else str(e))
            return f"the daemon's TLS certificate is not trusted: {detail}; {FIX}"
        if isinstance(e, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(e):
            return f"the daemon did not answer in TLS ({e}); if it serves plain HTTP, use http:// in SAFEHOUSE_URL"
        for inner in (e.__cause__, e.__context__, *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]):
            if isinstance(inner, BaseException) and id(inner) not in seen:
                e = inner
                break
        else:
            e = None
    return None
