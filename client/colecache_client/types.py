"""Typed results (plain dataclasses; vectors are lists of floats, or numpy arrays via `as_array()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EmbedItem:
    index: int
    embedding: list[float]
    source: str  # 'redis' | 'memory' | 'sql' | 'computed'
    n_tokens: int
    truncated: bool
    key: str
    renderer_version: str
    arch: str | None


@dataclass(frozen=True)
class ProxyItem:
    index: int
    source: str  # 'redis' | 'memory' | 'sql' | 'computed'
    values: dict[str, float | None]  # proxy -> score (None: undefined for this network)


@dataclass(frozen=True)
class ProxiesResult:
    """Zero-cost proxies of each spec's untrained network (see `POST /proxies`)."""

    proxies: list[str]
    log10_scaled: list[str]  # given as signed log10(1 + |v|)
    fingerprint: dict[str, Any]
    items: list[ProxyItem]

    def column(self, name: str) -> list[float | None]:
        return [item.values[name] for item in self.items]


@dataclass(frozen=True)
class EmbedResult:
    dim: int
    fingerprint: dict[str, Any]
    items: list[EmbedItem]

    @property
    def embeddings(self) -> list[list[float]]:
        return [item.embedding for item in self.items]

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item.source] = out.get(item.source, 0) + 1
        return out

    def as_array(self):
        """(n, dim) float32 numpy array (needs numpy, which the SDK itself does not)."""
        import numpy as np

        return np.asarray(self.embeddings, dtype=np.float32)


@dataclass(frozen=True)
class StudyInfo:
    id: str
    name: str
    space: str
    objective: str
    direction: str
    version: int
    n_observations: int
    render: dict[str, Any] = field(default_factory=dict)
    embedder: dict[str, Any] = field(default_factory=dict)
    surrogate: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    n_candidates: int = 0

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StudyInfo:
        return cls(**{k: body.get(k) for k in cls.__dataclass_fields__ if k in body})


@dataclass(frozen=True)
class Observation:
    spec: Any
    value: float
    metadata: dict[str, Any] | None = None
    arch: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = {"spec": self.spec, "value": self.value}
        if self.metadata is not None:
            body["metadata"] = self.metadata
        return body


@dataclass(frozen=True)
class ObservationsWritten:
    inserted: int
    unchanged: int
    replaced: int
    kept: int
    version: int
    n_observations: int


@dataclass(frozen=True)
class Prediction:
    index: int
    arch: str | None
    mean: float
    std: float


@dataclass(frozen=True)
class PredictResult:
    study_id: str
    surrogate_version: int
    n_observations: int
    predictions: list[Prediction]
    reference: str | None = None  # what the feature reduction was fitted on: space, candidates or observed
    smoothed: bool = False  # means blended with their one-edit neighbours' (needs the whole-space reference)

    @property
    def means(self) -> list[float]:
        return [p.mean for p in self.predictions]

    @property
    def stds(self) -> list[float]:
        return [p.std for p in self.predictions]


@dataclass(frozen=True)
class Calibration:
    """How often observed values fell within 1 and 2 predicted stds of the mean (fractions in [0, 1]).

    A well-calibrated Gaussian gives `expected_1std` (0.6827) and `expected_2std` (0.9545); much lower
    means the surrogate is overconfident. `n`: the pairs with a std above 0, which the fractions are over
    (None when there are none)."""

    n: int
    within_1std: float | None
    within_2std: float | None
    expected_1std: float = 0.6827
    expected_2std: float = 0.9545

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> Calibration:
        body = body or {}
        return cls(
            n=body.get("n", 0),
            within_1std=body.get("within_1std"),
            within_2std=body.get("within_2std"),
            expected_1std=body.get("expected_1std", 0.6827),
            expected_2std=body.get("expected_2std", 0.9545),
        )


@dataclass(frozen=True)
class OnlineFigures:
    """How well the surrogate's predictions matched the values observed afterwards.

    A pair is the latest prediction made for an architecture before it was observed (never one the
    surrogate was trained on), so these are honest out-of-sample figures. Rank figures (Kendall tau,
    Spearman rho, in [-1, 1]), `mae` (mean |observed - predicted|) and `bias` (mean predicted - observed,
    positive when the surrogate over-rates what the search picked), both in objective units, are None
    with too few pairs. `window`: the number of latest pairs these cover (None: every pair)."""

    n_pairs: int
    kendall_tau: float | None
    spearman_rho: float | None
    mae: float | None
    calibration: Calibration
    bias: float | None = None
    window: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> OnlineFigures:
        body = body or {}
        return cls(
            n_pairs=body.get("n_pairs", 0),
            kendall_tau=body.get("kendall_tau"),
            spearman_rho=body.get("spearman_rho"),
            mae=body.get("mae"),
            calibration=Calibration.from_json(body.get("calibration")),
            bias=body.get("bias"),
            window=body.get("window"),
        )


@dataclass(frozen=True)
class BestObservation:
    """The study's best value so far; `index` is its 1-based evaluation index (observation order)."""

    value: float
    index: int
    arch: str | None = None


@dataclass(frozen=True)
class StudyReport:
    """GET /studies/{id}/report: a study's progress and its surrogate's out-of-sample quality.

    `online` covers every prediction/observation pair, `recent` the latest `window` of them.
    `best_so_far` ({index, value, best}), `pairs` ({index, arch, mean, std, value, surrogate_version,
    n_train}) and `tau_over_time` ({index, n_pairs, kendall_tau, window_tau}) are the server's rows, in
    evaluation order. `raw` is the whole JSON body, as plotting code takes it."""

    study_id: str
    name: str
    space: str
    objective: str
    direction: str
    version: int
    n_observations: int
    best: BestObservation | None
    online: OnlineFigures
    recent: OnlineFigures
    best_so_far: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    tau_over_time: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StudyReport:
        best = body.get("best")
        return cls(
            study_id=body["study_id"],
            name=body.get("name", ""),
            space=body.get("space", ""),
            objective=body.get("objective", ""),
            direction=body.get("direction", "maximize"),
            version=body.get("version", 0),
            n_observations=body.get("n_observations", 0),
            best=None if best is None else BestObservation(best["value"], best["index"], best.get("arch")),
            online=OnlineFigures.from_json(body.get("online")),
            recent=OnlineFigures.from_json(body.get("recent")),
            best_so_far=list(body.get("best_so_far") or []),
            pairs=list(body.get("pairs") or []),
            tau_over_time=list(body.get("tau_over_time") or []),
            raw=body,
        )
