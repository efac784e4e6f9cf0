"""Request-scoped access to the running services.

All dependencies are `async def`: FastAPI runs plain `def` ones in a thread pool, which costs
more than everything a cached /embed does.
"""

from __future__ import annotations

from fastapi import Request

from ..pipeline import EmbedPipeline
from ..proxies.measure import ProxyMeasurer
from ..studies.service import StudyService
from .errors import NotReady
from .state import Services


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_pipeline(request: Request) -> EmbedPipeline:
    services: Services = request.app.state.services
    if services.pipeline is None:
        raise NotReady(services.startup_error or "model is loading")
    return services.pipeline


async def get_studies(request: Request) -> StudyService:
    services: Services = request.app.state.services
    if services.studies is None:
        raise NotReady(services.startup_error or "model is loading")
    return services.studies


async def get_owner(request: Request) -> str | None:
    """Who owns what this request creates or reads: the caller's API-key identity (None without auth)."""
    return getattr(request.state, "owner", None)


async def get_proxies(request: Request) -> ProxyMeasurer:
    services: Services = request.app.state.services
    if services.proxies is None:
        raise NotReady(services.startup_error or "stores are opening")
    return services.proxies
