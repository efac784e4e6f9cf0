"""Bearer API keys. Keys are compared by hash in constant time and never logged; a caller's
identity (the key's sha256) becomes the owner of the studies it creates."""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

OPEN_PATHS = frozenset({"/health"})


def key_identity(key: str) -> str:
    """What is stored for a key: its sha256 (the key itself is never stored or logged)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyMiddleware:
    """401 unless `Authorization: Bearer <key>` names a configured key (except on open paths)."""

    def __init__(self, app: ASGIApp, keys: list[str], metrics_open: bool = True):
        self.app = app
        self._identities = [key_identity(k) for k in keys]
        self._open = OPEN_PATHS | ({"/metrics"} if metrics_open else set())

    def _identify(self, header: bytes | None) -> str | None:
        if not header:
            return None
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        candidate = key_identity(token.strip())
        match = None
        for identity in self._identities:  # compare with every key: timing does not tell which matched
            if hmac.compare_digest(candidate, identity):
                match = identity
        return match

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open:
            await self.app(scope, receive, send)
            return
        identity = self._identify(dict(scope["headers"]).get(b"authorization"))
        if identity is None:
            response = error_response(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="colecache"'},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = identity
        await self.app(scope, receive, send)
