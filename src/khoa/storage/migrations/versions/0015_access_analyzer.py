"""access analyzer

``aa_analyzers``: IAM Access Analyzer's external-access analyzers; ``aa_findings``: their findings'
ids, statuses and details (recomputed from key policies, grants and secret policies when read).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aa_analyzers",
        sa.Column("arn", sa.String(length=1024), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("archive_rules", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("arn"),
    )
    with op.batch_alter_table("aa_analyzers", schema=None) as batch_op:
        batch_op.create_index("ux_aa_analyzers_name", ["account_id", "region", "name"], unique=True)
    op.create_table(
        "aa_findings",
        sa.Column("analyzer_arn", sa.String(length=1024), nullable=False),
        sa.Column("finding_id", sa.String(length=36), nullable=False),
        sa.Column("resource_arn", sa.String(length=2048), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("owner_account", sa.String(length=12), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("analyzed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("analyzer_arn", "finding_id"),
    )


def downgrade() -> None:
    op.drop_table("aa_findings")
    with op.batch_alter_table("aa_analyzers", schema=None) as batch_op:
        batch_op.drop_index("ux_aa_analyzers_name")
    op.drop_table("aa_analyzers")
