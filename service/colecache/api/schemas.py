"""Request and response bodies (also the OpenAPI documentation at /docs)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from ..embedding.options import EmbedOptions
from ..render.options import RenderOptions
from ..studies.defaults import STUDY_EMBEDDER, STUDY_RENDER
from ..surrogate import SurrogateConfig

MAX_CANDIDATES = 100_000
MAX_OBJECTIVE = 1e30  # observed values the surrogate heads fit without overflow (measured: all three to 1e38)

SPEC_DOC = (
    "An architecture in the search space's own spelling (NB201: `|nor_conv_3x3~0|+|...|` or 6 op indices; "
    "nb101, darts, einspace, graph: see `/info` and the README), "
    '`{"arch": <string, list or object>, "space": "<name>"}`, or `{"code": "<PyTorch source>"}` embedded verbatim.'
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _spec_shape(value: Any) -> Any:
    """Every space spells an architecture as a string, a list or an object: refuse the rest by shape, so the
    schema (which says so) and the server agree on `{"specs": [null]}`."""
    if isinstance(value, (str, list, dict)):
        return value
    raise PydanticCustomError(
        "spec_type", "a spec is a string, a list or an object, not {kind}", {"kind": _json_type(value)}
    )


SpecValue = Annotated[
    Any,
    BeforeValidator(_spec_shape),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "object"}], "description": SPEC_DOC}),
]


async def json_body(request: Request) -> None:
    """415 for a body that is not sent as JSON: FastAPI would read it as bytes and answer a puzzling 422.

    A route dependency, so it runs after the body is read (a JSON body that is not UTF-8 is a 400) and
    before it is validated."""
    headers = request.headers
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return  # no body: the 422 names the missing fields
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise HTTPException(
            415, f"request body must be JSON: send 'Content-Type: application/json' (got {media or 'none'!r})"
        )


# --- what every JSON body must satisfy before any field is read ---------------------------------
MAX_DEPTH = 100  # nesting levels; orjson (every response) refuses more than 254, and stored values are echoed back
INT64 = (-(2**63), 2**63 - 1)  # what orjson writes and SQL integer columns hold
MAX_PROBLEMS = 50


class UnstorableInput(ValueError):
    """Values that JSON (as Python parses it) allows but that could not be stored or served back.

    `problems` holds (location inside the body, reason) pairs; the 422 handler names each one."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]):
        self.problems = problems
        super().__init__(f"{len(problems)} value(s) cannot be stored or served")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (U+0000), which text columns cannot store"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains an unpaired UTF-16 surrogate ({ascii(text[exc.start])[1:-1]} at character {exc.start}), "
            "which is not valid Unicode text"
        )
    return None


def _number_problem(number: int | float) -> str | None:
    if type(number) is float:
        if math.isfinite(number):
            return None
        spelled = "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")
        return f"is {spelled}; numbers must be finite (JSON has no NaN or Infinity)"
    if INT64[0] <= number <= INT64[1]:
        return None
    digits = str(number)
    shown = digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"
    return f"integer {shown} is outside the 64-bit range"


def _clean(value: Any) -> bool:
    """True when nothing in `value` needs a closer look: the cheap pass every request body takes."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            for key in node:
                if type(key) is str and ("\x00" in key or not key.isascii()):
                    return False
            children = node.values()
        else:
            children = node
        for child in children:
            kind = type(child)
            if kind is str:
                if "\x00" in child or not child.isascii():
                    return False
            elif kind is int:
                if not INT64[0] <= child <= INT64[1]:
                    return False
            elif kind is float:
                if child - child != 0:  # NaN or +-Infinity
                    return False
            elif kind is list or kind is dict:
                if depth >= MAX_DEPTH:
                    return False
                stack.append((child, depth + 1))
    return True


def find_unstorable(value: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every string (keys too) that is not valid UTF-8 text or holds NUL, every NaN/Infinity, every integer
    outside 64 bits and every nesting past MAX_DEPTH, in document order (at most MAX_PROBLEMS).

    One walk over the parsed body, so the rule holds for every field of every route, including free-form
    ones (specs, metadata, candidates) that no schema types."""
    if (type(value) is dict or type(value) is list) and _clean(value):
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack and len(problems) < MAX_PROBLEMS:
        loc, node = stack.pop()
        kind = type(node)
        reason = None
        if kind is str:
            reason = _text_problem(node)
        elif kind is int or kind is float:
            reason = _number_problem(node)
        elif kind is dict or kind is list:
            if len(loc) >= MAX_DEPTH:
                reason = f"nests deeper than {MAX_DEPTH} levels"
            else:
                children = []
                for key, child in node.items() if kind is dict else enumerate(node):
                    if kind is dict and type(key) is str and (bad_key := _text_problem(key)):
                        problems.append(((*loc, key), f"key {bad_key}"))
                    else:
                        children.append(((*loc, key), child))
                stack.extend(reversed(children))
        if reason:
            problems.append((loc, reason))
    return problems


class RequestBody(BaseModel):
    """Base of every JSON request body: refuses values that could be accepted but never read back (422)."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problems = find_unstorable(data)
        if problems:
            raise UnstorableInput(problems)
        return data


class EmbedRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")

    specs: list[SpecValue] = Field(..., min_length=1, description=SPEC_DOC)
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


class ProxiesRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")

    specs: list[SpecValue] = Field(
        ..., min_length=1, description="Architecture specs (not code: proxies run the network). " + SPEC_DOC
    )
    space: str = Field("nb201", description="Search space of specs that do not name one.")


class ProxiesItem(BaseModel):
    index: int
    source: Literal["redis", "memory", "sql", "computed"]
    values: dict[str, float | None] = Field(..., description="Proxy name -> score (null: undefined for this network).")


class ProxiesResponse(BaseModel):
    proxies: list[str]
    log10_scaled: list[str] = Field(..., description="Proxies given as signed log10(1 + |v|).")
    fingerprint: dict[str, Any] = Field(..., description="Everything that shapes the scores; its `id` enters the keys.")
    counts: dict[str, int]
    items: list[ProxiesItem]


class ErrorItem(BaseModel):
    index: int | None = Field(None, description="The item (spec, observation, candidate, input) at fault.")
    field: str | None = Field(None, description="Where in the request, e.g. `body.specs[0].code`.")
    reason: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[ErrorItem] | None = None


# --- studies ----------------------------------------------------------------------------------
class StudyCreate(RequestBody):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200)
    space: str = Field("nb201", description="Search space of the study's specs.")
    objective: str = Field("accuracy", min_length=1, max_length=100, description="Name of the observed value.")
    direction: Literal["maximize", "minimize"] = "maximize"
    render: RenderOptions = Field(default_factory=lambda: STUDY_RENDER)
    embedder: EmbedOptions = Field(default_factory=lambda: STUDY_EMBEDDER)
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig, description="Features and head.")
    candidates: list[SpecValue] | None = Field(
        None,
        max_length=MAX_CANDIDATES,
        description="Unlabelled architectures the search draws from (a pool). In spaces too large to enumerate the "
        "surrogate's feature reduction is fitted on them (`reference: candidates`); replace with PUT .../candidates.",
    )


class CandidatesPut(RequestBody):
    model_config = ConfigDict(extra="forbid")

    specs: list[SpecValue] | None = Field(..., max_length=MAX_CANDIDATES, description="The pool, or null to clear it.")


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

    spec: SpecValue = Field(..., description=SPEC_DOC)
    value: float = Field(
        ...,
        ge=-MAX_OBJECTIVE,
        le=MAX_OBJECTIVE,
        description="The objective's value: finite, at most 1e30 in magnitude (past about 1e38 the surrogate heads' "
        "squared errors overflow and every prediction would be NaN).",
    )
    metadata: dict[str, Any] | None = None


class ObservationsPost(RequestBody):
    model_config = ConfigDict(extra="forbid")

    observations: list[ObservationIn] = Field(..., min_length=1)
    on_conflict: Literal["reject", "replace", "keep"] = Field(
        "reject",
        description="When the same spec text with the same metadata is already observed (or earlier in this post) "
        "with a *different* value: `reject` the whole post (409), `replace` the earlier value, or `keep` it. "
        "Re-posting the same value is always a no-op; isomorphic cells and runs with distinct metadata "
        "(e.g. a seed) are separate observations.",
    )


class ObservationsWritten(BaseModel):
    inserted: int
    unchanged: int
    replaced: int
    kept: int
    version: int
    n_observations: int


class PredictRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")

    specs: list[SpecValue] = Field(..., min_length=1, description=SPEC_DOC)


class PredictionItem(BaseModel):
    index: int
    arch: str | None
    mean: float
    std: float


class PredictResponse(BaseModel):
    study_id: str
    surrogate_version: int = Field(..., description="Study version the surrogate was fitted on.")
    n_observations: int
    reference: Literal["space", "candidates", "observed"] = Field(
        ...,
        description="What the feature reduction was fitted on: the whole space, the study's candidates, or the "
        "observed cells.",
    )
    smoothed: bool = Field(
        ...,
        description="Whether the means are blended with their one-edit neighbours' (`surrogate.smoothing`; needs the "
        "whole-space reference).",
    )
    fit_seconds: float
    predictions: list[PredictionItem]


# --- other answers (documentation: the routes write these bodies themselves) --------------------
class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "degraded"] = Field(
        ..., description="`degraded`: the hot tier is down (SQL serves) or a device replica is out of rotation."
    )
    model: str
    stores: dict[str, bool] = Field(..., description="Reachability per store (`redis` or `memory`, and `sql`).")
    degraded: list[str] | None = Field(None, description="The stores that are down (only when degraded).")
    devices_down: list[str] | None = Field(None, description="Device replicas out of rotation (only when any).")
    detail: str | None = None


class DeviceInfo(BaseModel):
    name: str
    up: bool = Field(description="False once taken out of rotation (it failed on a known-good item)")
    forwards: int
    items: int
    busy_s: float


class ModelInfo(BaseModel):
    model: str
    revision: str
    dtype: str
    dim: int
    num_hidden_states: int
    max_positions: int
    min_length: int = Field(..., description="The smallest `max_length`: the special tokens + 1.")
    backend: str = Field("torch", description="What runs the forward: torch, onnx or onnx-int8 (in the fingerprint)")
    device: str = Field(description="The first replica's device")
    devices: list[DeviceInfo] = Field(default_factory=list, description="One model replica per device")


class InfoOut(BaseModel):
    ready: bool
    model: ModelInfo | None = Field(..., description="null while the model loads.")
    defaults: dict[str, Any] = Field(..., description="Embedder options a request that sets none gets.")
    limits: dict[str, int] = Field(..., description="`max_items_per_request`, `max_body_bytes`, `max_code_chars`.")
    hot_tier: str
    spaces: dict[str, dict[str, Any]] = Field(..., description="Every registered search space, described.")
    space_load_errors: dict[str, str] = Field(..., description="Space plugins that failed to load, and why.")


class StudySummary(BaseModel):
    id: str
    name: str
    space: str
    version: int


class StudyList(BaseModel):
    studies: list[StudySummary]


class CandidatesOut(BaseModel):
    study_id: str
    version: int
    specs: list[Any] = Field(..., description="The candidate pool as it was sent (empty when none).")


class CandidatesWritten(BaseModel):
    study_id: str
    version: int
    n_candidates: int


class ObservationOut(BaseModel):
    id: int
    spec: Any = Field(..., description="The spec as it was sent.")
    arch: str | None = Field(..., description="The architecture in its space's spelling (null for code specs).")
    value: float
    metadata: dict[str, Any] | None
    created_at: str | None = Field(..., description="ISO 8601.")
    updated_at: str | None = Field(..., description="ISO 8601; set when `on_conflict: replace` changed the value.")


class ObservationsPage(BaseModel):
    study_id: str
    version: int
    observations: list[ObservationOut]


class Calibration(BaseModel):
    n: int = Field(description="Pairs with std > 0 (the shares are over these)")
    within_1std: float | None
    within_2std: float | None
    expected_1std: float = Field(description="A Gaussian's share inside +- 1 std (0.6827)")
    expected_2std: float = Field(description="A Gaussian's share inside +- 2 std (0.9545)")


class OnlineFigures(BaseModel):
    n_pairs: int
    kendall_tau: float | None = Field(description="Predicted mean vs observed value; null below 3 pairs")
    spearman_rho: float | None
    mae: float | None = Field(description="Mean |observed - predicted mean|, in the objective's units")
    bias: float | None = Field(
        description="Mean (predicted mean - observed): positive when the surrogate over-rates what the search picks"
    )
    calibration: Calibration


class RecentFigures(OnlineFigures):
    window: int


class BestOut(BaseModel):
    value: float
    index: int = Field(description="1-based evaluation index (order of arrival)")
    arch: str | None


class BestSoFarPoint(BaseModel):
    index: int
    value: float
    best: float


class PairOut(BaseModel):
    index: int
    arch: str | None
    mean: float
    std: float
    value: float
    surrogate_version: int
    n_train: int


class TauPoint(BaseModel):
    index: int
    n_pairs: int
    kendall_tau: float | None = Field(description="Over every pair up to this one")
    window_tau: float | None = Field(description="Over the latest `window` pairs up to this one")


class StudyReport(BaseModel):
    """Prequential figures: the latest prediction for each architecture the surrogate had not been
    fitted on, paired with the value later observed for it."""

    study_id: str
    name: str
    space: str
    objective: str
    direction: str
    version: int
    n_observations: int
    best: BestOut | None
    online: OnlineFigures
    recent: RecentFigures
    best_so_far: list[BestSoFarPoint]
    pairs: list[PairOut]
    tau_over_time: list[TauPoint]


# --- OpenAI-compatible routes ----------------------------------------------------------------------
class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"]
    data: list[OpenAIModel]


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(..., description="Floats, or base64 of little-endian float32.")


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddings(BaseModel):
    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error shape (what its SDK reads), plus colecache's per-field `errors` on validation errors."""

    error: OpenAIErrorDetail
    errors: list[ErrorItem] | None = None


# --- status codes, declared per route: the OpenAPI document lists every answer a route can give ----
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (the SDK honours it).",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be read as JSON text (for example, not UTF-8)"},
    404: {"model": ErrorBody, "description": "No such study (for this API key)"},
    409: {"model": ErrorBody, "description": "Conflict"},
    413: {"model": ErrorBody, "description": "Too many items, or a body over `COLECACHE_MAX_BODY_BYTES`"},
    415: {"model": ErrorBody, "description": "The body is not sent as `application/json`"},
    422: {"model": ErrorBody, "description": "Invalid field or item: `errors` names each one (`field`, `index`)"},
    429: {
        "model": ErrorBody,
        "description": "Embedding queue full: nothing of the request was queued; retry after `Retry-After`",
        "headers": RETRY_AFTER,
    },
    503: {
        "model": ErrorBody,
        "description": "Model still loading, SQL store unreachable, or server shutting down (work it did not "
        "finish was not acknowledged; what it computed is stored): retry after `Retry-After`",
        "headers": RETRY_AFTER,
    },
}
BODY_ERRORS = (400, 413, 415, 422)  # any route that reads a JSON body


def responses(*codes: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the standard error answers for `codes`, with route-specific descriptions."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {**ERROR_RESPONSES[code], **({"description": described[code]} if code in (described or {}) else {})}
    return out
