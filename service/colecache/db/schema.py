"""Table definitions (SQLAlchemy Core). Alembic migrations own the real schema; keep both in step."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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

studies = Table(
    "studies",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("space", String(32), nullable=False),
    Column("objective", String(100), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("render", Text, nullable=False, comment="JSON RenderOptions"),
    Column("embedder", Text, nullable=False, comment="JSON EmbedOptions"),
    Column("surrogate", Text, nullable=False, comment="JSON SurrogateConfig"),
    Column("owner", String(64), nullable=True, index=True, comment="sha256 of the API key that created it"),
    Column("version", Integer, nullable=False, server_default="0", comment="bumped by every committed change"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("candidates", Text, nullable=True, comment="JSON list of candidate specs (unlabelled)"),
)

observations = Table(
    "observations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", String(32), ForeignKey("studies.id", ondelete="CASCADE"), nullable=False, index=True),
    Column(
        "spec_key",
        String(200),
        nullable=False,
        comment="the architecture's class: isomorphic cells share it when rendering is canonical",
    ),
    Column(
        "measurement_key",
        String(64),
        nullable=False,
        comment="sha256 of the exact spec text and the metadata: one row per measurement",
    ),
    Column("spec", Text, nullable=False, comment="JSON of the spec as first posted"),
    Column("arch", Text, nullable=True),
    Column("value", Float, nullable=False),
    Column("meta", Text, nullable=True, comment="JSON metadata"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Isomorphic cells and repeated runs (distinct metadata) are separate rows; see studies/repository.py.
    UniqueConstraint("study_id", "measurement_key", name="uq_observations_study_id_measurement_key"),
)

# Prequential evaluation (studies/prequential.py): a prediction is kept only for an architecture the
# surrogate was not trained on (no cell of its class observed), the latest one per exact spec (isomorphic
# cells may be predicted differently: their structural encodings differ); observing that spec turns it
# into a pair with the observed value.
predictions = Table(
    "predictions",
    metadata,
    Column("study_id", String(32), ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True),
    Column("spec_hash", String(64), primary_key=True, comment="sha256 of the exact spec text (as in measurement keys)"),
    Column("surrogate_version", Integer, nullable=False, comment="study version the surrogate was fitted on"),
    Column("n_train", Integer, nullable=False, comment="observations the surrogate was fitted on"),
    Column("mean", Float, nullable=False),
    Column("std", Float, nullable=False),
    Column("predicted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

prequential_pairs = Table(
    "prequential_pairs",
    metadata,
    Column(
        "observation_id",
        Integer,
        ForeignKey("observations.id", ondelete="CASCADE"),
        primary_key=True,
        comment="the observation that settled the prediction (its value is the outcome)",
    ),
    Column("study_id", String(32), ForeignKey("studies.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("surrogate_version", Integer, nullable=False),
    Column("n_train", Integer, nullable=False),
    Column("mean", Float, nullable=False),
    Column("std", Float, nullable=False),
    Column("predicted_at", DateTime(timezone=True), nullable=False),
)
