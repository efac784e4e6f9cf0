"""Table definitions (SQLAlchemy Core). Alembic migrations own the real schema; keep both in step."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

embeddings = Table(
    "embeddings",
    metadata,
    Column("key", LargeBinary(32), primary_key=True, comment="sha256(fingerprint, renderer version, code)"),
    Column("fingerprint_id", String(64), nullable=False, index=True),
    Column("renderer_version", String(64), nullable=False),
    Column("dim", Integer, nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("truncated", Boolean, nullable=False),
    Column("vector", LargeBinary, nullable=False, comment="raw little-endian float32"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

fingerprints = Table(
    "fingerprints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("spec", Text, nullable=False, comment="JSON of the fingerprint fields"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
