"""OpenAI-compatible `POST /v1/embeddings`: raw text or code in, the same cached vectors out.

Works with the official `openai` package unmodified (`OpenAI(base_url=".../v1")`). Inputs are
embedded verbatim (like `{"code": ...}` specs), so they share colecache's cache. `dimensions`
keeps the first d components and re-normalises them, as OpenAI's shortened embeddings do.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from ...embedding.options import EmbedOptions
from ...pipeline import EmbedPipeline
from ...render import RenderOptions
from ...specs import CodeSpec, code_text_problem
from ..deps import get_pipeline, get_services
from ..responses import FastJSONResponse
from ..schemas import (
    ErrorBody,
    OpenAIEmbeddings,
    OpenAIErrorBody,
    OpenAIModelList,
    RequestBody,
    json_body,
    responses,
)
from ..state import Services

router = APIRouter(tags=["openai"])


def _texts(value: Any) -> Any:
    """Text or a non-empty list of texts; OpenAI's token arrays are refused by shape (the schema says so too)."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        return value
    raise PydanticCustomError(
        "input_type",
        "input must be a string or a non-empty list of strings (token arrays are not supported)",
    )


Texts = Annotated[
    Any,
    BeforeValidator(_texts),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
            "description": "Text(s) to embed.",
        }
    ),
]


class EmbeddingsRequest(RequestBody):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    input: Texts = Field(..., description="Text(s) to embed.")
    model: str = Field(..., description="The served model (see GET /v1/models).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> FastJSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return FastJSONResponse({"error": error}, status_code=status)


def served_names(pipeline: EmbedPipeline) -> set[str]:
    identity = pipeline.backend.identity
    return {identity.model, identity.model.split("/")[-1], "colecache"}


OPENAI_ERRORS = {
    **responses(429, 503),
    400: {"model": OpenAIErrorBody, "description": "The body could not be read as JSON text"},
    404: {"model": OpenAIErrorBody, "description": "`model` is not the served model"},
    413: {
        "model": OpenAIErrorBody | ErrorBody,
        "description": "Too many inputs (OpenAI's error shape), or a body over the size limit",
    },
    415: {"model": OpenAIErrorBody, "description": "The body is not sent as `application/json`"},
    422: {"model": OpenAIErrorBody, "description": "Invalid field or input; `errors` names each field"},
}


@router.get(
    "/v1/models",
    response_model=OpenAIModelList,
    responses=responses(503),
    summary="OpenAI-compatible model list (the one served model)",
)
async def models(pipeline: Annotated[EmbedPipeline, Depends(get_pipeline)]):
    identity = pipeline.backend.identity
    return FastJSONResponse(
        {"object": "list", "data": [{"id": identity.model, "object": "model", "created": 0, "owned_by": "colecache"}]}
    )


@router.post(
    "/v1/embeddings",
    response_model=OpenAIEmbeddings,
    responses=OPENAI_ERRORS,
    dependencies=[Depends(json_body)],
    summary="OpenAI-compatible embeddings of raw text or code",
)
async def embeddings(
    body: EmbeddingsRequest,
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    pipeline: Annotated[EmbedPipeline, Depends(get_pipeline)],
):
    if body.model not in served_names(pipeline):
        return openai_error(
            404,
            f"model {body.model!r} is not served here; use {pipeline.backend.identity.model!r}",
            "model",
            "model_not_found",
        )
    texts: list[str] = [body.input] if isinstance(body.input, str) else body.input
    settings = services.settings
    if len(texts) > settings.max_items_per_request:
        return openai_error(413, f"{len(texts)} inputs exceed the limit of {settings.max_items_per_request}", "input")
    for index, text in enumerate(texts):
        problem = code_text_problem(text, settings.max_code_chars)
        if problem:
            return openai_error(422, f"input[{index}] {problem}", "input")
    dim = pipeline.backend.identity.dim
    if body.dimensions is not None and body.dimensions > dim:
        return openai_error(422, f"dimensions {body.dimensions} exceeds the model's {dim}", "dimensions")
    outcome = await pipeline.embed([CodeSpec(t) for t in texts], RenderOptions(), EmbedOptions())
    data = []
    for index, item in enumerate(outcome.items):
        vector = item.record.vector
        if body.dimensions is not None:
            vector = vector[: body.dimensions]
            vector = (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
        encoded: Any = base64.b64encode(vector.tobytes()).decode() if body.encoding_format == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(item.record.n_tokens for item in outcome.items)
    return FastJSONResponse(
        {
            "object": "list",
            "data": data,
            "model": pipeline.backend.identity.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
