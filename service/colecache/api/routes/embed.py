"""POST /embed: specs in, vectors out in request order, with where each one came from."""

from __future__ import annotations

import base64
from collections import Counter

from fastapi import APIRouter, Depends

from ...pipeline import EmbedOutcome, EmbedPipeline
from ...specs import parse_specs
from ..deps import get_pipeline, get_services
from ..errors import ApiError
from ..responses import FastJSONResponse
from ..schemas import BODY_ERRORS, EmbedRequest, EmbedResponse, json_body, responses
from ..state import Services

router = APIRouter(tags=["embeddings"])

ERRORS = responses(
    *BODY_ERRORS,
    429,
    503,
    described={
        413: "Too many specs (`max_items_per_request` in `/info`) or too large a body",
        422: "Invalid spec or option: `errors` names each bad item (`index`) or field and why",
    },
)


def check_item_count(n: int, services: Services) -> None:
    limit = services.settings.max_items_per_request
    if n > limit:
        raise ApiError(413, f"{n} specs in one request exceed the limit of {limit}; split the batch")


def outcome_body(outcome: EmbedOutcome, encoding: str) -> dict:
    items = []
    for index, item in enumerate(outcome.items):
        vector = item.record.vector
        items.append(
            {
                "index": index,
                "source": item.source,
                "n_tokens": item.record.n_tokens,
                "truncated": item.record.truncated,
                "key": item.key.hex(),
                "renderer_version": item.renderer_version,
                "arch": item.arch,
                "embedding": base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector,
            }
        )
    return {
        "dim": outcome.dim,
        "encoding": encoding,
        "fingerprint": outcome.fingerprint.as_dict(),
        "counts": dict(Counter(item.source for item in outcome.items)),
        "items": items,
    }


@router.post(
    "/embed",
    response_model=EmbedResponse,
    responses=ERRORS,
    dependencies=[Depends(json_body)],
    summary="Embed architecture specs",
)
async def embed(
    body: EmbedRequest,
    services: Services = Depends(get_services),
    pipeline: EmbedPipeline = Depends(get_pipeline),
):
    check_item_count(len(body.specs), services)
    specs = parse_specs(body.specs, body.space, services.settings.max_code_chars)
    outcome = await pipeline.embed(specs, body.render, body.embedder)
    return FastJSONResponse(outcome_body(outcome, body.encoding))
