"""secret tag list flag

``sm_secrets.tag_list`` records that a secret has a tag list: AWS leaves Tags out of DescribeSecret
and ListSecrets for a secret that never had a tag, and answers ``"Tags": []`` once every tag of a
secret has been removed. The flag is set when tags are first written and never cleared. Secrets with
tags when this revision runs get it; a secret whose tags were all removed before it reads as never
tagged.

Both directions alter the table in place (``recreate="never"``): on SQLite a batch operation that
copies sm_secrets drops the old table, and with foreign keys on that deletes every secret's versions,
labels and tags (ON DELETE CASCADE). SQLite adds a column with a constant default and drops a column
(3.35+) without copying.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sm_secrets", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("tag_list", sa.Boolean(), nullable=False, server_default=sa.false()))
    secrets = sa.table("sm_secrets", sa.column("secret_id", sa.String), sa.column("tag_list", sa.Boolean))
    tags = sa.table("sm_tags", sa.column("secret_id", sa.String))
    op.execute(
        secrets.update()
        .where(sa.exists().where(tags.c.secret_id == secrets.c.secret_id))
        .values(tag_list=sa.true())
    )


def downgrade() -> None:
    with op.batch_alter_table("sm_secrets", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("tag_list")
