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

    @property
    def means(self) -> list[float]:
        return [p.mean for p in self.predictions]

    @property
    def stds(self) -> list[float]:
        return [p.std for p in self.predictions]
