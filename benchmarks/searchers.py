"""Search methods for the NB201 search benchmark: the SDK's BANANAS (through a colecache server, or
in-process on a path encoding), regularized evolution and random search.

Every method returns the list of values it evaluated, one per distinct cell (canonical form),
so curves are comparable evaluation for evaluation.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from colecache_client import Bananas, Client
from colecache_client.spaces import get_space
from colecache_client.types import Observation, ObservationsWritten, Prediction, PredictResult, StudyInfo

SPACE = get_space("nb201")
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
) -> list[float]:
    with Client(url, timeout=600) as client:
        handle = client.create_study(name, **study)
        result = Bananas(handle, seed=seed, **bananas).run(evaluate, budget, batch_size)
        client.delete_study(handle.id)
    return [value for _, value in result.history]


# --- BANANAS in-process, same algorithm and head as through the server --------------------------------
@dataclass
class LocalStudy:
    """Implements the part of the SDK's `Study` that BANANAS uses, with an in-process surrogate.

    `embeddings` (arch string -> COLE vector) and `reference` (the whole space's vectors) let it
    reproduce a server study without HTTP, for tuning; structural features are computed here.
    """

    surrogate: SurrogateConfig
    direction: str = "maximize"
    embeddings: dict[str, np.ndarray] | None = None
    reference: np.ndarray | None = None
    rows: list[tuple[str, float]] = field(default_factory=list)
    fitted_on: int = -1
    model: Surrogate | None = None
    _reference_struct: np.ndarray | None = None

    @property
    def info(self) -> StudyInfo:
        return StudyInfo("local", "local", "nb201", "value", self.direction, len(self.rows), len(self.rows))

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

    def _encode(self, archs: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
        cole = np.stack([self.embeddings[a] for a in archs]) if self.surrogate.features.cole else None
        kinds = self.surrogate.features.structural
        struct = (
            np.array([np.concatenate([SPACE.encode(SPACE.parse(a), k) for k in kinds]) for a in archs])
            if kinds
            else None
        )
        return cole, struct

    def predict(self, specs: list[str]) -> PredictResult:
        if self.fitted_on != len(self.rows):
            archs, values = zip(*self.rows)
            cole, struct = self._encode(list(archs))
            reference = self.reference if self.surrogate.features.reference == "space" else None
            ref_struct = None
            if reference is not None and self.surrogate.features.structural:
                if self._reference_struct is None:
                    self._reference_struct = self._encode(list(self.embeddings))[1]
                ref_struct = self._reference_struct
            self.model = Surrogate(self.surrogate).fit(cole, struct, np.array(values), reference, ref_struct)
            self.fitted_on = len(self.rows)
        mean, std = self.model.predict(*self._encode(specs))
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
) -> list[float]:
    config = SurrogateConfig(
        features=FeatureConfig(cole=False, structural=(encoding,)), head=HeadConfig(**head), seed=0
    )
    result = Bananas(LocalStudy(config), seed=seed, **bananas).run(evaluate, budget, batch_size)
    return [value for _, value in result.history]


# --- regularized evolution (Real et al., 2019) ------------------------------------------------------
def regularized_evolution(
    evaluate: Evaluate, budget: int, seed: int, *, population: int = 20, sample: int = 5
) -> list[float]:
    """Aging evolution: mutate the best of a random tournament, drop the oldest member.

    Children that repeat an evaluated cell (canonically) are redrawn, so every evaluation is new.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    values: list[float] = []
    alive: deque[tuple[Any, float]] = deque()

    def new(arch) -> bool:
        key = SPACE.canonical(arch)
        if key in seen:
            return False
        seen.add(key)
        value = evaluate(SPACE.to_string(arch))
        values.append(value)
        alive.append((arch, value))
        return True

    while len(alive) < population and len(values) < budget:
        new(SPACE.sample(rng))
    while len(values) < budget:
        contenders = rng.sample(list(alive), min(sample, len(alive)))
        parent = max(contenders, key=lambda av: av[1])[0]
        for _ in range(100):
            if new(SPACE.mutate(parent, rng, 1)):
                break
        else:
            new(SPACE.sample(rng))
        while len(alive) > population:
            alive.popleft()
    return values


# --- random search ---------------------------------------------------------------------------------
def random_search(evaluate: Evaluate, budget: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    seen: set[str] = set()
    values: list[float] = []
    while len(values) < budget:
        arch = SPACE.sample(rng)
        key = SPACE.canonical(arch)
        if key not in seen:
            seen.add(key)
            values.append(evaluate(SPACE.to_string(arch)))
    return values
