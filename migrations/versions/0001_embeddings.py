"""embeddings and fingerprints

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embeddings",
        sa.Column("key", sa.LargeBinary(32), nullable=False, comment="sha256(fingerprint, renderer version, code)"),
        sa.Column("fingerprint_id", sa.String(64), nullable=False),
        sa.Column("renderer_version", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False, comment="raw little-endian float32"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_embeddings"),
    )
    op.create_index("ix_embeddings_fingerprint_id", "embeddings", ["fingerprint_id"])
    op.create_table(
        "fingerprints",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False, comment="JSON of the fingerprint fields"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fingerprints"),
    )


def downgrade() -> None:
    op.drop_table("fingerprints")
    op.drop_index("ix_embeddings_fingerprint_id", table_name="embeddings")
    op.drop_table("embeddings")
