"""Studies and observations in SQL. Synchronous; callers run it in worker threads.

A write is one transaction that first locks the study row (PostgreSQL `FOR UPDATE`, SQLite
`BEGIN IMMEDIATE`), so concurrent workers posting to one study are serialised, never lost, and
the study version moves exactly once per committed change.

An observation is one measurement: its identity is (study, exact spec text, metadata), the
`measurement_key`. Two isomorphic cells are two spec texts and two seeds of one cell differ in
their metadata, so both are kept, each with its own value (the surrogate fits on every row);
`spec_key` (the class) counts distinct architectures. The same spec text with the same metadata
and a different value is a conflict, settled by `on_conflict`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from sqlalchemy import Engine, delete, func, insert, select, update

from ..db.engine import WRITE_INTENT, dialect_insert
from ..db.schema import observations, predictions, prequential_pairs, studies

ConflictPolicy = Literal["reject", "replace", "keep"]


@dataclass(frozen=True)
class StudyRecord:
    id: str
    name: str
    space: str
    objective: str
    direction: str
    render: dict
    embedder: dict
    surrogate: dict
    owner: str | None
    version: int
    created_at: datetime | None = None
    candidates: list | None = None  # unlabelled specs the study searches (its surrogate's reference)


def spec_hash(spec_text: str) -> str:
    """sha256 of an exact spec text: how a pending prediction finds the observation that settles it."""
    return hashlib.sha256(spec_text.encode()).hexdigest()


def measurement_key(spec_text: str, meta: dict | None) -> str:
    """A measurement's identity within a study: sha256 of the exact spec text and the metadata (canonical JSON).

    Empty metadata counts as none. Migration 0004 holds a frozen copy; tests check that they agree."""
    fields = (spec_text, "" if not meta else json.dumps(meta, sort_keys=True, separators=(",", ":")))
    digest = hashlib.sha256()
    for field in fields:
        data = field.encode()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class NewObservation:
    spec_key: str  # the class: isomorphic cells share it under canonical rendering
    spec: object  # JSON-serialisable spec as posted
    arch: str | None
    value: float
    meta: dict | None
    spec_text: str  # the exact spec: the cell's own string, or a code spec's hash

    @property
    def measurement_key(self) -> str:
        return measurement_key(self.spec_text, self.meta)


@dataclass(frozen=True)
class ObservationRecord:
    id: int
    spec_key: str
    measurement_key: str
    spec: object
    arch: str | None
    value: float
    meta: dict | None
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class Conflict:
    index: int
    stored: float
    posted: float
    earlier: int | None = None  # the item of the same post that holds `stored`; None: it was stored before

    @property
    def reason(self) -> str:
        where = "already observed" if self.earlier is None else f"item {self.earlier} of this post has it"
        return (
            f"same spec text and metadata: {where} with value {self.stored!r}, posted {self.posted!r}; "
            "post with on_conflict='replace' or 'keep' to resolve, or give a repeated run distinct metadata"
        )


class ObservationConflict(ValueError):
    def __init__(self, conflicts: Sequence[Conflict]):
        self.conflicts = list(conflicts)
        super().__init__(
            f"{len(self.conflicts)} observation(s) conflict: the same spec text with the same metadata has a "
            "different value (isomorphic cells and runs with distinct metadata, e.g. {'seed': 2}, are kept as "
            "separate observations and never conflict)"
        )


@dataclass(frozen=True)
class PendingPrediction:
    """A prediction for an architecture the surrogate was not fitted on, awaiting its observation."""

    spec_hash: str  # of the exact spec text (see `spec_hash`)
    surrogate_version: int
    n_train: int
    mean: float
    std: float


@dataclass(frozen=True)
class PairRecord:
    """A prequential pair: the latest out-of-sample prediction for an architecture and its observed value."""

    observation_id: int
    arch: str | None
    value: float
    mean: float
    std: float
    surrogate_version: int
    n_train: int


class StudyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    unchanged: int
    replaced: int
    kept: int
    version: int
    n_observations: int


def _study(row) -> StudyRecord:
    return StudyRecord(
        id=row.id,
        name=row.name,
        space=row.space,
        objective=row.objective,
        direction=row.direction,
        render=json.loads(row.render),
        embedder=json.loads(row.embedder),
        surrogate=json.loads(row.surrogate),
        owner=row.owner,
        version=row.version,
        created_at=row.created_at,
        candidates=json.loads(row.candidates) if row.candidates else None,
    )


def _observation(row) -> ObservationRecord:
    return ObservationRecord(
        id=row.id,
        spec_key=row.spec_key,
        measurement_key=row.measurement_key,
        spec=json.loads(row.spec),
        arch=row.arch,
        value=row.value,
        meta=json.loads(row.meta) if row.meta else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class StudyRepository:
    def __init__(self, engine: Engine):
        self.engine = engine

    # --- studies -----------------------------------------------------------------------------
    def create(
        self,
        *,
        name: str,
        space: str,
        objective: str,
        direction: str,
        render: dict,
        embedder: dict,
        surrogate: dict,
        owner: str | None,
        candidates: list | None = None,
    ) -> StudyRecord:
        study_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                insert(studies).values(
                    id=study_id,
                    name=name,
                    space=space,
                    objective=objective,
                    direction=direction,
                    render=json.dumps(render, sort_keys=True),
                    embedder=json.dumps(embedder, sort_keys=True),
                    surrogate=json.dumps(surrogate, sort_keys=True),
                    owner=owner,
                    version=0,
                    candidates=None if candidates is None else json.dumps(candidates),
                )
            )
        found = self.get(study_id, owner)
        assert found is not None
        return found

    def get(self, study_id: str, owner: str | None) -> StudyRecord | None:
        """The study if it exists and belongs to `owner` (None: created without an API key)."""
        query = select(studies).where(studies.c.id == study_id, self._owned_by(owner))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _study(row) if row is not None else None

    def list(self, owner: str | None) -> list[StudyRecord]:
        query = select(studies).where(self._owned_by(owner)).order_by(studies.c.created_at, studies.c.id)
        with self.engine.connect() as conn:
            return [_study(row) for row in conn.execute(query)]

    def delete(self, study_id: str, owner: str | None) -> bool:
        with self.engine.begin() as conn:
            if (
                conn.execute(select(studies.c.id).where(studies.c.id == study_id, self._owned_by(owner))).first()
                is None
            ):
                return False
            for table in (prequential_pairs, predictions, observations):
                conn.execute(delete(table).where(table.c.study_id == study_id))
            conn.execute(delete(studies).where(studies.c.id == study_id))
        return True

    def set_candidates(self, study_id: str, candidates: list | None) -> int:
        """Replace the study's candidate pool; bumps the version (the surrogate's reference changes)."""
        with self.engine.begin() as conn:
            locked = conn.execute(select(studies.c.version).where(studies.c.id == study_id).with_for_update()).first()
            if locked is None:
                raise StudyNotFound(study_id)
            version = locked.version + 1
            text = None if candidates is None else json.dumps(candidates)
            conn.execute(update(studies).where(studies.c.id == study_id).values(version=version, candidates=text))
        return version

    @staticmethod
    def _owned_by(owner: str | None):
        return studies.c.owner.is_(None) if owner is None else studies.c.owner == owner

    # --- observations --------------------------------------------------------------------------
    def add_observations(
        self, study_id: str, items: Sequence[NewObservation], on_conflict: ConflictPolicy
    ) -> WriteResult:
        """Store measurements, atomically, as if the items were posted one at a time in order.

        A new (spec text, metadata) is inserted; the same one with the same value is a no-op; with a
        different value (stored, or from an earlier item of this post) it follows `on_conflict`:
        `reject` (default): nothing is written and ObservationConflict lists every differing item;
        `replace`: the later value wins; `keep`: the earlier value stays.
        Returns only after the transaction has committed.
        """
        with self.engine.connect().execution_options(**{WRITE_INTENT: True}) as conn, conn.begin():
            locked = conn.execute(select(studies.c.version).where(studies.c.id == study_id).with_for_update()).first()
            if locked is None:
                raise StudyNotFound(study_id)
            keys = [item.measurement_key for item in items]
            stored: dict[str, tuple[int, float]] = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                query = select(observations.c.id, observations.c.measurement_key, observations.c.value).where(
                    observations.c.study_id == study_id, observations.c.measurement_key.in_(chunk)
                )
                stored.update({row.measurement_key: (row.id, row.value) for row in conn.execute(query)})
            current = {key: value for key, (_, value) in stored.items()}  # value per key as the post goes along
            holder: dict[str, int] = {}  # key -> the item of this post that set its current value
            fresh: dict[str, NewObservation] = {}
            replace: dict[int, NewObservation] = {}
            conflicts: list[Conflict] = []
            unchanged = kept = replaced = 0
            for index, (key, item) in enumerate(zip(keys, items)):
                if key not in current:
                    fresh[key], current[key], holder[key] = item, item.value, index
                elif current[key] == item.value:
                    unchanged += 1
                elif on_conflict == "reject":
                    conflicts.append(Conflict(index, current[key], item.value, holder.get(key)))
                elif on_conflict == "replace":
                    if key in fresh:
                        fresh[key] = item
                    else:
                        replace[stored[key][0]] = item
                    current[key], holder[key] = item.value, index
                    replaced += 1
                else:
                    kept += 1
            if conflicts:
                raise ObservationConflict(conflicts)  # the transaction rolls back; nothing was written
            if fresh:
                conn.execute(
                    insert(observations),
                    [
                        {
                            "study_id": study_id,
                            "spec_key": item.spec_key,
                            "measurement_key": key,
                            "spec": json.dumps(item.spec),
                            "arch": item.arch,
                            "value": item.value,
                            "meta": json.dumps(item.meta) if item.meta is not None else None,
                        }
                        for key, item in fresh.items()
                    ],
                )
            if fresh:
                self._settle_predictions(conn, study_id, fresh)
            for row_id, item in replace.items():
                conn.execute(
                    update(observations)
                    .where(observations.c.id == row_id)
                    .values(value=item.value, updated_at=func.now())
                )
            version = locked.version
            if fresh or replace:
                version += 1
                conn.execute(update(studies).where(studies.c.id == study_id).values(version=version))
            count = conn.execute(
                select(func.count()).select_from(observations).where(observations.c.study_id == study_id)
            ).scalar_one()
        return WriteResult(len(fresh), unchanged, replaced, kept, version, int(count))

    @staticmethod
    def _settle_predictions(conn, study_id: str, fresh: dict[str, NewObservation]) -> None:
        """Pair each newly observed architecture's pending prediction with its observation (same transaction).

        Every new measurement of that exact spec in this post gets the pair; the prediction is then
        consumed, so a later repeat (seen by the surrogate by then) never pairs with a stale one."""
        hashes = {key: spec_hash(item.spec_text) for key, item in fresh.items()}
        wanted = list(set(hashes.values()))
        pending: dict[str, object] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            query = select(predictions).where(predictions.c.study_id == study_id, predictions.c.spec_hash.in_(chunk))
            pending.update({row.spec_hash: row for row in conn.execute(query)})
        if not pending:
            return
        keys = [key for key in fresh if hashes[key] in pending]
        ids: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            query = select(observations.c.id, observations.c.measurement_key).where(
                observations.c.study_id == study_id, observations.c.measurement_key.in_(keys[start : start + 500])
            )
            ids.update({row.measurement_key: row.id for row in conn.execute(query)})
        rows = []
        for key in keys:
            prediction = pending[hashes[key]]
            rows.append(
                {
                    "observation_id": ids[key],
                    "study_id": study_id,
                    "surrogate_version": prediction.surrogate_version,
                    "n_train": prediction.n_train,
                    "mean": prediction.mean,
                    "std": prediction.std,
                    "predicted_at": prediction.predicted_at,
                }
            )
        conn.execute(insert(prequential_pairs), rows)
        settled = list(pending)
        for start in range(0, len(settled), 500):
            conn.execute(
                delete(predictions).where(
                    predictions.c.study_id == study_id, predictions.c.spec_hash.in_(settled[start : start + 500])
                )
            )

    # --- prequential evaluation ------------------------------------------------------------------
    def record_predictions(self, study_id: str, items: Sequence[PendingPrediction], max_pending: int) -> None:
        """Keep each item as its architecture's latest pending prediction (upsert), at most `max_pending`
        per study (the oldest go first). A study deleted meanwhile records nothing."""
        if not items:
            return
        latest = {item.spec_hash: item for item in items}  # one row per exact spec: the last one wins
        with self.engine.begin() as conn:
            if conn.execute(select(studies.c.id).where(studies.c.id == study_id)).first() is None:
                return
            statement = dialect_insert(self.engine.dialect.name, predictions)
            statement = statement.on_conflict_do_update(
                index_elements=[predictions.c.study_id, predictions.c.spec_hash],
                set_={
                    name: statement.excluded[name]
                    for name in ("surrogate_version", "n_train", "mean", "std", "predicted_at")
                },
            )
            now = datetime.now(timezone.utc)
            rows = [
                {
                    "study_id": study_id,
                    "spec_hash": item.spec_hash,
                    "surrogate_version": item.surrogate_version,
                    "n_train": item.n_train,
                    "mean": item.mean,
                    "std": item.std,
                    "predicted_at": now,
                }
                for item in latest.values()
            ]
            for start in range(0, len(rows), 500):
                conn.execute(statement, rows[start : start + 500])
            count = conn.execute(
                select(func.count()).select_from(predictions).where(predictions.c.study_id == study_id)
            ).scalar_one()
            if count > max_pending:
                oldest = (
                    select(predictions.c.spec_hash)
                    .where(predictions.c.study_id == study_id)
                    .order_by(predictions.c.predicted_at, predictions.c.spec_hash)
                    .limit(count - max_pending)
                )
                stale = [row.spec_hash for row in conn.execute(oldest)]
                for start in range(0, len(stale), 500):
                    conn.execute(
                        delete(predictions).where(
                            predictions.c.study_id == study_id, predictions.c.spec_hash.in_(stale[start : start + 500])
                        )
                    )

    def pending_count(self, study_id: str) -> int:
        query = select(func.count()).select_from(predictions).where(predictions.c.study_id == study_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def history(self, study_id: str) -> tuple[list[tuple[int, float, str | None]], list[PairRecord]]:
        """(every observation as (id, value, arch) in evaluation order, the prequential pairs), read together."""
        with self.engine.connect() as conn, conn.begin():
            values = conn.execute(
                select(observations.c.id, observations.c.value, observations.c.arch)
                .where(observations.c.study_id == study_id)
                .order_by(observations.c.id)
            ).all()
            pairs = conn.execute(
                select(
                    prequential_pairs.c.observation_id,
                    observations.c.arch,
                    observations.c.value,
                    prequential_pairs.c.mean,
                    prequential_pairs.c.std,
                    prequential_pairs.c.surrogate_version,
                    prequential_pairs.c.n_train,
                )
                .join(observations, observations.c.id == prequential_pairs.c.observation_id)
                .where(prequential_pairs.c.study_id == study_id)
                .order_by(prequential_pairs.c.observation_id)
            ).all()
        return [(r.id, r.value, r.arch) for r in values], [PairRecord(*row) for row in pairs]

    def observations(self, study_id: str, limit: int | None = None, offset: int = 0) -> list[ObservationRecord]:
        query = select(observations).where(observations.c.study_id == study_id).order_by(observations.c.id)
        if limit is not None:
            query = query.limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_observation(row) for row in conn.execute(query)]

    def snapshot(self, study_id: str) -> tuple[int, list[ObservationRecord]]:
        """(version, all observations) read in one transaction, so they belong together."""
        with self.engine.connect() as conn, conn.begin():
            version = conn.execute(select(studies.c.version).where(studies.c.id == study_id)).scalar_one_or_none()
            if version is None:
                raise StudyNotFound(study_id)
            rows = conn.execute(
                select(observations).where(observations.c.study_id == study_id).order_by(observations.c.id)
            )
            return int(version), [_observation(row) for row in rows]

    def count(self, study_id: str) -> int:
        query = select(func.count()).select_from(observations).where(observations.c.study_id == study_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def best(self, study_id: str, direction: str) -> ObservationRecord | None:
        order = observations.c.value.desc() if direction == "maximize" else observations.c.value.asc()
        query = select(observations).where(observations.c.study_id == study_id).order_by(order, observations.c.id)
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return _observation(row) if row is not None else None
