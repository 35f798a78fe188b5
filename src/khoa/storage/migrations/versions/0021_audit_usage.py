"""last use of keys, kept from the audit trail

GetKeyLastUsage and GetAccessKeyLastUsed searched the trail backwards for the key's newest event
(and `khoa review` read every event of its last 90 days for the principals that used access): for
a key never used, the whole trail (past the statement timeout on a large one), and retention took
the answer away. The leader now keeps the newest use of each key and principal in tables of their
own. Nothing is copied here: the leader starts from the first event still in the trail and catches
up in the background, and until it has, questions read the events it has not reached yet.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 19:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_key_usage",
        sa.Column("key_arn", sa.String(256), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("event_time", sa.Float, nullable=False),
        sa.Column("operation", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(128)),
    )
    op.create_table(
        "audit_access_key_usage",
        sa.Column("account_id", sa.String(12), primary_key=True),
        sa.Column("access_key_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("event_time", sa.Float, nullable=False),
        sa.Column("event_source", sa.String(64), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
    )
    op.create_table(
        "audit_principal_usage",
        sa.Column("principal_arn", sa.String(2048), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("event_time", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_principal_usage")
    op.drop_table("audit_access_key_usage")
    op.drop_table("audit_key_usage")
