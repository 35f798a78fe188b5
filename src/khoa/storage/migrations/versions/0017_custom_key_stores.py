"""custom key stores

``kms_custom_key_stores``: KMS custom key stores of type EXTERNAL_KEY_STORE (the XKS proxy's endpoint,
path and SigV4 credential, its secret sealed by the barrier) and their connection state;
``kms_xks_keys``: the external key (XksKeyId) behind each KMS key in such a store.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kms_custom_key_stores",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("store_type", sa.String(length=32), nullable=False),
        sa.Column("connection_state", sa.String(length=16), nullable=False),
        sa.Column("connection_error_code", sa.String(length=64), nullable=True),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("uri_path", sa.String(length=128), nullable=False),
        sa.Column("connectivity", sa.String(length=32), nullable=False),
        sa.Column("access_key_id", sa.String(length=128), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("store_id"),
    )
    with op.batch_alter_table("kms_custom_key_stores", schema=None) as batch_op:
        batch_op.create_index("ix_kms_custom_key_stores_name", ["account_id", "region", "name"], unique=True)
    op.create_table(
        "kms_xks_keys",
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("xks_key_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["kms_keys.key_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("kms_xks_keys", schema=None) as batch_op:
        batch_op.create_index("ix_kms_xks_keys_external", ["store_id", "xks_key_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("kms_xks_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_kms_xks_keys_external")
    op.drop_table("kms_xks_keys")
    with op.batch_alter_table("kms_custom_key_stores", schema=None) as batch_op:
        batch_op.drop_index("ix_kms_custom_key_stores_name")
    op.drop_table("kms_custom_key_stores")
