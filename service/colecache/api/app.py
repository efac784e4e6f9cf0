"""The FastAPI application: settings in, lifespan builds the services, routers serve them."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..embedding.backend import TransformerBackend
from ..settings import Settings, get_settings
from . import observability
from .auth import ApiKeyMiddleware
from .errors import BodyLimitMiddleware, error_response, install_error_handlers
from .responses import FastJSONResponse
from .routes import embed, health, openai, proxies, studies, ui
from .schemas import ErrorBody
from .state import Services, load_model, make_proxy_measurer, on_stop_signal, open_stores, shutdown

log = logging.getLogger(__name__)

SHUTDOWN_RETRY_AFTER_S = 5


def create_app(settings: Settings | None = None, backend: TransformerBackend | None = None) -> FastAPI:
    """Build the app. `backend` injects an already-loaded model (tests use tiny local models)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services = Services(settings=settings, cache=await open_stores(settings))
        services.proxies = make_proxy_measurer(settings, services.cache)
        app.state.services = services
        # The model loads in the background: /health answers at once, /ready once it is warm.
        services.loader = asyncio.create_task(load_model(services, backend), name="colecache-load-model")
        restore_signals = on_stop_signal(services.begin_shutdown)
        try:
            yield
        finally:
            restore_signals()
            await shutdown(services)

    app = FastAPI(
        title="colecache",
        version=__version__,
        summary="COLE code embeddings and surrogate predictions for neural architecture search.",
        lifespan=lifespan,
    )
    # Added innermost first: observability sees everything, auth runs before the body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    keys = settings.api_key_list()
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys, metrics_open=not settings.metrics_auth)
    app.add_middleware(ui.StudyPageRedirect)  # before auth: a browser sends no bearer header
    app.add_middleware(CancelledRequestMiddleware)
    app.add_middleware(observability.ObservabilityMiddleware)
    install_error_handlers(app)
    install_http_error_handler(app)
    app.include_router(health.router)
    app.include_router(embed.router)
    app.include_router(proxies.router)
    app.include_router(studies.router)
    app.include_router(openai.router)
    app.include_router(observability.router)
    app.include_router(ui.router)
    app.openapi = lambda: openapi_document(app, settings)  # type: ignore[method-assign]
    return app


class CancelledRequestMiddleware:
    """A request the server cancels (its shutdown grace period ran out) answers 503 with Retry-After.

    uvicorn would answer a bare 500. Queued embeddings are given up before the grace period ends (see
    `Services.give_up_queued_work`), so this catches the rest: a surrogate fit, a hung store."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not started:
                response = error_response(
                    503,
                    "server shutting down: the request did not finish within the shutdown grace period; retry",
                    headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER_S), "Connection": "close"},
                )
                await response(scope, receive, send)
            raise


def allowed_methods(request: Request, named: str | None) -> str:
    """Every method the path serves. Starlette's 405 names only the first matching route's methods (`named`),
    so the rest are read from the OpenAPI document, which lists every API operation per path template."""
    methods = {m.strip().upper() for m in (named or "").split(",") if m.strip()}
    for path, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(path)[0].match(request.url.path):
            methods.update(method.upper() for method in operations)
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return ", ".join(sorted(methods))


def install_http_error_handler(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        """Routing and parsing errors in the house shape: 404, 405 with a true `Allow`, 400 naming the cause."""
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        errors = None
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request, headers.get("Allow"))
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not read the body as JSON text
            cause = exc.__cause__
            reason = f"not valid JSON text ({type(cause).__name__}: {cause})"
            detail, errors = f"request body is {reason}", [{"field": "body", "reason": reason}]
        if request.url.path.startswith("/v1/"):  # the OpenAI-compatible routes answer in OpenAI's error shape
            body: dict = {"error": {"message": detail, "type": "invalid_request_error", "param": None, "code": None}}
            if errors is not None:
                body["errors"] = errors
            return FastJSONResponse(body, status_code=exc.status_code, headers=headers or None)
        return error_response(exc.status_code, detail, errors, headers or None)


def openapi_document(app: FastAPI, settings: Settings) -> dict:
    """FastAPI's document, plus the bearer-key scheme and its 401 on every route that needs a key."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes
    )
    # FastAPI adds a 422 in its own shape (`detail` a list) to routes with parameters that declare none; the
    # handler in errors.py answers every validation error as ErrorBody (`detail` a string, `errors` a list).
    error_body = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422", {})
            schema = invalid.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref", "").endswith("/HTTPValidationError"):
                invalid["description"] = "Invalid parameter: `errors` names it and why"
                invalid["content"]["application/json"]["schema"] = error_body
    schemas = document.get("components", {}).get("schemas", {})
    if "/HTTPValidationError" not in json.dumps(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    if settings.api_key_list():
        open_paths = {"/health", "/ready"} | (set() if settings.metrics_auth else {"/metrics"})
        components = document.setdefault("components", {})
        components.setdefault("securitySchemes", {})["apiKey"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "One of COLECACHE_API_KEYS (or COLECACHE_API_KEYS_FILE).",
        }
        unauthorized = {
            "description": "Missing or invalid API key",
            "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": error_body}},
        }
        for path, operations in document.get("paths", {}).items():
            if path in open_paths:
                continue
            for operation in operations.values():
                operation["security"] = [{"apiKey": []}]
                operation.setdefault("responses", {})["401"] = unauthorized
    app.openapi_schema = document
    return document
