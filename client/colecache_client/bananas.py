"""BANANAS (White et al., 2021) as ask/tell on a colecache study, in any registered search space.

Each `ask` mutates the best observed architectures into candidates (or, in pool mode, takes the
not yet evaluated members of a fixed candidate pool; with `whole_space`, of the whole enumerable
space), drops any candidate whose canonical form was already observed, asked or picked, scores the
rest with the server's surrogate (`/predict`: mean and std) and chooses by independent Thompson
sampling, UCB or expected improvement. `tell` records a result on the server, so several workers
can share one study: each one's `ask` sees everything any of them has told. Until the study holds
2 distinct architectures (the fewest a surrogate fits on) and `initial_samples` architectures were
asked, `ask` proposes random new ones, so a worker may dispatch many trials before the first result
comes back.

Pending trials (asked, not yet told) are never proposed again, and the acquisition treats them as
observed at the surrogate's mean (a "kriging believer" done client-side, since the surrogate lives
on the server and is not refitted for a guess): they join the observed cells as mutation parents
and raise the incumbent of expected improvement, and so does each pick within one `ask(n)`. A
repeatedly measured architecture (several seeds, or isomorphic cells) counts once, at its mean.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._plans import spec_list
from .client import Study
from .spaces import get_space
from .types import ObservationsWritten

Acquisition = Literal["its", "ucb", "ei"]
MIN_OBSERVATIONS = 2
"""The fewest distinct architectures the server fits a surrogate on (below it, /predict answers 409)."""


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def expected_improvement(mean: float, std: float, best: float) -> float:
    """EI of a (maximised) Gaussian prediction over `best`."""
    if std <= 0:
        return max(mean - best, 0.0)
    z = (mean - best) / std
    return (mean - best) * _normal_cdf(z) + std * _normal_pdf(z)


def choose(
    means: Sequence[float],
    stds: Sequence[float],
    n: int,
    acquisition: Acquisition,
    rng: random.Random,
    *,
    best: float | None = None,
    ucb_beta: float = 2.0,
) -> list[int]:
    """Indices of the n candidates to evaluate next, for a maximised objective."""
    n = min(n, len(means))
    if acquisition == "its":
        # Independent Thompson sampling: one fresh draw per candidate for every pick.
        remaining = set(range(len(means)))
        picked = []
        for _ in range(n):
            draw = {i: rng.gauss(means[i], max(stds[i], 0.0)) for i in remaining}
            winner = max(draw, key=draw.__getitem__)
            picked.append(winner)
            remaining.remove(winner)
        return picked
    if acquisition == "ucb":
        scores = [m + ucb_beta * s for m, s in zip(means, stds)]
        return sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:n]
    if acquisition == "ei":
        # Sequential: each pick is believed observed at its mean, so it raises the incumbent of the next.
        incumbent = best if best is not None else max(means)
        remaining, picked = list(range(len(means))), []
        for _ in range(n):
            winner = max(remaining, key=lambda i: expected_improvement(means[i], stds[i], incumbent))
            picked.append(winner)
            remaining.remove(winner)
            incumbent = max(incumbent, means[winner])
        return picked
    raise ValueError(f"unknown acquisition {acquisition!r} (its, ucb or ei)")


@dataclass
class SearchResult:
    best_arch: str | None
    best_value: float | None
    history: list[tuple[str, float]] = field(default_factory=list)
    maximize: bool = True

    @property
    def best_so_far(self) -> list[float]:
        better = max if self.maximize else min
        out: list[float] = []
        for _, value in self.history:
            out.append(value if not out else better(out[-1], value))
        return out


class Bananas:
    """Ask/tell BANANAS. `ask(n)` gives architectures to evaluate; `tell(arch, value)` reports one."""

    def __init__(
        self,
        study: Study,
        *,
        initial_samples: int = 10,
        candidates: int = 100,
        parents: int = 10,
        max_edits: int = 2,
        acquisition: Acquisition = "ei",
        ucb_beta: float = 2.0,
        seed: int | None = None,
        pool: Sequence[Any] | None = None,
        pool_reference: bool = True,
        whole_space: bool = False,
    ):
        """`pool`: search only these architectures (any spelling of the study's space), e.g. the ones a
        team can afford to train; every `ask` then scores all of the pool not yet observed or pending.
        With `pool_reference` the pool is also stored as the study's candidates, the unlabelled set the
        server fits its feature reduction on.

        `whole_space`: every `ask` scores every architecture of the study's space not yet observed or
        pending (one per isomorphism class; enumerable spaces only, e.g. NB201's 6,466 classes: one
        `/predict` per ask: 3.6 s with the refit of NB201's default graph study at 100 observations on an idle
        2-core server, 0.9 s without) instead of mutations of the best. Measured on NB201 CIFAR-100 (default
        study on a scored server, EI, batches of 10, 30 seeds): 24.4 queries to the optimum on average with
        the default graph study (benchmarks/results/search/nb201_c100_gin/search.md); with the earlier MLP
        default 41.1, against 59.6 with mutations and Thompson sampling
        (benchmarks/results/search/nb201_c100_space/search.md; smaller, not significant gains on CIFAR-10 and
        ImageNet16-120, not rerun with the graph study).
        Raises ValueError with `pool`, or for a space that cannot be enumerated.

        `acquisition`: expected improvement by default (with the kriging believer within a batch): on NB201
        CIFAR-100 tuning seeds (20, batches of 10) it needed fewer queries to the optimum than Thompson
        sampling for the default study with and without zero-cost proxies, with mutations and with the
        whole space (benchmarks/results/search_tuning_scored.md)."""
        self.study = study
        self.space = get_space(study.info.space)
        self.pool: dict[str, Any] | None = None  # canonical form -> architecture, in the pool's order
        if whole_space:
            if pool is not None:
                raise ValueError("give either pool or whole_space, not both")
            if not self.space.describe().get("enumerable"):
                raise ValueError(
                    f"search space {self.space.name!r} cannot be enumerated, so whole_space cannot score all of it; "
                    "pass the architectures you would train as pool instead"
                )
            self.pool = {self.space.canonical(a): a for a in self.space.dedupe(self.space.all_cells())}
        elif pool is not None:
            self.pool = {}
            for arch in self.space.parse_many(spec_list(pool, "pool")):
                self.pool.setdefault(self.space.canonical(arch), arch)
            upload = getattr(study, "set_candidates", None)
            if upload is not None and pool_reference:
                # The server fits its feature reduction on the pool (unlabelled): better ranks at small n.
                upload([self.space.to_string(a) for a in self.pool.values()])
        self.initial_samples = initial_samples
        self.candidates = candidates
        self.parents = parents
        self.max_edits = max_edits
        self.acquisition = acquisition
        self.ucb_beta = ucb_beta
        self.rng = random.Random(seed)
        self.sign = 1.0 if study.maximize else -1.0
        self.observed: dict[str, tuple[str, float]] = {}  # canonical -> (arch, mean value), all workers
        self.pending: dict[str, str] = {}  # canonical -> arch asked by this worker, not told yet
        self.believed: dict[str, tuple[str, float]] = {}  # pending canonical -> (arch, surrogate mean), last ask
        self._values: dict[str, list[float]] = {}  # canonical -> every measured value (seeds, isomorphic cells)
        self._version = -1

    # --- state ---------------------------------------------------------------------------------
    def sync(self) -> None:
        """Pull observations from the server when the study changed (other workers' results too)."""
        info = self.study.refresh()
        if info.version == self._version:
            return
        self.observed, self._values = {}, {}
        for obs in self.study.observations():
            if obs.arch is not None:
                self._record(obs.arch, obs.value)
        self._version = info.version

    def _record(self, arch: str, value: float) -> str:
        """Add one measured value; a class measured several times stands at its mean (as the server fits it)."""
        key = self.space.canonical(self.space.parse(arch))
        values = self._values.setdefault(key, [])
        values.append(value)
        first = self.observed[key][0] if key in self.observed else arch
        self.observed[key] = (first, sum(values) / len(values))
        return key

    def _taken(self) -> set[str]:
        return set(self.observed) | set(self.pending)

    def best(self) -> tuple[str, float] | None:
        if not self.observed:
            return None
        return max(self.observed.values(), key=lambda av: self.sign * av[1])

    # --- ask / tell ------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[str]:
        """n new architectures (canonically distinct from everything observed or pending)."""
        self.sync()
        if len(self.observed) < MIN_OBSERVATIONS or len(self.observed) + len(self.pending) < self.initial_samples:
            chosen = self._random(n)
        else:
            chosen = self._acquire(n)
        for arch in chosen:
            self.pending[self.space.canonical(arch)] = self.space.to_string(arch)
        return [self.space.to_string(a) for a in chosen]

    def _random(self, n: int, taken: set[str] | None = None) -> list:
        taken, out = (self._taken() if taken is None else taken), []
        if self.pool is not None:
            fresh = [a for key, a in self.pool.items() if key not in taken]
            return self.rng.sample(fresh, min(n, len(fresh)))
        for _ in range(1000 * n):
            if len(out) == n:
                break
            arch = self.space.sample(self.rng)
            key = self.space.canonical(arch)
            if key not in taken:
                taken.add(key)
                out.append(arch)
        return out

    def _believe_pending(self) -> dict[str, tuple[str, float]]:
        """Each pending trial at the surrogate's predicted mean, standing in for its result until it is told."""
        if not self.pending:
            return {}
        keys = list(self.pending)
        result = self.study.predict([self.pending[k] for k in keys])
        return {k: (self.pending[k], p.mean) for k, p in zip(keys, result.predictions)}

    def _candidates(self, known: dict[str, tuple[str, float]]) -> list:
        """Not yet observed or pending: the pool's rest, or mutations of the best `known` (observed or believed)."""
        if self.pool is not None:
            taken = self._taken()
            return [a for key, a in self.pool.items() if key not in taken]
        ranked = sorted(known.values(), key=lambda av: self.sign * av[1], reverse=True)
        parents = [self.space.parse(a) for a, _ in ranked[: self.parents]]
        taken, pool = self._taken(), []
        for i in range(self.candidates * 4):
            if len(pool) >= self.candidates:
                break
            parent = parents[i % len(parents)]
            child = self.space.mutate(parent, self.rng, self.rng.randint(1, self.max_edits))
            key = self.space.canonical(child)
            if key not in taken:
                taken.add(key)
                pool.append(child)
        if len(pool) < self.candidates:  # the parents' neighbourhoods are exhausted: widen with random cells
            pool += self._random(self.candidates - len(pool), taken)
        return pool

    def _acquire(self, n: int) -> list:
        self.believed = self._believe_pending()
        known = {**self.believed, **self.observed}
        pool = self._candidates(known)
        if not pool:
            return []
        result = self.study.predict([self.space.to_string(a) for a in pool])
        means = [self.sign * p.mean for p in result.predictions]
        stds = [p.std for p in result.predictions]
        incumbent = max(self.sign * value for _, value in known.values())
        picks = choose(means, stds, n, self.acquisition, self.rng, best=incumbent, ucb_beta=self.ucb_beta)
        return [pool[i] for i in picks]

    def tell(self, arch: Any, value: float, metadata: dict | None = None) -> ObservationsWritten:
        """Record one result on the server (committed before this returns)."""
        parsed = self.space.parse(arch)
        text = self.space.to_string(parsed)
        written = self.study.observe([(text, value, metadata)])
        key = self.space.canonical(parsed)
        if written.inserted:  # a no-op re-post adds nothing; a replaced value arrives with the next sync
            self._record(text, value)
        self.pending.pop(key, None)
        self.believed.pop(key, None)
        return written

    # --- a whole loop --------------------------------------------------------------------------
    def run(
        self,
        evaluate: Callable[[str], float],
        budget: int,
        batch_size: int = 1,
        on_result: Callable[[str, float], None] | None = None,
    ) -> SearchResult:
        """Evaluate `budget` architectures chosen `batch_size` at a time; return the best and the history."""
        history: list[tuple[str, float]] = []
        while len(history) < budget:
            asked = self.ask(min(batch_size, budget - len(history)))
            if not asked:
                break
            for arch in asked:
                value = float(evaluate(arch))
                self.tell(arch, value)
                history.append((arch, value))
                if on_result is not None:
                    on_result(arch, value)
        best = max(history, key=lambda av: self.sign * av[1]) if history else (None, None)
        return SearchResult(best[0], best[1], history, maximize=self.sign > 0)
