"""What both clients share about talking HTTP: headers, retry policy, error mapping."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from . import __version__
from .errors import APIError, error_for

RETRY_STATUSES = frozenset({429, 503})
DEFAULT_CHUNK = 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After wins when it gives one."""

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        return min(self.backoff * (2**attempt), self.max_backoff) * random.uniform(0.5, 1.5)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from either of its two forms (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": f"colecache-client/{__version__}", "accept": "application/json"}
    key = api_key if api_key is not None else os.environ.get("COLECACHE_API_KEY")
    if key:
        headers["authorization"] = f"Bearer {key}"
    return headers


def decode(response: httpx.Response, text: bool = False) -> Any:
    """The JSON body of a success (its text when `text`), or raise the typed APIError of a failure."""
    if response.status_code < 400:
        if text:
            return response.text
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise error_for(response.status_code, body, parse_retry_after(response.headers.get("retry-after")))


def retryable(exc: Exception, unsent_only: bool, resend_on_timeout: bool = True) -> bool:
    """Whether a failed attempt may be repeated without risk of doing the work twice.

    A read timeout means the server has the request and may still be working on it: a long call
    (a cold /predict or /embed) is then not re-sent, since a repeat would only queue the same work
    again behind the first (the caller gets a Timeout saying so)."""
    if isinstance(exc, APIError):
        return exc.status_code in RETRY_STATUSES  # the server refused before doing anything
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True  # never reached the server
    if isinstance(exc, httpx.ReadTimeout) and not resend_on_timeout:
        return False
    if isinstance(exc, httpx.TransportError):
        return not unsent_only
    return False


DEFAULT_TIMEOUT_PER_ITEM = 0.5
"""Extra read-timeout seconds per spec a call may have to embed: a cold /predict of 500 NB201 cells took
91 s on 2 CPU cores (0.18 s each), so 0.5 s leaves room for a busier or slower server."""


def call_timeout(base: httpx.Timeout, items: int, per_item: float) -> httpx.Timeout | None:
    """The client's timeout with the read limit lengthened for `items` specs, or None to keep it as it is."""
    if items <= 0 or per_item <= 0 or base.read is None:
        return None
    return httpx.Timeout(connect=base.connect, read=base.read + per_item * items, write=base.write, pool=base.pool)


def timeout_message(method: str, path: str, items: int, timeout: httpx.Timeout | None, exc: Exception) -> str:
    """A read timeout on a long call, explained: what was not done (re-sending) and what to change."""
    seconds = timeout.read if timeout is not None else None
    waited = f"within {seconds:.0f} s" if seconds is not None else "in time"
    return (
        f"no answer to {method} {path} {waited} ({items} spec(s)); not re-sent, because the server may still be "
        f"computing it (a repeat would queue the same work again; what it finishes is cached, so a later call is "
        f"cheaper). For cold calls raise `timeout` or `timeout_per_item` on the client, send fewer specs per call, "
        f"or fill the cache first with `colecache precompute`. ({exc})"
    )


def chunk_limit(info: dict[str, Any] | None, client_max: int | None) -> int:
    server = (info or {}).get("limits", {}).get("max_items_per_request") or DEFAULT_CHUNK
    return min(server, client_max) if client_max else server
