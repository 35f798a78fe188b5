"""organizations

``org_organizations``, ``org_accounts``, ``org_policies``, ``org_attachments``: AWS Organizations and
its service control policies (services/organizations; evaluated by access/).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_organizations",
        sa.Column("org_id", sa.String(length=34), nullable=False),
        sa.Column("management_account_id", sa.String(length=12), nullable=False),
        sa.Column("root_id", sa.String(length=32), nullable=False),
        sa.Column("feature_set", sa.String(length=32), nullable=False),
        sa.Column("scp_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("org_id"),
        sa.UniqueConstraint("management_account_id"),
    )
    op.create_table(
        "org_accounts",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("org_id", sa.String(length=34), nullable=False),
        sa.Column("joined_method", sa.String(length=16), nullable=False),
        sa.Column("joined_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    with op.batch_alter_table("org_accounts", schema=None) as batch_op:
        batch_op.create_index("ix_org_accounts_org", ["org_id"], unique=False)
    op.create_table(
        "org_policies",
        sa.Column("org_id", sa.String(length=34), nullable=False),
        sa.Column("policy_id", sa.String(length=130), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("policy_type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("aws_managed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "policy_id"),
    )
    op.create_table(
        "org_attachments",
        sa.Column("org_id", sa.String(length=34), nullable=False),
        sa.Column("policy_id", sa.String(length=130), nullable=False),
        sa.Column("target_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "policy_id", "target_id"),
    )
    with op.batch_alter_table("org_attachments", schema=None) as batch_op:
        batch_op.create_index("ix_org_attachments_target", ["org_id", "target_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("org_attachments", schema=None) as batch_op:
        batch_op.drop_index("ix_org_attachments_target")
    op.drop_table("org_attachments")
    op.drop_table("org_policies")
    with op.batch_alter_table("org_accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_org_accounts_org")
    op.drop_table("org_accounts")
    op.drop_table("org_organizations")
