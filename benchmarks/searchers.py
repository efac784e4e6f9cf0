"""Search methods for the search benchmark, in any registered space: the SDK's BANANAS (through a
colecache server, or in-process on a structural encoding), regularized evolution and random search.
Each can run over the whole space or over a fixed candidate pool (`pool`: the architectures one can
afford to train, or a benchmark subset such as NASLib's 500 NB101 cells).

Every method returns the list of values it evaluated, one per distinct architecture (canonical
form), so curves are comparable evaluation for evaluation.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from colecache.proxies import PROXIES
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from colecache.surrogate.smoothing import NeighbourGraph, smooth
from colecache_client import Bananas, Client
from colecache_client.spaces import get_space
from colecache_client.types import Observation, ObservationsWritten, Prediction, PredictResult, StudyInfo

Evaluate = Callable[[str], float]


# --- BANANAS through a colecache server (COLE features) --------------------------------------------
def bananas_cole(
    evaluate: Evaluate,
    budget: int,
    seed: int,
    *,
    url: str,
    study: dict[str, Any],
    bananas: dict[str, Any],
    batch_size: int,
    name: str,
    space: str = "nb201",
    pool: list[str] | None = None,
) -> list[float]:
    with Client(url, timeout=600) as client:
        handle = client.create_study(name, space=space, **study)
        result = Bananas(handle, seed=seed, pool=pool, **bananas).run(evaluate, budget, batch_size)
        client.delete_study(handle.id)
    return [value for _, value in result.history]


# --- BANANAS in-process, same algorithm and head as through the server --------------------------------
@dataclass
class LocalStudy:
    """Implements the part of the SDK's `Study` that BANANAS uses, with an in-process surrogate.

    `embeddings` (arch string or canonical form -> COLE vector), `reference` (the whole space's vectors; with
    `cells`, one cell string per row), `proxies` (canonical form -> the zero-cost proxies in `PROXIES` order)
    and `graph` (the space's one-edit class graph, keyed by canonical form, its nodes in `cells` order) let it
    reproduce a server study without HTTP, for tuning: the same fit, and the same neighbourhood smoothing of
    the means (std unsmoothed) when `graph` is given and the config's `smoothing` > 0. Structural features
    are computed here.
    """

    surrogate: SurrogateConfig
    space: str = "nb201"
    direction: str = "maximize"
    embeddings: dict[str, np.ndarray] | None = None
    reference: np.ndarray | None = None
    proxies: dict[str, np.ndarray] | None = None
    graph: NeighbourGraph | None = None
    cells: list[str] | None = None
    rows: list[tuple[str, float]] = field(default_factory=list)
    fitted_on: int = -1
    model: Surrogate | None = None
    neighbour_mean: np.ndarray | None = None
    _reference_struct: np.ndarray | None = None
    _graph_inputs: tuple | None = None

    @property
    def info(self) -> StudyInfo:
        return StudyInfo("local", "local", self.space, "value", self.direction, len(self.rows), len(self.rows))

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def refresh(self) -> StudyInfo:
        return self.info

    def observations(self) -> list[Observation]:
        return [Observation(a, v, None, a) for a, v in self.rows]

    def observe(self, items) -> ObservationsWritten:
        for spec, value, *_ in items:
            self.rows.append((spec, float(value)))
        return ObservationsWritten(len(items), 0, 0, 0, len(self.rows), len(self.rows))

    def _canonical(self, arch: str) -> str:
        space = get_space(self.space)
        return space.canonical(space.parse(arch))

    def _encode(self, archs: list[str]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        features, space = self.surrogate.features, get_space(self.space)
        keys = [self._canonical(a) for a in archs] if (features.proxies or features.cole) else []
        cole = None
        if features.cole:
            table = self.embeddings
            cole = np.stack([table[a] if a in table else table[k] for a, k in zip(archs, keys)])
        kinds = features.structural
        struct = (
            np.array([np.concatenate([space.encode(space.parse(a), k) for k in kinds]) for a in archs])
            if kinds
            else None
        )
        proxies = None
        if features.proxies:
            columns = [PROXIES.index(name) for name in features.proxies]
            proxies = np.stack([self.proxies[k] for k in keys])[:, columns]
        return cole, struct, proxies

    def predict(self, specs: list[str]) -> PredictResult:
        if self.fitted_on != len(self.rows):
            archs, values = zip(*self.rows)
            cole, struct, proxies = self._encode(list(archs))
            reference = self.reference if self.surrogate.features.reference == "space" else None
            ref_struct = None
            if reference is not None and self.surrogate.features.structural:
                if self._reference_struct is None:
                    self._reference_struct = self._encode(self.cells or list(self.embeddings))[1]
                ref_struct = self._reference_struct
            self.model = Surrogate(self.surrogate).fit(cole, struct, np.array(values), reference, ref_struct, proxies)
            self.fitted_on = len(self.rows)
            self.neighbour_mean = None
            if self.graph is not None and self.surrogate.smoothing > 0:
                if self._graph_inputs is None:
                    self._graph_inputs = self._encode(self.cells)
                raw, _ = self.model.predict(*self._graph_inputs)
                self.neighbour_mean = self.graph.neighbour_mean(raw)
        mean, std = self.model.predict(*self._encode(specs))
        if self.neighbour_mean is not None:
            nodes = [self.graph.index[self._canonical(s)] for s in specs]
            mean = smooth(mean, self.neighbour_mean[nodes], self.surrogate.smoothing)
        preds = [Prediction(i, s, float(m), float(d)) for i, (s, m, d) in enumerate(zip(specs, mean, std))]
        return PredictResult("local", len(self.rows), len(self.rows), preds)


def bananas_structural(
    evaluate: Evaluate,
    budget: int,
    seed: int,
    *,
    encoding: str,
    head: dict[str, Any],
    bananas: dict[str, Any],
    batch_size: int,
    space: str = "nb201",
    pool: list[str] | None = None,
) -> list[float]:
    config = SurrogateConfig(
        features=FeatureConfig(cole=False, structural=(encoding,)), head=HeadConfig(**head), seed=0
    )
    study = LocalStudy(config, space=space)
    result = Bananas(study, seed=seed, pool=pool, **bananas).run(evaluate, budget, batch_size)
    return [value for _, value in result.history]


# --- regularized evolution (Real et al., 2019) ------------------------------------------------------
def regularized_evolution(
    evaluate: Evaluate,
    budget: int,
    seed: int,
    *,
    population: int = 20,
    sample: int = 5,
    space: str = "nb201",
    pool: list[str] | None = None,
) -> list[float]:
    """Aging evolution: mutate the best of a random tournament, drop the oldest member.

    Children that repeat an evaluated architecture (canonically) are redrawn, so every evaluation is
    new. Pool version: the child is the unevaluated pool member closest to the parent (Hamming
    distance of the space's first structural encoding; ties broken at random), since a mutation
    would mostly leave the pool.
    """
    sp = get_space(space)
    rng = random.Random(seed)
    seen: set[str] = set()
    values: list[float] = []
    alive: deque[tuple[Any, float]] = deque()
    remaining = None if pool is None else _PoolIndex(sp, pool)

    def new(arch) -> bool:
        key = sp.canonical(arch)
        if key in seen:
            return False
        seen.add(key)
        if remaining is not None:
            remaining.take(key)
        value = evaluate(sp.to_string(arch))
        values.append(value)
        alive.append((arch, value))
        return True

    def fresh():
        return sp.sample(rng) if remaining is None else remaining.random(rng)

    limit = budget if remaining is None else min(budget, len(remaining))
    while len(alive) < population and len(values) < limit:
        new(fresh())
    while len(values) < limit:
        contenders = rng.sample(list(alive), min(sample, len(alive)))
        parent = max(contenders, key=lambda av: av[1])[0]
        if remaining is not None:
            new(remaining.nearest(parent, rng))
        else:
            for _ in range(100):
                if new(sp.mutate(parent, rng, 1)):
                    break
            else:
                new(fresh())
        while len(alive) > population:
            alive.popleft()
    return values


class _PoolIndex:
    """The not yet evaluated members of a pool, with their structural encodings for nearest-member lookups."""

    def __init__(self, space, pool: list[str]):
        self.space = space
        archs = space.dedupe(space.parse_many(pool))
        self.kind = space.encodings[0] if space.encodings else None
        self.members = {space.canonical(a): a for a in archs}
        self.codes = {k: np.asarray(self._encode(a)) for k, a in self.members.items()}

    def _encode(self, arch) -> list[float]:
        return self.space.encode(arch, self.kind) if self.kind else [0.0]

    def __len__(self) -> int:
        return len(self.members)

    def take(self, key: str) -> None:
        self.members.pop(key, None)

    def random(self, rng: random.Random):
        return self.members[rng.choice(sorted(self.members))]

    def nearest(self, parent, rng: random.Random):
        target = np.asarray(self._encode(parent))
        distance = {k: float(np.abs(self.codes[k] - target).sum()) for k in self.members}
        best = min(distance.values())
        return self.members[rng.choice(sorted(k for k, d in distance.items() if d == best))]


# --- random search ---------------------------------------------------------------------------------
def random_search(
    evaluate: Evaluate, budget: int, seed: int, *, space: str = "nb201", pool: list[str] | None = None
) -> list[float]:
    sp = get_space(space)
    rng = random.Random(seed)
    if pool is not None:
        archs = sp.dedupe(sp.parse_many(pool))
        return [evaluate(sp.to_string(a)) for a in rng.sample(archs, min(budget, len(archs)))]
    seen: set[str] = set()
    values: list[float] = []
    while len(values) < budget:
        arch = sp.sample(rng)
        key = sp.canonical(arch)
        if key not in seen:
            seen.add(key)
            values.append(evaluate(sp.to_string(arch)))
    return values
