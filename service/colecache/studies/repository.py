"""Studies and observations in SQL. Synchronous; callers run it in worker threads.

A write is one transaction that first locks the study row (PostgreSQL `FOR UPDATE`, SQLite
`BEGIN IMMEDIATE`), so concurrent workers posting to one study are serialised, never lost, and
the study version moves exactly once per committed change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, delete, func, insert, select, update

from ..db.engine import WRITE_INTENT
from ..db.schema import observations, studies

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


@dataclass(frozen=True)
class NewObservation:
    spec_key: str
    spec: object  # JSON-serialisable spec as posted
    arch: str | None
    value: float
    meta: dict | None


@dataclass(frozen=True)
class ObservationRecord:
    id: int
    spec_key: str
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


class ObservationConflict(ValueError):
    def __init__(self, conflicts: Sequence[Conflict]):
        self.conflicts = list(conflicts)
        super().__init__(f"{len(self.conflicts)} observation(s) conflict with stored values")


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
            conn.execute(delete(observations).where(observations.c.study_id == study_id))
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
        """Insert new (study, spec) pairs; identical re-posts are no-ops; differing values follow `on_conflict`.

        `reject` (default): nothing is written and ObservationConflict lists every differing item;
        `replace`: the new value overwrites the stored one; `keep`: the stored value stays.
        Returns only after the transaction has committed.
        """
        with self.engine.connect().execution_options(**{WRITE_INTENT: True}) as conn, conn.begin():
            locked = conn.execute(select(studies.c.version).where(studies.c.id == study_id).with_for_update()).first()
            if locked is None:
                raise StudyNotFound(study_id)
            keys = list(dict.fromkeys(item.spec_key for item in items))
            stored: dict[str, tuple[int, float]] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                query = select(observations.c.id, observations.c.spec_key, observations.c.value).where(
                    observations.c.study_id == study_id, observations.c.spec_key.in_(chunk)
                )
                stored.update({row.spec_key: (row.id, row.value) for row in conn.execute(query)})
            fresh: dict[str, NewObservation] = {}
            replace: dict[int, NewObservation] = {}
            conflicts: list[Conflict] = []
            unchanged = kept = 0
            for index, item in enumerate(items):
                if item.spec_key in stored:
                    row_id, value = stored[item.spec_key]
                    if value == item.value:
                        unchanged += 1
                    elif on_conflict == "reject":
                        conflicts.append(Conflict(index, value, item.value))
                    elif on_conflict == "replace":
                        replace[row_id] = item
                    else:
                        kept += 1
                else:
                    fresh[item.spec_key] = item
            if conflicts:
                raise ObservationConflict(conflicts)  # the transaction rolls back; nothing was written
            if fresh:
                conn.execute(
                    insert(observations),
                    [
                        {
                            "study_id": study_id,
                            "spec_key": item.spec_key,
                            "spec": json.dumps(item.spec),
                            "arch": item.arch,
                            "value": item.value,
                            "meta": json.dumps(item.meta) if item.meta is not None else None,
                        }
                        for item in fresh.values()
                    ],
                )
            for row_id, item in replace.items():
                conn.execute(
                    update(observations)
                    .where(observations.c.id == row_id)
                    .values(
                        value=item.value,
                        meta=json.dumps(item.meta) if item.meta is not None else None,
                        updated_at=func.now(),
                    )
                )
            version = locked.version
            if fresh or replace:
                version += 1
                conn.execute(update(studies).where(studies.c.id == study_id).values(version=version))
            count = conn.execute(
                select(func.count()).select_from(observations).where(observations.c.study_id == study_id)
            ).scalar_one()
        return WriteResult(len(fresh), unchanged, len(replace), kept, version, int(count))

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
