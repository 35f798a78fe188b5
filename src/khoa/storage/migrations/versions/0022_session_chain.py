"""transitive session tags kept with the session

``sts_sessions.transitive_tag_keys`` records which of a role session's tags were set as transitive
(AssumeRole's TransitiveTagKeys, JSON list): they pass to every later session of a role chain, and a
chained AssumeRole may not set them again. Sessions started before this revision have none, as Khoa
ignored the parameter until now.

Both directions alter the table in place (``recreate="never"``): SQLite adds a nullable column and
drops a column (3.35+) without copying the table.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sts_sessions", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("transitive_tag_keys", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sts_sessions", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("transitive_tag_keys")
