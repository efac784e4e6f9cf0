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


@router.get("/ready", summary="Model loaded and warmed, stores reachable; 503 otherwise")
async def ready(services: Services = Depends(get_services)):
    stores = await services.cache.ping()
    if services.pipeline is None:
        raise NotReady(services.startup_error or "model is loading")
    down = [name for name, ok in stores.items() if not ok]
    if down:
        raise NotReady(f"store(s) unreachable: {', '.join(down)}")
    return FastJSONResponse({"status": "ready", "model": services.backend.identity.model, "stores": stores})


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
