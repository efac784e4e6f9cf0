"""Map domain errors to status codes: bad input is a 4xx that names the item and the reason, never a 500."""

from __future__ import annotations

import logging
import math

from colecache_client.spaces import SpecError
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..embedding.fingerprint import FingerprintError
from ..embedding.queue import QueueClosed, QueueFull
from ..pipeline import TruncatedItems
from ..specs import InvalidSpecs
from ..studies.repository import ObservationConflict, StudyNotFound
from ..studies.service import NotEnoughObservations
from .responses import FastJSONResponse

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
    return FastJSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
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
        errors = [
            {
                "index": c.index,
                "reason": f"already observed with value {c.stored!r}, posted {c.posted!r}; "
                "post with on_conflict='replace' or 'keep' to resolve",
            }
            for c in exc.conflicts
        ]
        return error_response(409, f"{exc}; nothing was stored", errors)

    @app.exception_handler(NotEnoughObservations)
    async def _not_enough(_: Request, exc: NotEnoughObservations):
        return error_response(409, str(exc))

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull):
        return error_response(429, str(exc), headers={"Retry-After": str(math.ceil(exc.retry_after))})

    @app.exception_handler(QueueClosed)
    async def _queue_closed(_: Request, exc: QueueClosed):
        return error_response(503, str(exc), headers={"Retry-After": "5"})


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
