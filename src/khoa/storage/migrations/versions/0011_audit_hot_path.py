"""audit hot path: caller columns and a delivery cursor

Two per-event costs of the audit trail go. The alert rules judge every event by who made it, from
where, and whether it was an API call or Khoa's own work; reading those from the stored CloudTrail
JSON meant parsing every record, so the recorder now writes them as columns too (older rows keep
NULLs, and readers fall back to the record for them). Log file delivery marked every delivered row
with its file, an UPDATE that rewrote each row and an index entry; it now advances one cursor
(``audit_delivery``), so the ``log_file`` index goes and the column is only read for older rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_type", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("principal_arn", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("source_ip", sa.String(length=256), nullable=True))
        batch_op.drop_index("ix_audit_events_log_file")
    delivery = op.create_table(
        "audit_delivery",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # Delivered so far: everything below the oldest undelivered row (rows above it that were
    # already delivered keep their log_file, and delivery skips them).
    conn = op.get_bind()
    oldest_undelivered = conn.execute(
        sa.text("SELECT MIN(seq) FROM audit_events WHERE log_file IS NULL")
    ).scalar()
    newest = conn.execute(sa.text("SELECT MAX(seq) FROM audit_events")).scalar()
    delivered = int(oldest_undelivered) - 1 if oldest_undelivered is not None else int(newest or 0)
    op.bulk_insert(delivery, [{"name": "trail", "delivered_seq": delivered, "held": "[]", "updated_at": 0.0}])


def downgrade() -> None:
    conn = op.get_bind()
    delivered = conn.execute(
        sa.text("SELECT delivered_seq FROM audit_delivery WHERE name = 'trail'")
    ).scalar()
    op.drop_table("audit_delivery")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_log_file", ["log_file", "seq"], unique=False)
        batch_op.drop_column("source_ip")
        batch_op.drop_column("principal_arn")
        batch_op.drop_column("event_type")
    # The old scheme needs a file name on every delivered row; the names are not known any more.
    if delivered:
        conn.execute(
            sa.text(
                "UPDATE audit_events SET log_file = 'delivered-before-downgrade' WHERE seq <= :seq AND log_file IS NULL"
            ),
            {"seq": int(delivered)},
        )
