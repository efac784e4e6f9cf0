"""Zero-cost proxies as a cached feature: spec -> the space's proxy network code -> key -> cache
tiers -> worker processes -> values, in request order.

Values are cached exactly like embeddings (same tiers, same float32 bytes, one row per network):
the key is `cache_key(<proxy fingerprint>, renderer version, code)`, and the fingerprint covers the
proxy suite version, the constructor, the input shape, the class count, the input kind, the batch
size and the seed. Architectures are always rendered canonically (isomorphic networks score alike; NB201:
6,466 networks for 15,625 cells). Networks run in worker processes, one torch thread each: a
network that crashes or hangs its worker fails its item (422), never the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from colecache_client.spaces import ProxyNetwork, SpecError, get_space

from ..cache.keys import cache_key
from ..cache.record import EmbeddingRecord
from ..cache.singleflight import SingleFlight
from ..cache.tiered import TieredCache
from ..specs import ArchSpec, InvalidSpecs, ItemError, Spec
from . import DEFAULT_INPUT_KIND, GAUSSIAN_VERSION, PROXIES, PROXY_VERSION, stored_value

COMPUTED = "computed"


@dataclass(frozen=True)
class ProxyPlan:
    """What shapes one space's proxy values; `fingerprint` (with its `id`) enters every key."""

    space: str
    network: ProxyNetwork
    batch_size: int
    seed: int
    inputs: str = DEFAULT_INPUT_KIND

    @cached_property
    def fingerprint(self) -> dict:
        # Gaussian inputs are what zc/1 scored, with the same formulas: its keys (no `inputs` field) stay valid.
        version, inputs = (
            (GAUSSIAN_VERSION, {}) if self.inputs == "gaussian" else (PROXY_VERSION, {"inputs": self.inputs})
        )
        spec = {
            "kind": "zero-cost-proxies",
            "version": version,
            "proxies": list(PROXIES),
            "space": self.space,
            "network": self.network.describe(),
            **inputs,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
        # Every answer names its inputs, zc/1's too (outside the hash, which must stay zc/1's).
        return {"id": f"{version}:{self.space}:{digest}", **spec, "inputs": self.inputs}


def plan_for(space_name: str, batch_size: int = 16, seed: int = 0, inputs: str = DEFAULT_INPUT_KIND) -> ProxyPlan:
    """The proxy plan of a space; SpecError (-> 422) when the space defines no proxy network."""
    network = get_space(space_name).proxy_network()
    if network is None:
        raise SpecError(f"search space {space_name!r} defines no network to score (SearchSpace.proxy_network)")
    return ProxyPlan(space_name, network, batch_size, seed, inputs)


@dataclass(frozen=True, slots=True)
class ProxyJob:
    key: bytes
    code: str
    helper: str
    renderer_version: str


@dataclass(frozen=True)
class ProxyOutcome:
    values: np.ndarray  # (n, len(PROXIES)) float32 on the stored scale, NaN where undefined
    sources: list[str]  # per item: the tier that answered, or 'computed'
    fingerprint: dict


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _score(code: str, helper: str, network: ProxyNetwork, batch_size: int, seed: int, kind: str) -> list[float]:
    """Worker process: build the network from its code and score it (stored scale, PROXIES order)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from .zero_cost import ProxyInputs, compute_proxies

    def build() -> nn.Module:
        namespace = {"torch": torch, "nn": nn, "F": F}
        if helper:
            exec(compile(helper, "<helpers>", "exec"), namespace)
        exec(compile(code, "<architecture>", "exec"), namespace)
        return eval(network.constructor, namespace)

    inputs = ProxyInputs(tuple(network.input_shape), network.num_classes, batch_size, seed, kind)
    raw = compute_proxies(build, inputs)
    return [stored_value(name, raw[name]) for name in PROXIES]


class ProxyMeasurer:
    """Cached zero-cost proxies of architecture specs; computes what is missing in `workers` processes.

    Raises InvalidSpecs (422) naming items that are raw code (never executed) or whose network fails
    to build or run, and SpecError for a space without a proxy network."""

    def __init__(
        self,
        cache: TieredCache,
        workers: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        commit_every: int = 32,
        inputs: str = DEFAULT_INPUT_KIND,
    ):
        self.cache = cache
        self.workers = workers
        self.batch_size = batch_size
        self.seed = seed
        self.inputs = inputs
        self.commit_every = commit_every
        self._pool: ProcessPoolExecutor | None = None
        self._flight: SingleFlight[bytes, np.ndarray | Exception] = SingleFlight()

    def plan(self, space_name: str) -> ProxyPlan:
        return plan_for(space_name, self.batch_size, self.seed, self.inputs)

    def jobs(self, specs: Sequence[Spec]) -> tuple[list[ProxyJob], ProxyPlan | None]:
        """Spec -> canonical proxy-network code -> key; every bad item named at once."""
        out: list[ProxyJob] = []
        errors: list[ItemError] = []
        plans: dict[str, ProxyPlan] = {}
        for index, spec in enumerate(specs):
            if not isinstance(spec, ArchSpec):
                errors.append(
                    ItemError(index, "zero-cost proxies run the network, so they need an architecture spec, not code")
                )
                continue
            try:
                plan = plans.get(spec.space) or plans.setdefault(spec.space, self.plan(spec.space))
                out.append(_job(spec.space, spec.arch, plan))
            except SpecError as exc:
                errors.append(ItemError(index, str(exc)))
        if errors:
            raise InvalidSpecs(errors)
        if len(plans) > 1:
            raise InvalidSpecs([ItemError(None, f"one space per request, got {', '.join(sorted(plans))}")])
        return out, next(iter(plans.values()), None)

    async def measure(self, specs: Sequence[Spec], on_progress: Callable[[int], None] | None = None) -> ProxyOutcome:
        """Proxy values of `specs` in request order: cached ones read, missing ones computed and committed."""
        jobs, plan = await asyncio.to_thread(self.jobs, specs)  # rendering: ~0.1 ms per NB201 network
        if plan is None:
            return ProxyOutcome(np.zeros((0, len(PROXIES)), np.float32), [], {})
        fingerprint = plan.fingerprint
        unique, values, sources = await self._lookup(jobs)
        missing = [j for j in unique if j.key not in values]
        if on_progress is not None and len(unique) > len(missing):
            on_progress(len(unique) - len(missing))
        if missing:
            by_key = {j.key: j for j in missing}

            async def compute(claimed: list[bytes]) -> dict[bytes, np.ndarray | Exception]:
                return await self._compute([by_key[k] for k in claimed], plan, on_progress)

            computed = await self._flight.run([j.key for j in missing], compute)
            failed = {k: v for k, v in computed.items() if isinstance(v, Exception)}
            if failed:
                raise InvalidSpecs(
                    [
                        ItemError(i, f"network could not be scored: {type(failed[j.key]).__name__}: {failed[j.key]}")
                        for i, j in enumerate(jobs)
                        if j.key in failed
                    ]
                )
            values.update(computed)
            sources.update(dict.fromkeys(computed, COMPUTED))
        matrix = np.stack([values[j.key] for j in jobs]).astype(np.float32)
        return ProxyOutcome(matrix, [sources[j.key] for j in jobs], fingerprint)

    async def cached(self, specs: Sequence[Spec]) -> np.ndarray | None:
        """(len(specs), len(PROXIES)) proxy values when every one is cached, else None; never computes.

        Rendering runs off the event loop: callers pass whole spaces (NB201: 15,625 cells, ~1.5 s)."""
        jobs, plan = await asyncio.to_thread(self.jobs, specs)
        if plan is None:
            return None
        unique, values, _ = await self._lookup(jobs)
        if len(values) < len(unique):
            return None
        return np.stack([values[j.key] for j in jobs]).astype(np.float32)

    async def _lookup(self, jobs: list[ProxyJob]) -> tuple[list[ProxyJob], dict[bytes, np.ndarray], dict[bytes, str]]:
        """The distinct jobs, and the cached values and tiers of those found."""
        unique = list({j.key: j for j in jobs}.values())
        found, found_in = await self.cache.get_many([j.key for j in unique])
        values = {j.key: r.vector for j, r in zip(unique, found) if r is not None}
        sources = {j.key: s for j, s in zip(unique, found_in) if s is not None}
        return unique, values, sources

    async def _compute(
        self, jobs: list[ProxyJob], plan: ProxyPlan, on_progress: Callable[[int], None] | None
    ) -> dict[bytes, np.ndarray | Exception]:
        """Score in the worker pool; commit every `commit_every` results (kept if the caller stops early)."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        futures = {
            asyncio.ensure_future(
                loop.run_in_executor(
                    pool, _score, j.code, j.helper, plan.network, plan.batch_size, plan.seed, plan.inputs
                )
            ): j
            for j in jobs
        }
        out: dict[bytes, np.ndarray | Exception] = {}
        pending_rows: list[tuple[ProxyJob, np.ndarray]] = []

        async def commit() -> None:
            if pending_rows:
                rows = [(j.key, EmbeddingRecord(v, 0, False)) for j, v in pending_rows]
                stored = await self.cache.put_many(
                    rows, plan.fingerprint, [j.renderer_version for j, _ in pending_rows]
                )
                out.update({k: r.vector for k, r in stored.items()})
                pending_rows.clear()

        try:
            waiting = set(futures)
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    job = futures[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool as exc:
                        self._pool = None  # a worker died (e.g. out of memory); the next call starts a fresh pool
                        for other in waiting:
                            other.cancel()
                        raise RuntimeError(f"proxy worker died: {exc}") from exc
                    except Exception as exc:  # the network failed to build or run: that item's fault
                        out[job.key] = exc
                        continue
                    pending_rows.append((job, np.asarray(result, dtype=np.float32)))
                    if on_progress is not None:
                        on_progress(1)
                if len(pending_rows) >= self.commit_every:
                    await commit()
        finally:
            await commit()
        return out

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            # Waits for the network being scored (about a second): a pool left running leaks its semaphores.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@lru_cache(maxsize=4)
def _helper(space_name: str) -> str:
    return get_space(space_name).helper_source()


def _job(space_name: str, arch, plan: ProxyPlan) -> ProxyJob:
    space = get_space(space_name)
    options = plan.network.render_options
    representative = space.canonical_arch(arch)
    code = space.render(representative, **options)
    helper = _helper(space_name) if options.get("primitives", "exclude_helper") == "exclude_helper" else ""
    key = cache_key(plan.fingerprint["id"], space.renderer_version, code)
    return ProxyJob(key, code, helper, space.renderer_version)
