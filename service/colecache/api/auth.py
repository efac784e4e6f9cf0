"""Bearer API keys. Keys are compared by hash in constant time and never logged; a caller's
identity (the key's sha256) becomes the owner of the studies it creates.

The report pages under /ui are for browsers, which cannot send a bearer header: there the key
comes from an HttpOnly, SameSite=Strict cookie set by the login form (/ui/login), and a request
without a valid one is sent to that form instead of getting a 401."""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

OPEN_PATHS = frozenset({"/health", "/ready", "/ui/login"})  # probes (compose, Kubernetes) send no key
UI_PREFIX = "/ui"
KEY_COOKIE = "colecache_key"


def cookie_key(headers: dict[bytes, bytes]) -> str | None:
    """The API key from the report pages' cookie, if any."""
    raw = headers.get(b"cookie")
    if not raw:
        return None
    try:
        morsel = SimpleCookie(raw.decode("latin-1")).get(KEY_COOKIE)
    except CookieError:
        return None
    return morsel.value if morsel is not None and morsel.value else None


def is_page(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


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
        return self.identify_key(token.strip())

    def identify_key(self, key: str) -> str | None:
        """The identity of `key` if it is a configured key, else None."""
        candidate = key_identity(key)
        match = None
        for identity in self._identities:  # compare with every key: timing does not tell which matched
            if hmac.compare_digest(candidate, identity):
                match = identity
        return match

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        identity = self._identify(headers.get(b"authorization"))
        if identity is None and is_page(scope["path"]):
            key = cookie_key(headers)
            identity = self.identify_key(key) if key else None
            if identity is None:  # a browser: to the login form, then back here
                target = scope["path"] + (
                    "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
                )
                response = RedirectResponse(f"{UI_PREFIX}/login?next={quote(target, safe='')}", status_code=303)
                await response(scope, receive, send)
                return
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
