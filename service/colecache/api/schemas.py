"""Request and response bodies (also the OpenAPI documentation at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..embedding.options import EmbedOptions
from ..render.options import RenderOptions
from ..studies.defaults import STUDY_EMBEDDER, STUDY_RENDER
from ..surrogate import SurrogateConfig

MAX_CANDIDATES = 100_000

SPEC_DOC = (
    "An architecture in the search space's own spelling (NB201: `|nor_conv_3x3~0|+|...|` or 6 op indices; "
    "nb101, darts, einspace, graph: see `/info` and the README), "
    '`{"arch": <string, list or object>, "space": "<name>"}`, or `{"code": "<PyTorch source>"}` embedded verbatim.'
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


# --- studies ----------------------------------------------------------------------------------
class StudyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200)
    space: str = Field("nb201", description="Search space of the study's specs.")
    objective: str = Field("accuracy", min_length=1, max_length=100, description="Name of the observed value.")
    direction: Literal["maximize", "minimize"] = "maximize"
    render: RenderOptions = Field(default_factory=lambda: STUDY_RENDER)
    embedder: EmbedOptions = Field(default_factory=lambda: STUDY_EMBEDDER)
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig, description="Features and head.")
    candidates: list[Any] | None = Field(
        None,
        max_length=MAX_CANDIDATES,
        description="Unlabelled architectures the search draws from (a pool). In spaces too large to enumerate the "
        "surrogate's feature reduction is fitted on them (`reference: candidates`); replace with PUT .../candidates.",
    )


class CandidatesPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    specs: list[Any] | None = Field(..., max_length=MAX_CANDIDATES, description="The pool, or null to clear it.")


class StudyOut(BaseModel):
    id: str
    name: str
    space: str
    objective: str
    direction: str
    render: dict[str, Any]
    embedder: dict[str, Any]
    surrogate: dict[str, Any]
    version: int = Field(..., description="Bumped by every committed change to the observations or candidates.")
    n_observations: int
    n_candidates: int = 0
    best: dict[str, Any] | None = None
    fitted: dict[str, Any] | None = Field(None, description="The surrogate this server process holds, if any.")


class ObservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: Any = Field(..., description=SPEC_DOC)
    value: float = Field(..., description="The objective's value (finite).")
    metadata: dict[str, Any] | None = None


class ObservationsPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observations: list[ObservationIn] = Field(..., min_length=1)
    on_conflict: Literal["reject", "replace", "keep"] = Field(
        "reject",
        description="When a spec is already observed with a *different* value: `reject` the whole post (409), "
        "`replace` the stored value, or `keep` it. Re-posting the same value is always a no-op.",
    )


class ObservationsWritten(BaseModel):
    inserted: int
    unchanged: int
    replaced: int
    kept: int
    version: int
    n_observations: int


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    specs: list[Any] = Field(..., min_length=1, description=SPEC_DOC)


class PredictionItem(BaseModel):
    index: int
    arch: str | None
    mean: float
    std: float


class PredictResponse(BaseModel):
    study_id: str
    surrogate_version: int = Field(..., description="Study version the surrogate was fitted on.")
    n_observations: int
    reference: Literal["space", "observed"] = Field(..., description="What the feature reduction was fitted on.")
    fit_seconds: float
    predictions: list[PredictionItem]
