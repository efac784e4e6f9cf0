"""observations: one row per measurement (exact spec text + metadata), no longer one per isomorphism class

Before, (study, spec_key) was unique, so a second cell of an isomorphism class (or a second seed of
one cell) could not be stored with its own measured value. Now (study, measurement_key) is unique,
where measurement_key = sha256 of the exact spec text and the metadata; spec_key stays as the class.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_SPEC_KEY_COMMENT = "the spec's identity within the study"
SPEC_KEY_COMMENT = "the architecture's class: isomorphic cells share it when rendering is canonical"
MEASUREMENT_KEY_COMMENT = "sha256 of the exact spec text and the metadata: one row per measurement"

_rows = sa.table(
    "observations",
    sa.column("id", sa.Integer),
    sa.column("study_id", sa.String),
    sa.column("spec_key", sa.String),
    sa.column("arch", sa.Text),
    sa.column("meta", sa.Text),
    sa.column("measurement_key", sa.String),
)


def _measurement_key(spec_text: str, meta: dict | None) -> str:
    """Frozen copy of colecache.studies.repository.measurement_key as of this revision (a test checks they agree)."""
    fields = (spec_text, "" if not meta else json.dumps(meta, sort_keys=True, separators=(",", ":")))
    digest = hashlib.sha256()
    for field in fields:
        data = field.encode()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("observations") as batch:
        batch.add_column(sa.Column("measurement_key", sa.String(64), nullable=True, comment=MEASUREMENT_KEY_COMMENT))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_rows.c.id, _rows.c.spec_key, _rows.c.arch, _rows.c.meta)).all()
    # Every stored row was the only one of its class: its exact text is `arch` (a code spec's is its spec_key).
    keys = [
        {"row_id": r.id, "key": _measurement_key(r.arch or r.spec_key, json.loads(r.meta) if r.meta else None)}
        for r in rows
    ]
    statement = sa.update(_rows).where(_rows.c.id == sa.bindparam("row_id")).values(measurement_key=sa.bindparam("key"))
    for start in range(0, len(keys), 1000):
        conn.execute(statement, keys[start : start + 1000])
    with op.batch_alter_table("observations") as batch:
        batch.alter_column(
            "measurement_key", existing_type=sa.String(64), nullable=False, existing_comment=MEASUREMENT_KEY_COMMENT
        )
        batch.alter_column(
            "spec_key",
            existing_type=sa.String(200),
            existing_nullable=False,
            comment=SPEC_KEY_COMMENT,
            existing_comment=OLD_SPEC_KEY_COMMENT,
        )
        batch.drop_constraint("uq_observations_study_id", type_="unique")
        batch.create_unique_constraint("uq_observations_study_id_measurement_key", ["study_id", "measurement_key"])


def downgrade() -> None:
    """Back to one row per class: of several rows of one class, only the first (lowest id) survives."""
    conn = op.get_bind()
    first = sa.select(sa.func.min(_rows.c.id)).group_by(_rows.c.study_id, _rows.c.spec_key)
    conn.execute(sa.delete(_rows).where(_rows.c.id.not_in(first)))
    with op.batch_alter_table("observations") as batch:
        batch.drop_constraint("uq_observations_study_id_measurement_key", type_="unique")
        batch.create_unique_constraint("uq_observations_study_id", ["study_id", "spec_key"])
        batch.alter_column(
            "spec_key",
            existing_type=sa.String(200),
            existing_nullable=False,
            comment=OLD_SPEC_KEY_COMMENT,
            existing_comment=SPEC_KEY_COMMENT,
        )
        batch.drop_column("measurement_key")
