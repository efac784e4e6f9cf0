"""POST /proxies: architecture specs in, zero-cost proxy scores of their untrained networks out."""

from __future__ import annotations

import math
from collections import Counter

from fastapi import APIRouter, Depends

from ...proxies import LOG_SCALED, PROXIES
from ...proxies.measure import ProxyMeasurer
from ...specs import parse_specs
from ..deps import get_proxies, get_services
from ..responses import FastJSONResponse
from ..schemas import BODY_ERRORS, ProxiesRequest, ProxiesResponse, json_body, responses
from ..state import Services
from .embed import check_item_count

router = APIRouter(tags=["proxies"])

ERRORS = responses(
    *BODY_ERRORS,
    503,
    described={
        413: "Too many specs (`max_items_per_request` in `/info`) or too large a body",
        422: "An item that is code (never executed), invalid, in a space without a proxy network, or whose network "
        "failed to build or run: `errors` names each",
    },
)


@router.post(
    "/proxies",
    response_model=ProxiesResponse,
    responses=ERRORS,
    dependencies=[Depends(json_body)],
    summary="Zero-cost proxies of architecture specs (cached; computed on a miss)",
)
async def proxies(
    body: ProxiesRequest,
    services: Services = Depends(get_services),
    measurer: ProxyMeasurer = Depends(get_proxies),
):
    """Each network is built from its rendered code (the space's proxy network, canonical class) and
    scored untrained on seeded synthetic inputs (`COLECACHE_PROXY_INPUTS`): about a second per uncached
    NB201 network per worker, so fill a whole space ahead with `colecache proxies`. `params`, `flops`,
    `synflow`, `snip` and `grad_norm` are given as signed log10(1 + |v|); null where a score is undefined
    for that network."""
    check_item_count(len(body.specs), services)
    specs = parse_specs(body.specs, body.space, services.settings.max_code_chars)
    outcome = await measurer.measure(specs)
    items = [
        {
            "index": i,
            "source": source,
            "values": {name: (float(v) if math.isfinite(v) else None) for name, v in zip(PROXIES, row.tolist())},
        }
        for i, (row, source) in enumerate(zip(outcome.values, outcome.sources))
    ]
    return FastJSONResponse(
        {
            "proxies": list(PROXIES),
            "log10_scaled": sorted(LOG_SCALED),
            "fingerprint": outcome.fingerprint,
            "counts": dict(Counter(outcome.sources)),
            "items": items,
        }
    )
