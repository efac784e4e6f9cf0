"""Request-scoped access to the running services."""

from __future__ import annotations

from fastapi import Request

from ..pipeline import EmbedPipeline
from ..studies.service import StudyService
from .errors import NotReady
from .state import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_pipeline(request: Request) -> EmbedPipeline:
    services = get_services(request)
    if services.pipeline is None:
        raise NotReady(services.startup_error or "model is loading")
    return services.pipeline


def get_studies(request: Request) -> StudyService:
    services = get_services(request)
    if services.studies is None:
        raise NotReady(services.startup_error or "model is loading")
    return services.studies


def get_owner(request: Request) -> str | None:
    """Who owns what this request creates or reads: the caller's API-key identity (None without auth)."""
    return getattr(request.state, "owner", None)
