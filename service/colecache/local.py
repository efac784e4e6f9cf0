"""Run the pipeline in this process (CLI `embed`, `precompute`): same stores, same code path as the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .api.state import Services, load_model, make_proxy_measurer, open_stores, shutdown
from .settings import Settings, get_settings


class ModelUnavailable(RuntimeError):
    """The configured model could not be loaded (the reason is the message; the log has the traceback)."""


@asynccontextmanager
async def local_stores(settings: Settings | None = None) -> AsyncIterator[Services]:
    """Open the configured stores only (no model): enough for zero-cost proxies."""
    settings = settings or get_settings()
    services = Services(settings=settings, cache=await open_stores(settings))
    services.proxies = make_proxy_measurer(settings, services.cache)
    try:
        yield services
    finally:
        await shutdown(services)


@asynccontextmanager
async def local_services(settings: Settings | None = None) -> AsyncIterator[Services]:
    """Open the configured stores and load the model; raise ModelUnavailable if it cannot be made ready."""
    async with local_stores(settings) as services:
        await load_model(services)
        if services.pipeline is None:
            raise ModelUnavailable(f"model failed to load: {services.startup_error}")
        yield services
