"""Liveness, readiness and what this server serves."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from colecache_client.spaces import LOAD_ERRORS as SPACE_LOAD_ERRORS
from colecache_client.spaces import SearchSpace
from colecache_client.spaces import spaces as registered_spaces
from fastapi import APIRouter, Depends, Request

from ...cache.keys import cache_key
from ...db.engine import head_revision
from ...render import check_options, render
from ...specs import ArchSpec
from ...studies.defaults import STUDY_EMBEDDER, STUDY_RENDER, study_surrogate
from ...surrogate import SurrogateConfig
from ..deps import get_services
from ..errors import NotReady
from ..responses import FastJSONResponse
from ..schemas import HealthOut, InfoOut, ReadyOut, responses
from ..state import Services, default_embed_options

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

"""How often /info re-reads whether each space's whole-space reference is cached (at most)."""
REFERENCE_MAX_CELLS = 100_000
"""Spaces that enumerate more cells than this are not checked (a study would not load them either)."""
REFERENCE_WAIT_S = 1.0
"""How long /info waits for a running check before answering `checking`."""


def enumerable(space: SearchSpace) -> bool:
    return type(space).all_cells is not SearchSpace.all_cells


@dataclass
class ReferenceCheck:
    """Per app: is every cell of each enumerable space in the durable tier under the default study's options?

    That is what a default study needs for its whole-space reference; without it the study quietly
    fits its feature reduction on the observed cells and ranks worse. The keys of a space are
    rendered once (seconds for NB201); their presence is re-read at most every `reference_recheck_s` (a minute), off the
    event loop, and a change is logged (a warning while a space is missing)."""

    keys: dict[tuple[str, str], list[bytes] | None] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    checked_at: float | None = None
    task: asyncio.Task | None = None

    async def current(self, services: Services) -> dict[str, dict[str, Any]]:
        if services.pipeline is None:  # nothing to check against yet; not memoised
            detail = services.startup_error or "model is loading"
            return {name: {"precomputed": None, "detail": detail} for name in _enumerable_spaces()}
        now = time.monotonic()
        stale = self.checked_at is None or now - self.checked_at >= services.settings.reference_recheck_s
        if stale and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self._check(services))
        if self.checked_at is None and self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), REFERENCE_WAIT_S)
            except asyncio.TimeoutError:
                pass
            except Exception:  # logged by the task; answer what is known
                pass
        if self.checked_at is None:
            return {name: {"precomputed": None, "detail": "checking"} for name in _enumerable_spaces()}
        return self.status

    async def _check(self, services: Services) -> None:
        status: dict[str, dict[str, Any]] = {}
        for name, space in _enumerable_spaces().items():
            try:
                status[name] = await self._check_space(services, name, space)
                status[name]["proxies"] = await _proxies_status(services, name, space)
            except Exception as exc:  # a store that fails is reported, never an error of /info
                status[name] = {"precomputed": None, "detail": f"could not check: {type(exc).__name__}: {exc}"}
        for name, now in status.items():
            before = self.status.get(name, {}).get("precomputed")
            if now.get("precomputed") is False and before is not False:
                log.warning(
                    "default studies in %s fit their feature reduction on the observed cells only (weaker ranking): "
                    "%s. Fill it with `%s`",
                    name,
                    now["detail"],
                    now["command"],
                )
            elif now.get("precomputed") and not before:
                log.info("whole-space reference of %s is cached for the default study options", name)
        self.status, self.checked_at = status, time.monotonic()

    async def _check_space(self, services: Services, name: str, space: SearchSpace) -> dict[str, Any]:
        base = {"command": f"colecache precompute --space {name}"}
        pipeline = services.pipeline
        try:
            features = study_surrogate(SurrogateConfig(), space).features
        except ValueError as exc:  # a plugin whose default encodings it does not have
            return {**base, "precomputed": None, "detail": f"the default study options do not apply: {exc}"}
        if features.reference != "space" or not features.cole:
            return {
                "precomputed": None,
                "detail": "default studies of this space read no embeddings, so there is nothing to precompute",
            }
        try:
            check_options(name, STUDY_RENDER)
            fingerprint = pipeline.readout(STUDY_EMBEDDER).fingerprint
        except ValueError as exc:  # SpecError, FingerprintError: no default study can exist here
            return {**base, "precomputed": None, "detail": f"the default study options do not apply: {exc}"}
        memo = (name, fingerprint.id)
        if memo not in self.keys:
            self.keys[memo] = await anyio.to_thread.run_sync(_space_keys, space, fingerprint.id)
        keys = self.keys[memo]
        if keys is None:
            return {**base, "precomputed": None, "detail": f"more than {REFERENCE_MAX_CELLS} cells: not checked"}
        cached = len(await anyio.to_thread.run_sync(services.cache.durable.existing, keys))
        done = cached == len(keys)
        detail = (
            f"all {len(keys)} distinct texts cached"
            if done
            else f"whole-space reference not cached for the default study options ({cached} of {len(keys)} "
            f"distinct texts)"
        )
        return {**base, "precomputed": done, "cached": cached, "total": len(keys), "detail": detail}


def _default_surrogate(space: SearchSpace, reference: dict[str, Any] | None) -> dict[str, Any] | None:
    """The surrogate a study created now without `surrogate` gets in this space (studies/defaults.py: the head,
    its blocks, with the proxies once the whole space is scored); None when no default study can exist there."""
    cached = bool(((reference or {}).get("proxies") or {}).get("cached"))
    try:
        return study_surrogate(SurrogateConfig(), space, cached).model_dump(mode="json")
    except ValueError:  # a plugin whose default encodings it does not have, or with nothing to read
        return None


async def _proxies_status(services: Services, name: str, space: SearchSpace) -> dict[str, Any]:
    """Whether a default study created now takes the zero-cost proxies (every network of the space scored)."""
    if services.studies is None or services.proxies is None or space.proxy_network() is None:
        return {"cached": None, "command": None, "detail": "this space has no zero-cost proxies"}
    cached = await services.studies.space_proxies_cached(name)
    plan = services.proxies.plan(name)
    detail = (
        "every network is scored: default studies created now take the zero-cost proxies"
        if cached
        else "some network is not scored: default studies created now go without zero-cost proxies"
    )
    return {
        "cached": cached,
        "command": f"colecache proxies --space {name}",
        # Which proxy values count: after an upgrade that changes the suite, older values are not read.
        "suite": {"id": plan.fingerprint["id"], "inputs": plan.inputs, "batch_size": plan.batch_size},
        "detail": detail,
    }


def _enumerable_spaces() -> dict[str, SearchSpace]:
    return {name: space for name, space in sorted(registered_spaces().items()) if enumerable(space)}


def _space_keys(space: SearchSpace, fingerprint_id: str) -> list[bytes] | None:
    """The cache keys a default study reads for the whole space (distinct texts), or None when too large."""
    cells = list(itertools.islice(space.all_cells(), REFERENCE_MAX_CELLS + 1))
    if len(cells) > REFERENCE_MAX_CELLS:
        return None
    rendered = (render(ArchSpec(space.name, cell), STUDY_RENDER) for cell in cells)
    return list(dict.fromkeys(cache_key(fingerprint_id, r.renderer_version, r.code) for r in rendered))


def reference_check(request: Request) -> ReferenceCheck:
    state = request.app.state
    check = getattr(state, "reference_check", None)
    if check is None:
        check = state.reference_check = ReferenceCheck()
    return check


@router.get("/health", response_model=HealthOut, summary="The process is alive (no dependency is checked)")
async def health() -> dict:
    return {"status": "ok"}


async def check_schema(services: Services) -> None:
    """NotReady until the database is migrated to this code's head (a replica that starts before the
    migration Job, or after an upgrade that has not been migrated yet, stays out of rotation). A database
    found at head is not read again: migrations only move forward."""
    if services.schema_ok:
        return
    have = await anyio.to_thread.run_sync(services.cache.durable.schema_revision)
    want = head_revision()
    if have != want:
        found = "not migrated" if have is None else f"at revision {have}"
        raise NotReady(f"database schema {found}, this server needs {want}: run `colecache migrate`")
    services.schema_ok = True


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses=responses(
        503, described={503: "Model loading (or failed to load), SQL unreachable, or the database not migrated"}
    ),
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
    await check_schema(services)
    degraded = [name for name, ok in stores.items() if not ok]
    body = {"status": "degraded" if degraded else "ready", "model": services.backend.identity.model, "stores": stores}
    down = [r.name for r in services.queue.replicas if not r.up] if services.queue is not None else []
    if down:
        body["devices_down"] = down
    if degraded:
        body["degraded"] = degraded
        body["detail"] = f"{', '.join(degraded)} unreachable: serving from {durable} (slower, still correct)"
    if down:
        body["status"] = "degraded"
        body["detail"] = (body.get("detail", "") + "; " if degraded else "") + (
            f"device replica(s) {', '.join(down)} out of rotation: the others serve"
        )
    return FastJSONResponse(body)


@router.get(
    "/info",
    response_model=InfoOut,
    summary="Served model, defaults and request limits (clients size their batches from this)",
)
async def info(request: Request, services: Services = Depends(get_services)):
    """Also, per enumerable space, `reference`: whether its whole-space reference is cached for the default
    study options (`precomputed`; null while checking or when it cannot apply) and whether every network's
    zero-cost proxies are (`proxies.cached`: what a default study created now takes), re-read at most every
    `reference_recheck_s` (a minute); per space, `default_surrogate`: what a study created now without a
    `surrogate` resolves to there."""
    settings = services.settings
    references = await reference_check(request).current(services)
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
                "backend": identity.backend,
                "device": str(services.backend.device),
                "devices": []
                if services.queue is None
                else [
                    {"name": r.name, "up": r.up, "forwards": r.batches, "items": r.items, "busy_s": round(r.busy_s, 3)}
                    for r in services.queue.replicas
                ],
            },
            "defaults": default_embed_options(settings).model_dump(exclude_none=True),
            "limits": {
                "max_items_per_request": settings.max_items_per_request,
                "max_body_bytes": settings.max_body_bytes,
                "max_code_chars": settings.max_code_chars,
            },
            "hot_tier": services.cache.hot.name,
            "spaces": {
                name: {
                    **space.describe(),
                    "reference": references.get(name),
                    "default_surrogate": _default_surrogate(space, references.get(name)),
                }
                for name, space in sorted(registered_spaces().items())
            },
            "space_load_errors": dict(SPACE_LOAD_ERRORS),
        }
    )
