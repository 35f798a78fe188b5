"""leak fingerprints

``leak_fingerprints``: keyed fingerprints of the values Khoa holds, for khoa-leaks
CheckLeakedValues; ``leak_rate_buckets``: its per-principal rate limit. Rows for values stored before this revision are written by the
``leaks.fingerprint_backfill`` job (the fingerprint key is sealed by the root key, which a migration
does not have).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leak_fingerprints",
        sa.Column("row_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("resource_id", sa.String(length=128), nullable=False),
        sa.Column("resource_arn", sa.String(length=2048), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=True),
        sa.Column("field", sa.String(length=256), nullable=True),
        sa.Column("access_key_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("invalid_since", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("row_id"),
    )
    with op.batch_alter_table("leak_fingerprints", schema=None) as batch_op:
        batch_op.create_index("ix_leak_fingerprints_match", ["account_id", "fingerprint"], unique=False)
        batch_op.create_index("ix_leak_fingerprints_resource", ["resource_id", "version_id"], unique=False)
    op.create_table(
        "leak_rate_buckets",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("leak_rate_buckets")
    with op.batch_alter_table("leak_fingerprints", schema=None) as batch_op:
        batch_op.drop_index("ix_leak_fingerprints_resource")
        batch_op.drop_index("ix_leak_fingerprints_match")
    op.drop_table("leak_fingerprints")
