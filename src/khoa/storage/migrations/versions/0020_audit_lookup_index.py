"""audit lookup index

LookupEvents returns an account's events in a Region newest first. The index on (account_id,
event_time) gave the events but not their order, so PostgreSQL read and sorted every event of the
account (or of the time range asked for) to return the newest fifty. The index now also holds the
Region and the sequence number: the events come out of it in (event_time, seq) order, so a page
reads only its own rows. Every query the old index served uses the new one's prefix.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 16:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_events_lookup", "audit_events", ["account_id", "event_time", "region", "seq"], unique=False
    )
    op.drop_index("ix_audit_events_account_time", table_name="audit_events")


def downgrade() -> None:
    op.create_index(
        "ix_audit_events_account_time", "audit_events", ["account_id", "event_time"], unique=False
    )
    op.drop_index("ix_audit_events_lookup", table_name="audit_events")
