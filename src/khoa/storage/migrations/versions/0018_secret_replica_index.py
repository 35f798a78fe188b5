"""secret replica index

DescribeSecret and every write of a replicated secret look up the primary's replicas by
``primary_secret_id``; without an index that read every secret of the installation.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 09:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sm_secrets_primary", "sm_secrets", ["primary_secret_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sm_secrets_primary", table_name="sm_secrets")
