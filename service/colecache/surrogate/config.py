"""What a study's surrogate is made of. Defaults are the configuration chosen by the offline evaluation.

Every number is bounded (and finite): a study stores its config and refits from it later, so a value the
head cannot train with (or the response cannot carry) must be refused when the study is created.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..proxies import PROXIES

NO_INPUT = "the surrogate needs an input: set features.cole, structural or proxies, or a graph head"
GRAPH_HEADS = ("gin_ensemble",)
"""Heads that read each architecture's op graph (`SearchSpace.op_graph`), not only the feature blocks."""

ProxyName = Literal["params", "flops", "synflow", "naswot", "jacov", "snip", "grad_norm"]
assert set(ProxyName.__args__) == set(PROXIES), "ProxyName must list proxies.PROXIES"


class FeatureConfig(BaseModel):
    """Inputs of the head: the COLE vector (optionally reduced) and optional structural encodings."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cole: bool = Field(True, description="Use the COLE embedding.")
    reduce: Literal["none", "standardize", "pca", "whiten"] = Field(
        "pca",
        description="`standardize` per dimension, `pca` projection, or `whiten` (PCA scaled to unit variance).",
    )
    components: int = Field(
        64,
        ge=1,
        le=4096,
        description="PCA components kept by `pca` / `whiten` (at most a quarter of the reference rows are used, "
        "so a reduction fitted on a few observed cells stays tame).",
    )
    reference: Literal["observed", "space"] = Field(
        "space",
        description="Fit the reduction on the observed cells only, or on every cached cell of the search space "
        "(unlabelled; falls back to the observed cells when the space is not precomputed).",
    )
    structural: tuple[str, ...] = Field(
        ("path",),
        max_length=8,
        description="Structural encodings appended to the COLE features (names from the space's `encodings` in "
        "`/info`). A study that does not set it gets its space's `default_encodings` (NB201: `path`).",
    )
    structural_weight: float = Field(2.0, gt=0, le=1e4, description="Scale of the structural block relative to COLE's.")
    proxies: tuple[ProxyName, ...] = Field(
        (),
        max_length=len(PROXIES),
        description="Zero-cost proxies of each untrained network (`POST /proxies`; fill a space ahead with "
        "`colecache proxies`) appended as a block, each standardised on the observed cells. A study that leaves "
        "it unset gets all of them when its whole space is scored at creation and it has structural encodings or "
        "a graph head, else none; with proxies, an unset structural_weight is 1 (studies/defaults.py).",
    )
    proxy_weight: float = Field(
        8.0,
        gt=0,
        le=1e4,
        description="Scale of the proxy block relative to COLE's (8: best of 1-16 for the MLP head on tuning draws, "
        "benchmarks/results/proxies.md; NB201's default GIN study takes 3, studies/defaults.py).",
    )

    @model_validator(mode="after")
    def _distinct_proxies(self) -> FeatureConfig:
        if len(set(self.proxies)) != len(self.proxies):
            raise ValueError("each proxy at most once")
        return self

    @property
    def blocks(self) -> bool:
        """Whether any feature block (COLE, structural, proxies) is in use."""
        return bool(self.cole or self.structural or self.proxies)


class HeadConfig(BaseModel):
    """The regression head. The ensembles give uncertainty from member disagreement (plus out-of-bag noise)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["mlp_ensemble", "gin_ensemble", "gp", "bayesian_ridge"] = Field(
        "mlp_ensemble",
        description="`gin_ensemble` also reads each architecture's op graph (spaces whose `/info` entry says "
        "`op_graph: true`), the feature blocks joined at its readout.",
    )
    members: int = Field(5, ge=2, le=64, description="Ensemble size (mlp_ensemble, gin_ensemble).")
    hidden: int = Field(64, ge=4, le=4096, description="Hidden units per layer of the MLP (after the readout for gin).")
    layers: int = Field(2, ge=1, le=6)
    graph_layers: int = Field(3, ge=1, le=8, description="GIN message-passing layers (gin_ensemble).")
    graph_hidden: int = Field(32, ge=4, le=1024, description="Width of the GIN node states (gin_ensemble).")
    graph_messages: Literal["undirected", "directed"] = Field(
        "undirected",
        description="How a GIN layer reads the neighbours (gin_ensemble): `undirected` sums every neighbour's "
        "state into the node's own; `directed` gives what feeds the node and what it feeds their own weights "
        "(the op graph is a DAG, so the two say different things). A new NB201, NB101 or DARTS study's graph "
        "head takes `directed` unless it sets this (studies/defaults.py); `directed` without bootstrap ranks "
        "higher still offline but searched worse on NB201.",
    )
    epochs: int = Field(300, ge=1, le=20000)
    learning_rate: float = Field(3e-3, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    loss: Literal["mse", "ranking", "mse+ranking"] = Field(
        "mse+ranking", description="`ranking` is COLE's pairwise logistic ranking loss; `mse+ranking` adds both."
    )
    ranking_weight: float = Field(
        20.0,
        ge=0,
        le=1e4,
        description="Weight of the ranking term in `mse+ranking` (MSE keeps the scale, ranking the order).",
    )
    bootstrap: bool | Literal["bayesian"] = Field(
        True,
        description="Each member sees its own bootstrap resample (off: every member sees every observation and "
        "members differ by their initialisation, and the std grows less away from the data; `bayesian`: every "
        "member sees every observation under its own Dirichlet(1) weights, Rubin's Bayesian bootstrap, so no "
        "member loses the third of the data a resample leaves out).",
    )

    @field_validator("bootstrap", mode="before")
    @classmethod
    def _bootstrap_choice(cls, value: object) -> object:
        """One error naming the three choices, not one per branch of the union (`bootstrap.bool`, ...)."""
        if isinstance(value, bool) or value == "bayesian":
            return value
        raise ValueError('expected true, false or "bayesian"')


class SurrogateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    features: FeatureConfig = Field(default_factory=FeatureConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    smoothing: float = Field(
        0.8,
        ge=0,
        le=0.99,
        description="Neighbourhood smoothing: blend each prediction with the mean prediction of its one-edit "
        "neighbour classes, `(1 - s) * own + s * neighbours` (surrogate/smoothing.py). Applies when the fit used "
        "the whole precomputed space as its reference (and, with proxies, every proxy is cached); 0 turns it off. "
        "0.8: +0.02 to +0.03 Kendall tau on NB201 at n = 128 (benchmarks/results/surrogate_eval.md).",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds the head (scikit-learn and numpy take 0..2**32-1).")

    @property
    def uses_graphs(self) -> bool:
        """Whether the head reads op graphs (then specs need a space with `op_graph`, not code)."""
        return self.head.kind in GRAPH_HEADS

    @property
    def has_input(self) -> bool:
        """Whether the head has anything to read: a feature block or the op graphs."""
        return self.features.blocks or self.uses_graphs

    @model_validator(mode="after")
    def _some_input(self) -> SurrogateConfig:
        # An unset head kind may still become a graph head for the study's space (studies/defaults.py
        # checks again once it is resolved), so only a head named here is held to it.
        if not self.has_input and "kind" in self.head.model_fields_set:
            raise ValueError(NO_INPUT)
        return self
