"""Liveness, readiness and what this server serves."""

from __future__ import annotations

from colecache_client.spaces import LOAD_ERRORS as SPACE_LOAD_ERRORS
from colecache_client.spaces import spaces as registered_spaces
from fastapi import APIRouter, Depends

from ..deps import get_services
from ..errors import NotReady
from ..responses import FastJSONResponse
from ..state import Services, default_embed_options

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive (no dependency is checked)")
async def health() -> dict:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary='Model loaded and SQL reachable: 200 ("degraded" when only the hot tier is down); 503 otherwise',
)
async def ready(services: Services = Depends(get_services)):
    """Answers within about a second whatever the stores do (each ping is bounded).

    A hot tier that is down is 200 with `"status": "degraded"` naming it: the server still answers
    every request (from SQL), so it must stay in rotation. SQL down or the model not loaded is 503.
    """
    stores = await services.cache.ping()
    if services.pipeline is None:
        raise NotReady(services.startup_error or "model is loading")
    durable = services.cache.durable.name
    if not stores.get(durable, False):
        raise NotReady(f"store(s) unreachable: {durable}")
    degraded = [name for name, ok in stores.items() if not ok]
    body = {"status": "degraded" if degraded else "ready", "model": services.backend.identity.model, "stores": stores}
    if degraded:
        body["degraded"] = degraded
        body["detail"] = f"{', '.join(degraded)} unreachable: serving from {durable} (slower, still correct)"
    return FastJSONResponse(body)


@router.get("/info", summary="Served model, defaults and request limits (clients size their batches from this)")
async def info(services: Services = Depends(get_services)):
    settings = services.settings
    identity = services.backend.identity if services.backend is not None else None
    return FastJSONResponse(
        {
            "ready": services.ready,
            "model": None
            if identity is None
            else {
                "model": identity.model,
                "revision": identity.revision,
                "dtype": identity.dtype,
                "dim": identity.dim,
                "num_hidden_states": identity.num_hidden_states,
                "max_positions": identity.max_positions,
                "min_length": identity.min_length,  # the smallest max_length: special tokens + 1
                "device": str(services.backend.device),
            },
            "defaults": default_embed_options(settings).model_dump(exclude_none=True),
            "limits": {
                "max_items_per_request": settings.max_items_per_request,
                "max_body_bytes": settings.max_body_bytes,
                "max_code_chars": settings.max_code_chars,
            },
            "hot_tier": services.cache.hot.name,
            "spaces": {name: space.describe() for name, space in sorted(registered_spaces().items())},
            "space_load_errors": dict(SPACE_LOAD_ERRORS),
        }
    )
