"""Typed exceptions: one class per kind of failure, each carrying the server's own message."""

from __future__ import annotations

from typing import Any


class ColecacheError(Exception):
    """Base class of everything this SDK raises."""


class TransportError(ColecacheError):
    """The server could not be reached, or the connection broke (after retries)."""


class Timeout(TransportError):
    """The request took longer than the client's timeout (after retries)."""


class APIError(ColecacheError):
    """The server answered with an error status. `detail` is its message, `errors` its per-item list."""

    status_code: int = 0

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, Any]] | None = None, body: Any = None):
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []
        self.body = body
        super().__init__(f"{status_code}: {detail}")


class BadRequest(APIError):
    """400."""


class AuthenticationError(APIError):
    """401 / 403: missing or wrong API key."""


class NotFound(APIError):
    """404: no such study (for this API key)."""


class Conflict(APIError):
    """409: an observation conflicts with a stored value, or too few observations to predict."""


class PayloadTooLarge(APIError):
    """413: too many items or too large a body (the client chunks, so this is rare)."""


class ValidationError(APIError):
    """422: invalid spec, value or option; `errors` names each bad item and why."""


class RateLimited(APIError):
    """429: the server's queue is full; `retry_after` says when to come back."""

    def __init__(self, *args, retry_after: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx."""


class ServiceUnavailable(ServerError):
    """503: the server is loading its model or shutting down."""

    def __init__(self, *args, retry_after: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_for(status_code: int, body: Any, retry_after: float | None) -> APIError:
    """The exception for an error response (the body is the server's JSON, or text)."""
    detail, errors = str(body), None
    if isinstance(body, dict):
        raw = body.get("detail", body)
        if isinstance(raw, list):  # FastAPI's own validation errors
            errors = raw
            detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in raw)
        else:
            detail = str(raw)
        errors = body.get("errors", errors)
    cls = _BY_STATUS.get(status_code, ServerError if status_code >= 500 else APIError)
    if cls in (RateLimited, ServiceUnavailable):
        return cls(status_code, detail, errors, body, retry_after=retry_after)
    return cls(status_code, detail, errors, body)
