"""Studies: observations in, surrogate mean and uncertainty out.

The server already holds the embeddings, so it also fits the surrogate: a study's fitted state
is keyed by the study version (bumped by every committed observation change). Predictions for
an unchanged version reuse the fitted surrogate; a changed version triggers one refit, off the
event loop, that every concurrent predict call waits for. After a restart the first predict
refits on demand; fits are seeded, so the same observations give the same surrogate.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
from colecache_client.spaces import OpGraph, SpecError, get_space
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..cache.keys import cache_key
from ..cache.singleflight import SingleFlight
from ..embedding.options import EmbedOptions
from ..pipeline import EmbedPipeline
from ..proxies import PROXIES
from ..proxies.measure import ProxyMeasurer
from ..render import RenderOptions, render
from ..specs import ArchSpec, CodeSpec, InvalidSpecs, ItemError, Spec, parse_spec
from ..surrogate import Surrogate, SurrogateConfig
from ..surrogate.smoothing import NeighbourGraph, smooth
from . import prequential
from .repository import (
    ConflictPolicy,
    NewObservation,
    ObservationRecord,
    PendingPrediction,
    StudyNotFound,
    StudyRecord,
    StudyRepository,
    WriteResult,
    spec_hash,
)

MIN_OBSERVATIONS = 2

log = logging.getLogger(__name__)


def _enumerable(space_name: str) -> bool:
    try:
        return bool(get_space(space_name).describe().get("enumerable"))
    except Exception:  # an unknown or broken plugin space: nothing to enumerate
        return False


class NotEnoughObservations(ValueError):
    pass


class UnfittableObservations(ValueError):
    """Stored observations the surrogate cannot take (e.g. a network whose proxies cannot be computed):
    a problem of the study's data, not of the request that triggered the fit, so it names observations."""

    def __init__(self, records: Sequence[ObservationRecord], invalid: InvalidSpecs):
        self.errors = [
            {"observation_id": records[e.index].id, "arch": records[e.index].arch, "reason": e.reason}
            for e in invalid.errors
            if e.index is not None
        ]
        shown = "; ".join(f"observation {e['observation_id']}: {e['reason']}" for e in self.errors[:5])
        super().__init__(f"the study's surrogate cannot be fitted on its stored observations: {shown}")


@dataclass(frozen=True)
class ObservationIn:
    spec: Any
    value: float
    metadata: dict | None = None


@dataclass
class FittedSurrogate:
    version: int
    n_observations: int
    surrogate: Surrogate
    seconds: float
    reference: str  # 'space', 'candidates' or 'observed': what the feature reduction was fitted on
    fitted_at: float
    trained_keys: frozenset[str] = frozenset()  # spec_keys fitted on: predictions for these are in-sample
    # Neighbourhood smoothing (surrogate/smoothing.py): the space's class graph and, per class, the mean raw
    # prediction of its neighbours; None when the fit could not smooth (no whole-space reference, or off).
    smoothing: tuple[NeighbourGraph, np.ndarray] | None = None


@dataclass(frozen=True)
class FeatureRows:
    """What the surrogate reads for a list of specs, row by row; a block is None when the study does not use it."""

    cole: np.ndarray | None  # (n, d)
    struct: np.ndarray | None  # (n, s)
    proxies: np.ndarray | None  # (n, len(features.proxies))
    graphs: list[OpGraph] | None  # n op graphs, for a graph head
    archs: list[str | None]  # each spec's architecture string (None for code)


@dataclass(frozen=True)
class SpaceReference:
    """Every cell of an enumerable space, read from the cache: the unlabelled reference of a fit."""

    cole: np.ndarray | None  # (distinct rendered codes, d); None for a study without COLE
    struct: np.ndarray | None  # (cells, s), when the study uses structural encodings
    cells: list  # the space's enumeration (`all_cells()`)
    cell_rows: np.ndarray | None  # (cells,): the row of `cole` holding each cell's vector


@dataclass(frozen=True)
class Prediction:
    fitted: FittedSurrogate
    mean: np.ndarray
    std: np.ndarray
    archs: list[str | None]


@dataclass(frozen=True)
class StudyOptions:
    """A study's stored JSON options, parsed."""

    render: RenderOptions
    embedder: EmbedOptions
    surrogate: SurrogateConfig

    @classmethod
    def of(cls, study: StudyRecord) -> StudyOptions:
        return cls(
            RenderOptions.model_validate(study.render),
            EmbedOptions.model_validate(study.embedder),
            SurrogateConfig.model_validate(study.surrogate),
        )


def spec_text(spec: Spec) -> str:
    """The exact spec, whatever its spelling: the cell's own string, or a code spec's hash."""
    if isinstance(spec, CodeSpec):
        return "code:" + hashlib.sha256(spec.code.encode()).hexdigest()
    return get_space(spec.space).to_string(spec.arch)


def spec_key(spec: Spec, options: RenderOptions) -> str:
    """A spec's class within a study: its isomorphism class when rendering is canonical (isomorphic cells
    then share one embedding), else its exact text. Counts distinct architectures; never an identity."""
    if isinstance(spec, ArchSpec) and options.canonical:
        return get_space(spec.space).canonical(spec.arch)
    return spec_text(spec)


class StudyService:
    def __init__(
        self,
        repo: StudyRepository,
        pipeline: EmbedPipeline,
        max_code_chars: int,
        max_fitted: int = 64,
        reference_recheck_s: float = 60.0,
        proxies: ProxyMeasurer | None = None,
        max_pending_predictions: int = 100_000,
    ):
        self.repo = repo
        self.max_pending_predictions = max_pending_predictions
        self.proxies = proxies
        self.reference_recheck_s = reference_recheck_s
        self.pipeline = pipeline
        self.max_code_chars = max_code_chars
        self._fitted: OrderedDict[str, FittedSurrogate] = OrderedDict()
        self._max_fitted = max_fitted
        self._warned: set[str] = set()  # studies already warned about a degraded reference
        self._fits: SingleFlight[tuple[str, int, bool], FittedSurrogate] = SingleFlight()
        self._references: dict[tuple[str, str], tuple[float, SpaceReference | None]] = {}
        self._plain_references: dict[tuple, SpaceReference | None] = {}
        self._graph_ops: dict[tuple[str, bool], list[OpGraph]] = {}
        self._graphs: dict[tuple[str, bool], NeighbourGraph] = {}
        self._graph_proxies: dict[tuple[str, bool], np.ndarray] = {}  # every class's proxies, once all are cached
        self._scored_spaces: set[str] = set()  # every network's proxies cached: stays so (values never change)
        self._unscored_at: dict[str, float] = {}  # space -> when a check last found some network unscored
        self.fit_count = 0

    # --- reads -----------------------------------------------------------------------------------
    async def get(self, study_id: str, owner: str | None) -> StudyRecord:
        study = await anyio.to_thread.run_sync(self.repo.get, study_id, owner)
        if study is None:
            raise StudyNotFound(study_id)
        return study

    def fitted_version(self, study_id: str) -> FittedSurrogate | None:
        return self._fitted.get(study_id)

    def forget(self, study_id: str) -> None:
        self._fitted.pop(study_id, None)

    # --- specs -----------------------------------------------------------------------------------
    def parse_study_specs(self, study: StudyRecord, values: Sequence[Any]) -> list[Spec]:
        """Parse specs in the study's space; code specs only when the features need no structure."""
        options = StudyOptions.of(study)
        specs, errors = [], []
        for index, value in enumerate(values):
            try:
                spec = parse_spec(value, study.space, self.max_code_chars)
                if isinstance(spec, ArchSpec) and spec.space != study.space:
                    raise SpecError(f"spec is from search space {spec.space!r}; this study is in {study.space!r}")
                if isinstance(spec, CodeSpec) and options.surrogate.features.structural:
                    raise SpecError("this study's surrogate uses structural encodings, so code specs cannot be used")
                if isinstance(spec, CodeSpec) and options.surrogate.uses_graphs:
                    raise SpecError(
                        f"this study's surrogate head {options.surrogate.head.kind!r} reads op graphs, so code specs "
                        'cannot be used (a study for code specs sets "surrogate": {"features": {"structural": []}})'
                    )
                if isinstance(spec, CodeSpec) and options.surrogate.features.proxies:
                    raise SpecError(
                        "this study's surrogate uses zero-cost proxies, which run the network, so code specs cannot "
                        'be used (a study for code specs sets "proxies": [])'
                    )
                specs.append(spec)
            except SpecError as exc:
                errors.append(ItemError(index, str(exc)))
        if errors:
            raise InvalidSpecs(errors)
        return specs

    # --- writes ----------------------------------------------------------------------------------
    async def set_candidates(self, study: StudyRecord, values: Sequence[Any] | None) -> int:
        """Validate (every bad item named, nothing stored) and store the study's candidate pool; new version."""
        if values is not None:
            self.parse_study_specs(study, values)
        return await anyio.to_thread.run_sync(
            self.repo.set_candidates, study.id, None if values is None else list(values)
        )

    async def observe(
        self, study: StudyRecord, items: Sequence[ObservationIn], on_conflict: ConflictPolicy
    ) -> WriteResult:
        """Validate everything first (nothing is stored if any item is bad), then commit in one transaction.

        Every item is a measurement of its own (see repository.py): isomorphic cells and repeated runs
        with distinct metadata are all kept, so a real evaluation history is accepted as it is."""
        options = StudyOptions.of(study)
        errors = [
            ItemError(i, f"value {item.value!r} is not a finite number")
            for i, item in enumerate(items)
            if not isinstance(item.value, (int, float)) or not math.isfinite(item.value)
        ]
        try:
            specs = self.parse_study_specs(study, [item.spec for item in items])
        except InvalidSpecs as exc:
            errors.extend(exc.errors)
        if errors:
            raise InvalidSpecs(sorted(errors, key=lambda e: e.index))
        new = [
            NewObservation(
                spec_key=spec_key(spec, options.render),
                spec=item.spec,
                arch=None if isinstance(spec, CodeSpec) else get_space(spec.space).to_string(spec.arch),
                value=float(item.value),
                meta=item.metadata,
                spec_text=spec_text(spec),
            )
            for spec, item in zip(specs, items)
        ]
        return await anyio.to_thread.run_sync(self.repo.add_observations, study.id, new, on_conflict)

    # --- features --------------------------------------------------------------------------------
    async def _features(
        self, study: StudyRecord, options: StudyOptions, specs: Sequence[Spec], with_proxies: bool = True
    ) -> FeatureRows:
        """The surrogate's inputs for `specs` (each block None when the study does not use it)."""
        features = options.surrogate.features
        cole = None
        archs: list[str | None] = []
        if features.cole:
            outcome = await self.pipeline.embed(specs, options.render, options.embedder)
            cole = np.stack([item.record.vector for item in outcome.items])
            archs = [item.arch for item in outcome.items]
        else:
            # As the pipeline answers them: the class representative when rendering is canonical.
            archs = [self._arch_string(s, options.render) if isinstance(s, ArchSpec) else None for s in specs]
        struct = None
        if features.structural:  # code specs (no `arch`) only come without structural encodings
            struct = self._structural(get_space(study.space), options, [s.arch for s in specs])
        proxies = None
        if features.proxies and with_proxies:
            if self.proxies is None:
                raise RuntimeError("zero-cost proxies are not available in this process")
            outcome = await self.proxies.measure(specs)
            proxies = outcome.values[:, [PROXIES.index(name) for name in features.proxies]]
        graphs = None
        if options.surrogate.uses_graphs:
            space = get_space(study.space)
            graphs = [space.op_graph(s.arch) for s in specs]
        return FeatureRows(cole, struct, proxies, graphs, archs)

    @staticmethod
    def _arch_string(spec: ArchSpec, render_options: RenderOptions) -> str:
        space = get_space(spec.space)
        return space.to_string(space.canonical_arch(spec.arch) if render_options.canonical else spec.arch)

    async def _space_reference(self, study: StudyRecord, options: StudyOptions) -> SpaceReference | None:
        """Every cell of the space (embeddings from the durable tier, structural encodings), if all are cached.

        Never computes embeddings: run `colecache precompute` to make the space reference available. A study
        without COLE needs no cache: its reference is the enumeration itself (what smoothing predicts on).
        """
        if not options.surrogate.features.cole:
            memo = ("no-cole", study.space, options.surrogate.features.structural)
            if memo not in self._plain_references:
                self._plain_references[memo] = await anyio.to_thread.run_sync(self._enumerate_space, study, options)
            return self._plain_references[memo]
        fingerprint = self.pipeline.readout(options.embedder).fingerprint
        memo_key = (fingerprint.id, options.render.model_dump_json())
        now = time.monotonic()
        if memo_key in self._references:
            checked_at, value = self._references[memo_key]
            if value is not None or now - checked_at < self.reference_recheck_s:
                return value
        value = await anyio.to_thread.run_sync(self._load_space_reference, study, options, fingerprint.id)
        self._references[memo_key] = (now, value)
        return value

    async def space_proxies_cached(self, space_name: str) -> bool:
        """True when every network of an enumerable space has its zero-cost proxies cached (never computes).

        What a new study's unset `features.proxies` is resolved with (studies/defaults.py). A found space
        is remembered; a miss is rechecked at most every `reference_recheck_s` (NB201: ~1.5 s to render
        and look up 6,466 keys, off the event loop)."""
        if self.proxies is None or not _enumerable(space_name):
            return False
        if space_name in self._scored_spaces:
            return True
        now = time.monotonic()
        if now - self._unscored_at.get(space_name, -math.inf) < self.reference_recheck_s:
            return False
        space = get_space(space_name)
        if space.proxy_network() is None:
            return False
        cells = await anyio.to_thread.run_sync(lambda: list(space.all_cells()))
        specs = [ArchSpec(space_name, cell) for cell in cells]
        try:
            # A spread-out sample first: an unfilled space (the usual case) answers in milliseconds.
            values = await self.proxies.cached(specs[:: max(1, len(specs) // 64)])
            if values is not None:
                values = await self.proxies.cached(specs)
        except Exception:  # a plugin whose proxy network does not render: no proxies, not a failed create
            log.exception("space %s: could not check its cached zero-cost proxies", space_name)
            values = None
        if values is None:
            self._unscored_at[space_name] = now
            return False
        self._scored_spaces.add(space_name)
        return True

    async def _candidate_reference(
        self, study: StudyRecord, options: StudyOptions, cole: np.ndarray | None, struct: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None] | None:
        """The study's candidate pool plus its observed specs, embedded (computed once, then cached), or None.

        For spaces too large to enumerate: the pool a search draws from is the unlabelled set the
        reduction should describe (measured on NASLib's DARTS subset: tau 0.458 vs 0.390 at n=32)."""
        current = await anyio.to_thread.run_sync(self.repo.get, study.id, study.owner)
        if current is None or not current.candidates:
            return None
        specs = self.parse_study_specs(current, current.candidates)
        rows = await self._features(current, options, specs, with_proxies=False)
        ref_cole, ref_struct = rows.cole, rows.struct
        if ref_cole is not None and cole is not None:
            ref_cole = np.concatenate([ref_cole, cole])
        if ref_struct is not None and struct is not None:
            ref_struct = np.concatenate([ref_struct, struct])
        return ref_cole, ref_struct

    def _enumerate_space(self, study: StudyRecord, options: StudyOptions) -> SpaceReference | None:
        """The space's cells and structural encodings, no embeddings (None when it cannot be enumerated)."""
        space = get_space(study.space)
        try:
            cells = list(space.all_cells())
        except NotImplementedError:
            return None
        return SpaceReference(None, self._structural(space, options, cells), cells, None)

    @staticmethod
    def _structural(space, options: StudyOptions, cells: Sequence) -> np.ndarray | None:
        """(cells, s) structural encodings of `cells` in the study's kinds, None when it uses none."""
        kinds = options.surrogate.features.structural
        if not kinds:
            return None
        return np.array([np.concatenate([space.encode(c, kind) for kind in kinds]) for c in cells])

    def _load_space_reference(self, study: StudyRecord, options: StudyOptions, fingerprint_id: str):
        space = get_space(study.space)
        try:
            cells = list(space.all_cells())
        except NotImplementedError:
            return None
        rendered = [render(ArchSpec(study.space, cell), options.render) for cell in cells]
        cell_keys = [cache_key(fingerprint_id, r.renderer_version, r.code) for r in rendered]
        keys = list(dict.fromkeys(cell_keys))
        durable = self.pipeline.cache.durable
        if len(durable.existing(keys)) < len(keys):
            return None
        found = durable.get_many(keys)
        cole = np.stack([found[k].vector for k in keys])
        row_of = {k: i for i, k in enumerate(keys)}
        struct = self._structural(space, options, cells)
        return SpaceReference(cole, struct, cells, np.asarray([row_of[k] for k in cell_keys]))

    async def _graph(self, study: StudyRecord, options: StudyOptions, cells: list) -> NeighbourGraph:
        """The space's one-edit graph between the study's classes (isomorphism classes when rendering is
        canonical, else cells); built once per process (NB201: ~4 s, off the event loop)."""
        memo_key = (study.space, options.render.canonical)
        graph = self._graphs.get(memo_key)
        if graph is None:
            space = get_space(study.space)

            def key_of(arch) -> str:
                return spec_key(ArchSpec(study.space, arch), options.render)

            graph = await anyio.to_thread.run_sync(NeighbourGraph.build, cells, space.neighbours, key_of)
            self._graphs[memo_key] = graph
        return graph

    async def _smoothing(
        self, study: StudyRecord, options: StudyOptions, surrogate: Surrogate, reference: SpaceReference
    ) -> tuple[NeighbourGraph, np.ndarray] | None:
        """Raw predictions for one cell of every class of the space, and each class's neighbour mean of them.

        None when smoothing is off, or the study uses proxies and some class's proxies are not cached (they
        are never computed here: `colecache proxies --space ...` fills them)."""
        if options.surrogate.smoothing <= 0:
            return None
        features = options.surrogate.features
        graph = await self._graph(study, options, reference.cells)
        nodes = graph.members
        cole = reference.cole[reference.cell_rows[nodes]] if features.cole else None
        struct = reference.struct[nodes] if reference.struct is not None else None
        proxies = None
        if features.proxies:
            memo_key = (study.space, options.render.canonical)
            values = self._graph_proxies.get(memo_key)  # cached values never change: read them once
            if values is None and self.proxies is not None:
                values = await self.proxies.cached([ArchSpec(study.space, reference.cells[i]) for i in nodes])
                if values is not None:
                    self._graph_proxies[memo_key] = values
            if values is None:
                log.info(
                    "study %s: not smoothing (the proxies of the space are not all cached; `colecache proxies "
                    "--space %s` fills them)",
                    study.id,
                    study.space,
                )
                return None
            proxies = values[:, [PROXIES.index(name) for name in features.proxies]]
        graphs = None
        if options.surrogate.uses_graphs:
            memo_key = (study.space, options.render.canonical)
            if memo_key not in self._graph_ops:  # one op graph per class, built once (NB201: ~0.2 s)
                space = get_space(study.space)
                self._graph_ops[memo_key] = [space.op_graph(reference.cells[i]) for i in nodes]
            graphs = self._graph_ops[memo_key]
        raw, _ = await anyio.to_thread.run_sync(surrogate.predict, cole, struct, proxies, graphs)
        return graph, graph.neighbour_mean(raw)

    # --- fitting and prediction ----------------------------------------------------------------
    async def fitted(self, study: StudyRecord) -> FittedSurrogate:
        """The surrogate for the study's current version: cached, or fitted once for all concurrent callers.

        A cached fit is also replaced when a better reference has appeared since it was made (the
        space was precomputed after the study's last observation): same observations, new fit.
        """
        current = self._fitted.get(study.id)
        upgrade = current is not None and await self._reference_upgrade(study, current)
        if current is not None and current.version >= study.version and not upgrade:  # `study` read by this request
            self._fitted.move_to_end(study.id)
            return current
        version, records = await anyio.to_thread.run_sync(self.repo.snapshot, study.id)
        if current is not None and current.version == version and not upgrade:
            return current
        distinct = len({r.spec_key for r in records})
        if distinct < MIN_OBSERVATIONS:
            raise NotEnoughObservations(
                f"study has {len(records)} observation(s) of {distinct} distinct architecture(s) (isomorphic cells "
                f"and repeated runs count once); at least {MIN_OBSERVATIONS} distinct are needed to predict"
            )

        # A fit that started before the reference appeared must not be joined by one that expects it.
        flight = (study.id, version, upgrade)

        async def fit(_: list[tuple[str, int, bool]]) -> dict[tuple[str, int, bool], FittedSurrogate]:
            return {flight: await self._fit(study, version, records)}

        result = (await self._fits.run([flight], fit))[flight]
        latest = self._fitted.get(study.id)
        if latest is None or latest.version <= result.version:
            self._fitted[study.id] = result
            self._fitted.move_to_end(study.id)
            while len(self._fitted) > self._max_fitted:
                self._fitted.popitem(last=False)
        return result

    async def _reference_upgrade(self, study: StudyRecord, fitted: FittedSurrogate) -> bool:
        """True when `fitted` used less than the whole space and the whole-space reference is now cached.

        Cheap on the hot path: `_space_reference` re-reads the cache for a missing reference at most
        every `reference_recheck_s` and keeps a found one in memory."""
        if fitted.reference == "space":
            return False
        options = StudyOptions.of(study)
        features = options.surrogate.features
        if features.reference != "space" or not features.cole or not _enumerable(study.space):
            return False
        return await self._space_reference(study, options) is not None

    async def _fit(self, study: StudyRecord, version: int, records: list[ObservationRecord]) -> FittedSurrogate:
        options = StudyOptions.of(study)
        try:
            specs = self.parse_study_specs(study, [r.spec for r in records])
            rows = await self._features(study, options, specs)
        except InvalidSpecs as exc:  # its item indexes are observations', not the request's
            raise UnfittableObservations(records, exc) from exc
        # Every observation is a training row, repeats and isomorphic cells included: it ranked better than
        # one mean per class (benchmarks/results/surrogate_eval_repeats.md).
        y = np.array([r.value for r in records])
        reference, reference_kind = None, "observed"
        if options.surrogate.features.reference == "space":
            if options.surrogate.features.cole or options.surrogate.uses_graphs:
                reference = await self._space_reference(study, options)
                reference_kind = "space"
            if reference is None:
                reference = await self._candidate_reference(study, options, rows.cole, rows.struct)
                reference_kind = "candidates"
            if reference is None:
                reference_kind = "observed"
            self._warn_degraded(study, reference_kind)
        started = time.perf_counter()
        surrogate = Surrogate(options.surrogate)
        if isinstance(reference, SpaceReference):
            ref_cole, ref_struct = reference.cole, reference.struct
        else:
            ref_cole, ref_struct = reference if reference is not None else (None, None)
        await anyio.to_thread.run_sync(
            surrogate.fit, rows.cole, rows.struct, y, ref_cole, ref_struct, rows.proxies, rows.graphs
        )
        smoothing = None
        if isinstance(reference, SpaceReference):
            try:
                smoothing = await self._smoothing(study, options, surrogate, reference)
            except Exception:  # e.g. a plugin space whose neighbours() fails: answer unsmoothed, not a 500
                log.exception("study %s: smoothing failed; predictions are the head's own", study.id)
        seconds = time.perf_counter() - started
        metrics.FIT_SECONDS.observe(seconds)
        self.fit_count += 1
        return FittedSurrogate(
            version=version,
            n_observations=len(records),
            surrogate=surrogate,
            seconds=seconds,
            reference=reference_kind,
            fitted_at=time.time(),
            trained_keys=frozenset(r.spec_key for r in records),
            smoothing=smoothing,
        )

    def _warn_degraded(self, study: StudyRecord, reference_kind: str) -> None:
        """Log (once per study and kind) a fit of an enumerable space that asked for the space and got less."""
        if reference_kind == "space" or not _enumerable(study.space):
            self._warned.discard(study.id)
            return
        if study.id in self._warned:
            return
        self._warned.add(study.id)
        log.warning(
            "study %s (%s) asked for the whole-space reference but it is not cached: fitted on %s cells, which "
            "ranks worse; run `colecache precompute --space %s` with the study's options (refits on its own after)",
            study.id,
            study.space,
            reference_kind,
            study.space,
        )

    async def predict(self, study: StudyRecord, values: Sequence[Any]) -> Prediction:
        specs = self.parse_study_specs(study, values)
        fitted = await self.fitted(study)
        options = StudyOptions.of(study)
        rows = await self._features(study, options, specs)
        mean, std = await anyio.to_thread.run_sync(
            fitted.surrogate.predict, rows.cole, rows.struct, rows.proxies, rows.graphs
        )
        mean = np.asarray(mean, dtype=float)
        if fitted.smoothing is not None:
            mean = self._smoothed(study, options, fitted.smoothing, specs, mean)
        prediction = Prediction(fitted, mean, np.asarray(std, dtype=float), rows.archs)
        await self._remember(study, options, specs, prediction)
        return prediction

    @staticmethod
    def _smoothed(
        study: StudyRecord,
        options: StudyOptions,
        smoothing: tuple[NeighbourGraph, np.ndarray],
        specs: Sequence[Spec],
        mean: np.ndarray,
    ) -> np.ndarray:
        """Each spec's mean blended with its class's neighbour mean (code specs and unknown classes unchanged)."""
        graph, neighbour_mean = smoothing
        out = mean.copy()
        for i, spec in enumerate(specs):
            if isinstance(spec, ArchSpec) and spec.space == study.space:
                node = graph.index.get(spec_key(spec, options.render))
                if node is not None:
                    out[i] = smooth(mean[i], neighbour_mean[node], options.surrogate.smoothing)
        return out

    async def _remember(
        self, study: StudyRecord, options: StudyOptions, specs: Sequence[Spec], prediction: Prediction
    ) -> None:
        """Keep the out-of-sample predictions for prequential evaluation (studies/prequential.py).

        Best effort: a failed write is logged and counted, and the prediction is still answered (it
        only costs the report a pair)."""
        if self.max_pending_predictions <= 0:
            return
        fitted = prediction.fitted
        # Out of sample: no cell of the spec's class was fitted on. Kept per exact spec, since isomorphic
        # cells may be predicted differently (their structural encodings differ).
        pending = [
            PendingPrediction(spec_hash(spec_text(spec)), fitted.version, fitted.n_observations, float(m), float(s))
            for spec, m, s in zip(specs, prediction.mean, prediction.std)
            if spec_key(spec, options.render) not in fitted.trained_keys and math.isfinite(m) and math.isfinite(s)
        ]
        try:
            await anyio.to_thread.run_sync(
                self.repo.record_predictions, study.id, pending, self.max_pending_predictions
            )
        except SQLAlchemyError as exc:
            metrics.PREDICTIONS_NOT_RECORDED.inc(len(pending))
            log.warning("study %s: %d predictions not kept for its report: %s", study.id, len(pending), exc)

    async def report(self, study: StudyRecord, window: int) -> dict:
        """The study report (`GET /studies/{id}/report`): what the study is, and its prequential figures (see
        studies/prequential.py), computed off the event loop."""

        def build() -> dict:
            observed, pairs = self.repo.history(study.id)
            history = prequential.History(observed, pairs)
            return prequential.report(history, study.direction == "maximize", window)

        return {
            "study_id": study.id,
            "name": study.name,
            "space": study.space,
            "objective": study.objective,
            "direction": study.direction,
            "version": study.version,
            **await anyio.to_thread.run_sync(build),
        }
