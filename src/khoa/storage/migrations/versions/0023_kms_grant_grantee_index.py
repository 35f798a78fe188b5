"""KMS grants by key and grantee

When policies do not allow a call, KMS authorisation reads the caller's grants on the key. The only
index on grants was (key_id, created_at), so that read went through every grant on the key (AWS allows
50,000); the new index on (key_id, grantee_principal) finds the caller's own.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_kms_grants_grantee", "kms_grants", ["key_id", "grantee_principal"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_kms_grants_grantee", table_name="kms_grants")
