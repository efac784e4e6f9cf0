"""studies and observations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("space", sa.String(32), nullable=False),
        sa.Column("objective", sa.String(100), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("render", sa.Text(), nullable=False, comment="JSON RenderOptions"),
        sa.Column("embedder", sa.Text(), nullable=False, comment="JSON EmbedOptions"),
        sa.Column("surrogate", sa.Text(), nullable=False, comment="JSON SurrogateConfig"),
        sa.Column("owner", sa.String(64), nullable=True, comment="sha256 of the API key that created it"),
        sa.Column(
            "version", sa.Integer(), server_default="0", nullable=False, comment="bumped by every committed change"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
    )
    op.create_index("ix_studies_owner", "studies", ["owner"])
    op.create_table(
        "observations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("spec_key", sa.String(200), nullable=False, comment="the spec's identity within the study"),
        sa.Column("spec", sa.Text(), nullable=False, comment="JSON of the spec as first posted"),
        sa.Column("arch", sa.Text(), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("meta", sa.Text(), nullable=True, comment="JSON metadata"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name="fk_observations_study_id_studies", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_observations"),
        sa.UniqueConstraint("study_id", "spec_key", name="uq_observations_study_id"),
    )
    op.create_index("ix_observations_study_id", "observations", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_observations_study_id", table_name="observations")
    op.drop_table("observations")
    op.drop_index("ix_studies_owner", table_name="studies")
    op.drop_table("studies")
