"""Map domain errors to status codes: bad input is a 4xx that names the item and the reason, never a 500."""

from __future__ import annotations

import logging
import math

import orjson
from colecache_client.spaces import SpecError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..embedding.fingerprint import FingerprintError
from ..embedding.queue import QueueClosed, QueueFull
from ..pipeline import TruncatedItems
from ..specs import InvalidSpecs
from ..studies.repository import ObservationConflict, StudyNotFound
from ..studies.service import NotEnoughObservations, UnfittableObservations
from .responses import FastJSONResponse
from .schemas import UnstorableInput

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with a status code and a message meant for the caller."""

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None):
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers
        super().__init__(detail)


class NotReady(ApiError):
    def __init__(self, reason: str):
        super().__init__(503, f"not ready: {reason}", headers={"Retry-After": "5"})


def error_response(status: int, detail: str, errors: list[dict] | None = None, headers=None) -> FastJSONResponse:
    body: dict = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    try:
        return FastJSONResponse(body, status_code=status, headers=headers)
    except (orjson.JSONEncodeError, TypeError):  # a message quoting text orjson refuses (a lone surrogate)
        return FastJSONResponse(_printable(body), status_code=status, headers=headers)


def _printable(value):
    """`value` with every string made valid UTF-8 (surrogates escaped) and anything else orjson refuses as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(str(k)): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    if value is None or isinstance(value, (bool, float)) or (isinstance(value, int) and -(2**63) <= value < 2**63):
        return value
    return _printable(repr(value))


# Request lists whose members are "items": their errors also carry the item's index.
ITEM_LISTS = ("specs", "observations", "candidates", "input")


def field_path(loc: tuple) -> str:
    """('body', 'specs', 0, 'code') -> 'body.specs[0].code'; every part made printable and kept short."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = _printable(str(part))
            text = text if len(text) <= 80 else text[:77] + "..."
            out += f".{text}" if out else text
    return out


def validation_errors(raw: list[dict]) -> list[dict]:
    """FastAPI/pydantic errors as {field, reason[, index]}: the input itself is never echoed.

    FastAPI's default handler echoes each bad value, and the response cannot hold some of them (NaN, lone
    surrogates, integers past 64 bits), which turned a 422 into a 500 and a dropped connection."""
    errors = []
    for err in raw:
        loc = tuple(err.get("loc", ()))
        ctx = err.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, UnstorableInput):
            located = [((*loc, *where), reason) for where, reason in cause.problems]
        else:
            reason = str(err.get("msg", "invalid"))
            if err.get("type") in ("tuple_type", "list_type"):  # JSON has no tuples: say what to send
                reason = 'Input should be a list (a JSON array), e.g. ["a", "b"]'
            if err.get("type") == "json_invalid":  # loc is ('body', character offset), not a field
                reason = f"{reason} at character {loc[-1]}: {cause}" if len(loc) > 1 else reason
                loc = loc[:1]
            located = [(loc, reason)]
        for where, reason in located:
            entry: dict = {"field": field_path(where), "reason": _printable(reason)}
            if len(where) > 2 and where[0] == "body" and where[1] in ITEM_LISTS and isinstance(where[2], int):
                entry["index"] = where[2]
            errors.append(entry)
    return errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):
        errors = validation_errors(list(exc.errors()))
        shown = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        detail = f"{len(errors)} invalid field(s): {shown}{more}"
        if request.url.path.startswith("/v1/"):  # the OpenAI-compatible routes answer in OpenAI's error shape
            param = errors[0]["field"].removeprefix("body.") if errors else None
            error = {"message": detail, "type": "invalid_request_error", "param": param, "code": None}
            return FastJSONResponse({"error": error, "errors": errors}, status_code=422)
        return error_response(422, detail, errors)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return error_response(exc.status, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(InvalidSpecs)
    async def _invalid_specs(_: Request, exc: InvalidSpecs):
        return error_response(422, str(exc), [e.as_dict() for e in exc.errors])

    @app.exception_handler(TruncatedItems)
    async def _truncated(_: Request, exc: TruncatedItems):
        errors = [e.as_dict() for e in exc.errors]
        return error_response(422, f"{len(exc.errors)} item(s) exceed max_length: {exc}", errors)

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError):
        return error_response(422, str(exc))

    @app.exception_handler(FingerprintError)
    async def _fingerprint_error(_: Request, exc: FingerprintError):
        return error_response(422, str(exc))

    @app.exception_handler(StudyNotFound)
    async def _study_not_found(_: Request, exc: StudyNotFound):
        return error_response(404, f"study {exc} not found")

    @app.exception_handler(ObservationConflict)
    async def _conflict(_: Request, exc: ObservationConflict):
        errors = [{"index": c.index, "reason": c.reason} for c in exc.conflicts]
        return error_response(409, f"{exc}; nothing was stored", errors)

    @app.exception_handler(UnfittableObservations)
    async def _unfittable(_: Request, exc: UnfittableObservations):
        return error_response(409, str(exc), exc.errors)

    @app.exception_handler(NotEnoughObservations)
    async def _not_enough(_: Request, exc: NotEnoughObservations):
        return error_response(409, str(exc))

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull):
        return error_response(429, str(exc), headers={"Retry-After": str(math.ceil(exc.retry_after))})

    @app.exception_handler(QueueClosed)
    async def _queue_closed(_: Request, exc: QueueClosed):
        return error_response(503, str(exc), headers={"Retry-After": "5"})

    # --- store failures: the durable store down is 503 + Retry-After (the SDK retries), never a 500.
    # An error a client cannot fix by waiting (a bug) stays a 500, sent with `Connection: close`:
    # uvicorn drops the connection after an exception even once a response went out, and a client
    # that reused it would get a reset on its next request.
    @app.exception_handler(DBAPIError)
    async def _database_error(_: Request, exc: DBAPIError):
        if not (isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated):
            raise exc
        return _database_unavailable(exc)

    @app.exception_handler(PoolTimeout)
    async def _database_pool_timeout(_: Request, exc: PoolTimeout):
        return _database_unavailable(exc)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception):
        return error_response(500, f"internal server error ({type(exc).__name__})", headers={"Connection": "close"})


DATABASE_RETRY_AFTER_S = 2


def _database_unavailable(exc: Exception) -> FastJSONResponse:
    """503: the request was not acknowledged (writes are acknowledged only after their commit), so retry it."""
    reason = getattr(exc, "orig", None) or exc
    log.warning(
        "database unavailable: %s: %s", type(reason).__name__, str(reason).splitlines()[0] if str(reason) else ""
    )
    return error_response(
        503,
        f"database unavailable ({type(reason).__name__}); retry after {DATABASE_RETRY_AFTER_S} s",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


class BodyTooLarge(ApiError):
    def __init__(self, size: int, limit: int):
        super().__init__(413, f"request body of {size}+ bytes exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length up front, or by reading a chunked body first.

    A chunked body is buffered (up to the limit) before the app sees it, because FastAPI turns
    any error raised while it reads the body into a generic 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._reject(scope, receive, send, int(declared))
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(scope, receive, send, len(body))
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        exc = BodyTooLarge(size, self.max_bytes)
        await error_response(exc.status, exc.detail)(scope, receive, send)
