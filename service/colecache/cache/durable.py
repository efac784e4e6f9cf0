"""Durable tier: the `embeddings` table through SQLAlchemy (SQLite by default, PostgreSQL by URL).

Calls are synchronous and run in worker threads (see TieredCache); lookups are one `IN` query
per chunk and writes one multi-row `INSERT .. ON CONFLICT DO NOTHING`, so two replicas racing on
the same key both succeed and the first committed vector stays the one every process serves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Engine, select, text

from ..db.engine import dialect_insert
from ..db.schema import embeddings, fingerprints
from .record import EmbeddingRecord, vector_from_bytes, vector_to_bytes

_CHUNK = 500  # keys per IN (...) / rows per INSERT, well under every driver's parameter limit


class SqlTier:
    name = "sql"

    def __init__(self, engine: Engine):
        self.engine = engine
        self._dialect = engine.dialect.name

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, EmbeddingRecord]:
        found: dict[bytes, EmbeddingRecord] = {}
        cols = (embeddings.c.key, embeddings.c.vector, embeddings.c.n_tokens, embeddings.c.truncated)
        with self.engine.connect() as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                for key, vector, n_tokens, truncated in conn.execute(select(*cols).where(embeddings.c.key.in_(chunk))):
                    found[bytes(key)] = EmbeddingRecord(vector_from_bytes(bytes(vector)), n_tokens, bool(truncated))
        return found

    def existing(self, keys: Sequence[bytes]) -> set[bytes]:
        """Which of `keys` are stored (without reading the vectors)."""
        out: set[bytes] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                query = select(embeddings.c.key).where(embeddings.c.key.in_(chunk))
                out.update(bytes(k) for (k,) in conn.execute(query))
        return out

    def put_many(
        self, rows: Sequence[tuple[bytes, EmbeddingRecord]], fingerprint_id: str, renderer_versions: Sequence[str]
    ) -> dict[bytes, EmbeddingRecord]:
        """Insert rows that are not there yet; return the stored record for every key that already was.

        The caller serves the returned records instead of its own, so a key has one vector everywhere.
        """
        if not rows:
            return {}
        inserted: set[bytes] = set()
        with self.engine.begin() as conn:
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                values = [
                    {
                        "key": key,
                        "fingerprint_id": fingerprint_id,
                        "renderer_version": renderer_versions[start + i],
                        "dim": int(record.vector.shape[0]),
                        "n_tokens": record.n_tokens,
                        "truncated": record.truncated,
                        "vector": vector_to_bytes(record.vector),
                    }
                    for i, (key, record) in enumerate(chunk)
                ]
                stmt = dialect_insert(self._dialect, embeddings).values(values).on_conflict_do_nothing()
                inserted.update(bytes(k) for (k,) in conn.execute(stmt.returning(embeddings.c.key)))
        existing = [key for key, _ in rows if key not in inserted]
        return self.get_many(existing) if existing else {}

    def register_fingerprint(self, fingerprint_id: str, spec: dict) -> None:
        stmt = dialect_insert(self._dialect, fingerprints).values(
            id=fingerprint_id, spec=json.dumps(spec, sort_keys=True)
        )
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_nothing())

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    def schema_revision(self) -> str | None:
        """The alembic revision the database is at (None: never migrated)."""
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:  # no alembic_version table: an empty, unmigrated database
                conn.rollback()
                return None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM embeddings")).scalar())
