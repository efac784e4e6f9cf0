"""Request and response bodies (also the OpenAPI documentation at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..embedding.options import EmbedOptions
from ..render.options import RenderOptions

SPEC_DOC = (
    "An NB201 cell string (`|nor_conv_3x3~0|+|...|`), a list of 6 op indices or names, "
    '`{"arch": <string or list>, "space": "nb201"}`, or `{"code": "<PyTorch source>"}` embedded verbatim.'
)


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    specs: list[Any] = Field(..., min_length=1, description=SPEC_DOC)
    space: str = Field("nb201", description="Search space of specs that do not name one.")
    render: RenderOptions = Field(default_factory=RenderOptions)
    embedder: EmbedOptions = Field(default_factory=EmbedOptions)
    encoding: Literal["float", "base64"] = Field(
        "float", description="`float`: JSON numbers; `base64`: base64 of the raw little-endian float32 bytes."
    )


class EmbedItem(BaseModel):
    index: int
    source: Literal["redis", "memory", "sql", "computed"] = Field(
        ..., description="Which tier answered: hot (`redis` or in-process `memory`), `sql`, or `computed` now."
    )
    n_tokens: int = Field(..., description="Tokens the model read for this item (after truncation).")
    truncated: bool
    key: str = Field(..., description="Hex cache key: sha256 of fingerprint, renderer version and code.")
    renderer_version: str
    arch: str | None = Field(None, description="The cell actually rendered (its representative when canonical).")
    embedding: list[float] | str


class EmbedResponse(BaseModel):
    dim: int
    encoding: Literal["float", "base64"]
    fingerprint: dict[str, Any]
    counts: dict[str, int] = Field(..., description="Items per source.")
    items: list[EmbedItem]


class ErrorItem(BaseModel):
    index: int
    reason: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[ErrorItem] | None = None
