"""prequential evaluation: each study's latest out-of-sample prediction per architecture, and the
(prediction, observed value) pairs formed when such an architecture is observed

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column(
            "spec_hash", sa.String(64), nullable=False, comment="sha256 of the exact spec text (as in measurement keys)"
        ),
        sa.Column(
            "surrogate_version",
            sa.Integer(),
            nullable=False,
            comment="study version the surrogate was fitted on",
        ),
        sa.Column("n_train", sa.Integer(), nullable=False, comment="observations the surrogate was fitted on"),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("study_id", "spec_hash", name="pk_predictions"),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name="fk_predictions_study_id_studies", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "prequential_pairs",
        sa.Column(
            "observation_id",
            sa.Integer(),
            nullable=False,
            comment="the observation that settled the prediction (its value is the outcome)",
        ),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("surrogate_version", sa.Integer(), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("observation_id", name="pk_prequential_pairs"),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name="fk_prequential_pairs_observation_id_observations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name="fk_prequential_pairs_study_id_studies", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_prequential_pairs_study_id", "prequential_pairs", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_prequential_pairs_study_id", table_name="prequential_pairs")
    op.drop_table("prequential_pairs")
    op.drop_table("predictions")
