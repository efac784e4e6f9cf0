"""Studies: create, observe, predict. A study is visible only to the API key that created it."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Annotated, Literal

import anyio.to_thread
from colecache_client.csvio import format_spec_cell
from colecache_client.spaces import get_space
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from ...render import check_options
from ...studies.defaults import study_surrogate
from ...studies.repository import StudyNotFound, StudyRecord
from ...studies.service import ObservationIn, StudyService
from ..deps import get_owner, get_studies
from ..errors import ApiError
from ..responses import FastJSONResponse
from ..schemas import (
    BODY_ERRORS,
    CandidatesOut,
    CandidatesPut,
    CandidatesWritten,
    ObservationsPage,
    ObservationsPost,
    ObservationsWritten,
    PredictRequest,
    PredictResponse,
    StudyCreate,
    StudyList,
    StudyOut,
    StudyReport,
    json_body,
    responses,
)
from .embed import check_item_count

router = APIRouter(prefix="/studies", tags=["studies"])

# Every route reads SQL (503 when it is unreachable) and needs the model loaded (503 until then).
READ = responses(404, 503)
WRITE = responses(*BODY_ERRORS, 404, 503)


def plausible_id(study_id: str) -> bool:
    """Ids are hex; anything else (a NUL from `%00`, which PostgreSQL text refuses) is not looked up at all."""
    return 0 < len(study_id) <= 64 and study_id.isascii() and study_id.isalnum()


async def load_study(study_id: str, owner: str | None, studies: StudyService) -> StudyRecord:
    if not plausible_id(study_id):
        raise ApiError(404, f"study {study_id!r} not found")
    try:
        return await studies.get(study_id, owner)
    except StudyNotFound:
        raise ApiError(404, f"study {study_id!r} not found") from None


async def study_body(study: StudyRecord, studies: StudyService) -> dict:
    count = await anyio.to_thread.run_sync(studies.repo.count, study.id)
    best = await anyio.to_thread.run_sync(studies.repo.best, study.id, study.direction)
    fitted = studies.fitted_version(study.id)
    return {
        "id": study.id,
        "name": study.name,
        "space": study.space,
        "objective": study.objective,
        "direction": study.direction,
        "render": study.render,
        "embedder": study.embedder,
        "surrogate": study.surrogate,
        "version": study.version,
        "n_observations": count,
        "n_candidates": len(study.candidates or ()),
        "best": None if best is None else {"spec": best.spec, "arch": best.arch, "value": best.value},
        "fitted": None
        if fitted is None
        else {
            "version": fitted.version,
            "n_observations": fitted.n_observations,
            "seconds": round(fitted.seconds, 4),
            "reference": fitted.reference,
            "smoothed": fitted.smoothing is not None,
        },
    }


@router.post(
    "",
    status_code=201,
    response_model=StudyOut,
    responses=responses(
        *BODY_ERRORS, 503, described={422: "Invalid option, unknown space, or an invalid candidate (`index`)"}
    ),
    dependencies=[Depends(json_body)],
)
async def create_study(
    body: StudyCreate,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    """Create a study: its search space, render and embedder options, objective and surrogate."""
    space = get_space(body.space)  # unknown space -> 422 via SpecError naming the known ones
    check_options(space.name, body.render)
    # Unset proxies: in when the whole space is scored already (best measured), never scored on demand.
    proxies_cached = "proxies" not in body.surrogate.features.model_fields_set and (
        await studies.space_proxies_cached(space.name)
    )
    surrogate = study_surrogate(body.surrogate, space, proxies_cached)
    if body.candidates is not None:  # validated before anything is stored
        provisional = StudyRecord(
            "",
            body.name,
            space.name,
            body.objective,
            body.direction,
            body.render.model_dump(),
            {},
            surrogate.model_dump(mode="json"),
            owner,
            0,
        )
        studies.parse_study_specs(provisional, body.candidates)
    # Resolve against the served model now (422 if it cannot honour them) and store concrete values,
    # so the study keeps its meaning if the server's defaults change later.
    fingerprint = studies.pipeline.readout(body.embedder).fingerprint
    embedder = {
        "pooling": fingerprint.pooling,
        "layer": fingerprint.layer,
        "max_length": fingerprint.max_length,
        "normalize": fingerprint.normalize,
    }
    study = await anyio.to_thread.run_sync(
        lambda: studies.repo.create(
            name=body.name,
            space=body.space,
            objective=body.objective,
            direction=body.direction,
            render=body.render.model_dump(),
            embedder=embedder,
            surrogate=surrogate.model_dump(mode="json"),
            owner=owner,
            candidates=body.candidates,
        )
    )
    return FastJSONResponse(await study_body(study, studies), status_code=201)


@router.get("", response_model=StudyList, responses=responses(503), summary="Studies of this API key")
async def list_studies(
    owner: Annotated[str | None, Depends(get_owner)], studies: Annotated[StudyService, Depends(get_studies)]
):
    records = await anyio.to_thread.run_sync(studies.repo.list, owner)
    return FastJSONResponse(
        {"studies": [{"id": s.id, "name": s.name, "space": s.space, "version": s.version} for s in records]}
    )


@router.get("/{study_id}", response_model=StudyOut, responses=READ)
async def get_study(
    study_id: str,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    return FastJSONResponse(await study_body(await load_study(study_id, owner, studies), studies))


@router.delete("/{study_id}", status_code=204, responses=READ)
async def delete_study(
    study_id: str,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    if not plausible_id(study_id) or not await anyio.to_thread.run_sync(studies.repo.delete, study_id, owner):
        raise ApiError(404, f"study {study_id!r} not found")
    studies.forget(study_id)
    return Response(status_code=204)


@router.post(
    "/{study_id}/observations",
    response_model=ObservationsWritten,
    responses={
        **WRITE,
        **responses(409, described={409: "Same spec and metadata with another value (`on_conflict: reject`)"}),
    },
    dependencies=[Depends(json_body)],
)
async def post_observations(
    study_id: str,
    body: ObservationsPost,
    request: Request,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    """Record evaluated architectures, one measurement each (isomorphic cells and runs with distinct metadata are
    kept apart). Answered only after the SQL commit; idempotent per (study, exact spec, metadata)."""
    check_item_count(len(body.observations), request.app.state.services)
    study = await load_study(study_id, owner, studies)
    items = [ObservationIn(o.spec, o.value, o.metadata) for o in body.observations]
    result = await studies.observe(study, items, body.on_conflict)
    return FastJSONResponse(result.__dict__)


@router.put(
    "/{study_id}/candidates",
    response_model=CandidatesWritten,
    responses=WRITE,
    dependencies=[Depends(json_body)],
)
async def put_candidates(
    study_id: str,
    body: CandidatesPut,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    """Replace the study's candidate pool (unlabelled; the surrogate's reference in large spaces)."""
    study = await load_study(study_id, owner, studies)
    version = await studies.set_candidates(study, body.specs)
    return FastJSONResponse({"study_id": study.id, "version": version, "n_candidates": len(body.specs or ())})


@router.get("/{study_id}/candidates", response_model=CandidatesOut, responses=READ)
async def get_candidates(
    study_id: str,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    study = await load_study(study_id, owner, studies)
    return FastJSONResponse({"study_id": study.id, "version": study.version, "specs": study.candidates or []})


def utc_iso(moment: datetime | None) -> str | None:
    """A stored time in ISO 8601 with its zone: SQLite hands back naive UTC (CURRENT_TIMESTAMP), PostgreSQL aware."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


CSV_COLUMNS = ("spec", "value", "metadata", "arch", "id", "created_at", "updated_at")
CSV_PAGE = 1000


def csv_row(record) -> list[str]:
    """One observation as CSV cells: the spec as the SDK's CSV reader reads it back (a string as is, any
    other spec as compact JSON), metadata as JSON; `repr` of the value, which reads back to the same float."""
    spec = format_spec_cell(record.spec)
    meta = "" if not record.meta else json.dumps(record.meta, separators=(",", ":"), sort_keys=True)
    return [
        spec,
        repr(float(record.value)),
        meta,
        record.arch or "",
        str(record.id),
        utc_iso(record.created_at) or "",
        utc_iso(record.updated_at) or "",
    ]


async def csv_lines(studies: StudyService, study_id: str, limit: int | None, offset: int) -> AsyncIterator[str]:
    """The observations as CSV text, a page of rows at a time (a large study never sits in memory whole)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    remaining = limit
    while True:
        page = CSV_PAGE if remaining is None else min(CSV_PAGE, remaining)
        if page <= 0:
            break
        records = await anyio.to_thread.run_sync(studies.repo.observations, study_id, page, offset)
        for record in records:
            writer.writerow(csv_row(record))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        offset += len(records)
        remaining = None if remaining is None else remaining - len(records)
        if len(records) < page:
            break
    if buffer.tell():
        yield buffer.getvalue()


@router.get(
    "/{study_id}/observations",
    response_model=ObservationsPage,
    responses={
        **READ,
        **responses(422, described={422: "`limit`, `offset` or `format` out of range"}),
        200: {
            "description": "The observations: a JSON page, or with `format=csv` the whole study (from `offset`; "
            "`limit` only if given) as CSV (`spec,value,metadata,arch,id,created_at,updated_at`)",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
async def list_observations(
    study_id: str,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
    limit: Annotated[int | None, Query(ge=1, le=100_000, description="JSON default 1000; CSV default all")] = None,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # what SQL OFFSET takes
    format: Annotated[Literal["json", "csv"], Query(description="`csv` streams the observations as CSV")] = "json",
):
    study = await load_study(study_id, owner, studies)
    if format == "csv":
        filename = re.sub(r"[^A-Za-z0-9._-]+", "_", study.name).strip("_")[:80] or study.id
        return StreamingResponse(
            csv_lines(studies, study.id, limit, offset),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}-observations.csv"'},
        )
    limit = 1000 if limit is None else limit
    records = await anyio.to_thread.run_sync(studies.repo.observations, study.id, limit, offset)
    return FastJSONResponse(
        {
            "study_id": study.id,
            "version": study.version,
            "observations": [
                {
                    "id": r.id,
                    "spec": r.spec,
                    "arch": r.arch,
                    "value": r.value,
                    "metadata": r.meta,
                    "created_at": utc_iso(r.created_at),
                    "updated_at": utc_iso(r.updated_at),
                }
                for r in records
            ],
        }
    )


@router.post(
    "/{study_id}/predict",
    response_model=PredictResponse,
    responses={
        **WRITE,
        **responses(
            409,
            429,
            described={
                409: "Fewer than 2 distinct architectures observed, or stored observations the surrogate cannot "
                "take (each named by `observation_id`)"
            },
        ),
    },
    dependencies=[Depends(json_body)],
)
async def predict(
    study_id: str,
    body: PredictRequest,
    request: Request,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    """Surrogate mean and std per spec, refitting first if the observations changed."""
    check_item_count(len(body.specs), request.app.state.services)
    study = await load_study(study_id, owner, studies)
    prediction = await studies.predict(study, body.specs)
    fitted = prediction.fitted
    return FastJSONResponse(
        {
            "study_id": study.id,
            "surrogate_version": fitted.version,
            "n_observations": fitted.n_observations,
            "reference": fitted.reference,
            "smoothed": fitted.smoothing is not None,
            "fit_seconds": round(fitted.seconds, 4),
            "predictions": [
                {"index": i, "arch": arch, "mean": float(m), "std": float(s)}
                for i, (arch, m, s) in enumerate(zip(prediction.archs, prediction.mean, prediction.std))
            ],
        }
    )


@router.get(
    "/{study_id}/report",
    response_model=StudyReport,
    responses={**READ, **responses(422, described={422: "`window` out of range"})},
)
async def study_report(
    study_id: str,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
    window: Annotated[int, Query(ge=3, le=100_000, description="Pairs behind `recent` and `window_tau`")] = 50,
):
    """How good the surrogate's predictions turned out (prequential): rank correlation and error of the
    latest prediction for each architecture before it was observed, calibration of its std, and the
    best-so-far curve. Each figure carries the number of pairs behind it."""
    study = await load_study(study_id, owner, studies)
    return FastJSONResponse(await studies.report(study, window))
