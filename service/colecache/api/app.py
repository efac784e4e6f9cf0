"""The FastAPI application: settings in, lifespan builds the services, routers serve them."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..embedding.backend import TransformerBackend
from ..settings import Settings, get_settings
from . import observability
from .auth import ApiKeyMiddleware
from .errors import BodyLimitMiddleware, install_error_handlers
from .routes import embed, health, openai, studies
from .state import Services, load_model, open_stores, shutdown

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, backend: TransformerBackend | None = None) -> FastAPI:
    """Build the app. `backend` injects an already-loaded model (tests use tiny local models)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services = Services(settings=settings, cache=await open_stores(settings))
        app.state.services = services
        # The model loads in the background: /health answers at once, /ready once it is warm.
        services.loader = asyncio.create_task(load_model(services, backend), name="colecache-load-model")
        try:
            yield
        finally:
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
    app.add_middleware(observability.ObservabilityMiddleware)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(embed.router)
    app.include_router(studies.router)
    app.include_router(openai.router)
    app.include_router(observability.router)
    return app
